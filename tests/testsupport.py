"""Test helpers shared by all test packages (importable: pytest's pythonpath includes tests/)."""

from __future__ import annotations

import socket
from pathlib import Path

from facialattr import repository
from facialattr.contract import ModelContract


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def make_tiny_repository(root: Path, *, size_hw=(64, 64), max_batch_size: int = 16, **contract_fields) -> Path:
    """A model repository holding the tiny ONNX model under the served name and contract."""
    from facialattr.export.tiny_model import build_tiny_onnx

    from facialattr.contract import Preprocessing

    root.mkdir(parents=True, exist_ok=True)
    onnx_path = build_tiny_onnx(root / "tiny.onnx", size_hw=size_hw)
    contract = ModelContract(preprocessing=Preprocessing(size_hw=size_hw), max_batch_size=max_batch_size, **contract_fields)
    repository.write_model(root / "repo", onnx_path, contract)
    return root / "repo"


def start_server(repo: Path):
    from facialattr.serving.embedded import EmbeddedTriton, ServerConfig

    http, grpc, metrics = free_ports(3)
    return EmbeddedTriton(ServerConfig(repo, http_port=http, grpc_port=grpc, metrics_port=metrics)).start()
