"""Test helpers shared by all test packages (importable: pytest's pythonpath includes tests/)."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from facialattr import repository
from facialattr.contract import ModelContract
from facialattr.serving.embedded import start_on_free_ports as start_server  # noqa: F401 - the tests' name for it

DOCS = Path(__file__).resolve().parents[1] / "docs"


def doc_block(doc: str, language: str, number: int = 0) -> str:
    """The ``number``-th fenced ``language`` block of ``docs/<doc>``, for a test that runs what the docs show."""
    blocks = re.findall(rf"```{language}\n(.*?)```", (DOCS / doc).read_text(), flags=re.S)
    return blocks[number]


def free_ports(n: int) -> list[int]:
    """Ports nobody listens on right now: for a client that must meet a dead address.

    Never use it for a server to bind later (another process can take the port in between):
    give the server port 0 and read the ports it got from ``server.config``.
    """
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


@contextlib.contextmanager
def listening_port():
    """A port another process holds with a listening socket, for as long as the context lasts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def make_tiny_repository(root: Path, *, size_hw=(64, 64), max_batch_size: int = 16, **contract_fields) -> Path:
    """A model repository holding the tiny ONNX model under the served name and contract."""
    from facialattr.contract import Preprocessing
    from facialattr.export.tiny_model import build_tiny_onnx
    from facialattr.triton_config import ModelConfig

    root.mkdir(parents=True, exist_ok=True)
    onnx_path = build_tiny_onnx(root / "tiny.onnx", size_hw=size_hw)
    contract = ModelContract(preprocessing=Preprocessing(size_hw=size_hw), **contract_fields)
    repository.write_model(root / "repo", onnx_path, contract, model_config=ModelConfig(max_batch_size=max_batch_size))
    return root / "repo"


SERVE_BANNER = re.compile(r"Triton serving .* gRPC (?P<grpc_url>[\w.]+:(?P<grpc_port>\d+))")


def start_serve_command(repo: Path, *args: str) -> tuple[subprocess.Popen, int]:
    """``facialattr serve`` on automatic ports, once its banner says it serves; returns it and its gRPC port."""
    command = [sys.executable, "-m", "facialattr.app.cli", "serve", "--model-repository", str(repo),
               "--grpc-port", "0", "--metrics-port", "0", "--supervisor-port", "0", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if match := SERVE_BANNER.search(line):
            return proc, int(match["grpc_port"])
    proc.wait()
    raise RuntimeError(f"facialattr serve exited with {proc.returncode} before serving:\n{''.join(lines[-30:])}")


def signal_when(process: subprocess.Popen, ready, signum: int, *, what: str, timeout_s: float = 120.0,
                exit_timeout_s: float = 60.0) -> int:
    """Send ``signum`` to ``process`` once ``ready()`` holds; its exit status. Fails if it ends before
    ``what`` is reached; never leaves it running."""
    try:
        wait_until(lambda: process.poll() is not None or ready(), timeout_s=timeout_s, interval_s=0.02, what=what)
        assert process.poll() is None, f"the process ended before {what}"
        process.send_signal(signum)
        return process.wait(timeout=exit_timeout_s)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_until(predicate, *, timeout_s: float, interval_s: float = 0.1, what: str = "condition") -> None:
    """Poll ``predicate`` until true; a generous deadline guards against hangs, not speed."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s:.0f} s")
        time.sleep(interval_s)
