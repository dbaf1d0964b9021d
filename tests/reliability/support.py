"""Helpers for the reliability tests: private servers, a deliberately slow model, process facts.

Loaded by ``conftest.py`` as the module ``reliability_support`` (the tests run with
``--import-mode=importlib``, so sibling modules are not on ``sys.path``).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from testsupport import free_ports, wait_until  # noqa: F401 - wait_until is used through support

from facialattr import repository, triton_config
from facialattr.contract import ModelContract, Preprocessing
from facialattr.serving.embedded import EmbeddedTriton, ServerConfig

SIZE_HW = (64, 64)

# Appended to the derived Python-backend model: every execute() first sleeps, so a
# test can hold requests in the server's queue without burning the 2 CI cores.
_SLOW_SUFFIX = '''

import time as _time

_facialattr_fast_execute = TritonPythonModel.execute


def _facialattr_slow_execute(self, requests):
    _time.sleep({delay_s!r})
    return _facialattr_fast_execute(self, requests)


TritonPythonModel.execute = _facialattr_slow_execute
'''


def make_repository(root: Path, *, max_batch_size: int = 16, max_queue_size: int = 512) -> Path:
    """The tiny real model (tests/conftest.py's interface, 64x64) with a chosen batch and queue bound."""
    from facialattr.export.tiny_model import build_tiny_onnx

    root.mkdir(parents=True, exist_ok=True)
    onnx_path = build_tiny_onnx(root / "tiny.onnx", size_hw=SIZE_HW)
    contract = ModelContract(preprocessing=Preprocessing(size_hw=SIZE_HW))
    config = triton_config.ModelConfig(
        max_batch_size=max_batch_size,
        dynamic_batching=triton_config.DynamicBatching(max_queue_size=max_queue_size),
        # One instance: the overload tests count what one running batch plus the queue admits.
        instance_group=(triton_config.InstanceGroup(count=1),),
        intra_op_thread_count=1,
    )
    repository.write_model(root / "repo", onnx_path, contract, model_config=config)
    return root / "repo"


class SlowEmbeddedTriton(EmbeddedTriton):
    """The real embedded server whose model sleeps ``delay_s`` before each batch."""

    def __init__(self, config: ServerConfig, *, delay_s: float) -> None:
        super().__init__(config)
        self.delay_s = delay_s

    def _derive_model(self, entry):
        derived = super()._derive_model(entry)
        for model_py in derived.glob("*/model.py"):
            model_py.write_text(model_py.read_text() + _SLOW_SUFFIX.format(delay_s=self.delay_s))
        return derived


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int

    @classmethod
    def pick(cls) -> Ports:
        """Ports free now, only for a test that must name them before its server runs (a race: prefer AUTOMATIC)."""
        return cls(*free_ports(3))

    @classmethod
    def of(cls, server: EmbeddedTriton) -> Ports:
        """The ports a started server got (to start another on the same ports after it died)."""
        return cls(server.config.http_port, server.config.grpc_port, server.config.metrics_port)

    def server_config(self, repo: Path, *, host: str = "127.0.0.1", allow_http: bool = False) -> ServerConfig:
        return ServerConfig(repo, host=host, http_port=self.http, grpc_port=self.grpc, metrics_port=self.metrics,
                            allow_http=allow_http)

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc}"


AUTOMATIC = Ports(0, 0, 0)  # the launcher picks free ports itself, retrying if one is taken before it binds


def start(repo: Path, ports: Ports = AUTOMATIC, *, delay_s: float = 0.0, host: str = "127.0.0.1",
          allow_http: bool = False) -> EmbeddedTriton:
    """A started real server (slowed by ``delay_s`` per batch); ``server.config`` holds the ports it got."""
    config = ports.server_config(repo, host=host, allow_http=allow_http)
    server = SlowEmbeddedTriton(config, delay_s=delay_s) if delay_s else EmbeddedTriton(config)
    return server.start()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed while we looked
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def _decode_address(hex_address: str) -> str:
    if len(hex_address) == 8:  # IPv4, little-endian
        return socket.inet_ntop(socket.AF_INET, bytes.fromhex(hex_address)[::-1])
    # IPv6: four little-endian 32-bit words
    words = bytes.fromhex(hex_address)
    address = ipaddress.IPv6Address(b"".join(words[i:i + 4][::-1] for i in range(0, 16, 4)))
    # gRPC listens on an IPv6 socket bound to the v4-mapped form of the IPv4 address asked for.
    return str(address.ipv4_mapped or address)


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that process ``pid`` holds."""
    inodes = _socket_inodes(pid)
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(f"/proc/{pid}/net/{Path(table).name}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A = TCP_LISTEN
                address, port = local.split(":")
                found.add((_decode_address(address), int(port, 16)))
    return found


def success_count(url: str, model: str = "facial_attributes") -> int:
    """Images the server has inferred successfully so far (its own statistics)."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(model, as_json=True)
    return sum(int(m.get("inference_count", 0)) for m in stats.get("model_stats", []))


def facialattr_command(*args: str | os.PathLike) -> list[str]:
    """``facialattr ARGS`` run by this interpreter (no reliance on PATH)."""
    return [sys.executable, "-m", "facialattr.app.cli", *map(os.fsdecode, args)]


def run_facialattr(*args: str | os.PathLike, timeout_s: float = 300.0) -> subprocess.CompletedProcess:
    return subprocess.run(facialattr_command(*args), capture_output=True, text=True, timeout=timeout_s, check=False)


def random_uint8(shape: tuple[int, ...], *, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc, no psutil needed)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process exited while we looked
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


class Periodic:
    """Calls ``tick()`` every ``interval_s`` from a daemon thread while used as a context manager."""

    def __init__(self, *, interval_s: float, name: str) -> None:
        import threading

        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def tick(self) -> None:
        raise NotImplementedError


def read_rows(out: Path) -> list[dict]:
    """The rows of a ``score`` output in any of its formats (CSV values as strings)."""
    from facialattr.client.rows import read_rows

    return list(read_rows(out))


class FifoWatchdog(Periodic):
    """Unblocks any reader of the given FIFOs and remembers that someone opened one.

    A scorer that opens a FIFO named ``x.jpg`` blocks forever; in a test that would
    hang CI. Opening the FIFO for writing succeeds only while a reader waits on
    it, so the watchdog notices the mistake, lets the reader see end-of-file, and
    the test fails with a clear message instead of hanging.
    """

    def __init__(self, fifos: list[bytes], *, interval_s: float = 0.1) -> None:
        super().__init__(interval_s=interval_s, name="fifo-watchdog")
        self.fifos = fifos
        self.opened: set[bytes] = set()

    def tick(self) -> None:
        for fifo in self.fifos:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: nobody is reading; ENOENT: gone
                continue
            self.opened.add(fifo)
            os.close(fd)


def in_process_model(repo: Path):
    """The repository's ONNX file run by onnxruntime in this process: batch -> probabilities."""
    from facialattr.onnx_runtime import cpu_session

    entry = repository.load_model(repo)
    session = cpu_session(entry.onnx_path())
    return lambda batch: session.run([entry.model_config.output_name], {entry.model_config.input_name: batch})[0]
