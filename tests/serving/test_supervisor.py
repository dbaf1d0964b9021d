"""The supervisor keeps the real embedded Triton serving: killed, hung or with a dead stub, it comes back.

Every test runs the real tritonserver under a real Supervisor and hurts it the way
issue 12 found it hurt (kill -9 of the server, of one Python-backend stub, SIGSTOP),
then talks gRPC to what came back, on the same ports.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from testsupport import SERVE_BANNER, make_tiny_repository

from facialattr import MODEL_NAME
from facialattr.serving.embedded import ServerConfig
from facialattr.serving.supervisor import Supervisor, SupervisorSettings, group_rss_bytes, stub_problem, stub_processes

# Quick enough to keep each test short, with the production logic unchanged.
FAST = SupervisorSettings(check_interval_s=0.2, probe_interval_s=0.5, probe_timeout_s=1.0, probe_failures_to_restart=2,
                          stop_timeout_s=2.0, backoff_initial_s=0.2, backoff_max_s=1.0)


def _config(repo: Path) -> ServerConfig:
    """Automatic ports: the first start picks them, every restart reuses them."""
    return ServerConfig(repo, grpc_port=0, metrics_port=0)


def _infer_one(url: str) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    inp = grpcclient.InferInput("images", [1, 64, 64, 3], "UINT8")
    inp.set_data_from_numpy(np.full((1, 64, 64, 3), 127, np.uint8))
    return client.infer(MODEL_NAME, [inp], client_timeout=30).as_numpy("probabilities")


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _restarts(port: int) -> dict[str, float]:
    """The supervisor's counters, parsed by Prometheus's own parser (the format must be valid)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = _get(port, "/metrics")
    assert status == 200
    return {sample.labels.get("reason", sample.name): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
            if family.name == "facialattr_triton_restarts"}


class ReadinessRecorder:
    """Polls the supervisor's /ready (and Triton's own readiness) every 50 ms in a thread."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.port, self.grpc_url = supervisor.endpoint_port, supervisor.config.grpc_url
        self.samples: list[tuple[int, bool]] = []  # (supervisor /ready status, Triton's own readiness)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ReadinessRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _triton_ready(self) -> bool:
        try:
            return grpcclient.InferenceServerClient(self.grpc_url).is_server_ready(client_timeout=1)
        except Exception:  # noqa: BLE001 - refused, reset or timed out: not ready
            return False

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append((_get(self.port, "/ready")[0], self._triton_ready()))

    def saw_a_restart_window(self) -> bool:
        """Ready, then not ready (supervisor 503, Triton unreachable), then ready again."""
        states = [code == 200 for code, _ in self.samples]
        if not states or not states[0] or False not in states:
            return False
        return True in states[states.index(False):]


def _leftovers(pgids: list[int], prefixes: list[str], workdirs: list[Path]) -> list[str]:
    found = []
    for pgid in pgids:
        try:
            os.killpg(pgid, 0)
            found.append(f"process group {pgid}")
        except ProcessLookupError:
            pass
    found += [str(p) for prefix in prefixes for p in Path("/dev/shm").glob(f"{prefix}*")]
    return found + [str(w) for w in workdirs if w.exists()]


def _generation(supervisor: Supervisor) -> tuple[int, str, Path]:
    server = supervisor.server
    return server.pid, server.shm_prefix, server.log_path.parent


def _wait_restarted(supervisor: Supervisor, old_pid: int, *, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        server = supervisor.server
        if supervisor.ready and server is not None and server.pid != old_pid:
            return
        time.sleep(0.1)
    raise TimeoutError(f"no restarted server within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_tiny_repository(tmp_path_factory.mktemp("supervised"))


@pytest.mark.parametrize(("victim", "reason"), [("tritonserver", "exited"), ("stub", "stub")])
def test_killed_server_or_stub_is_restarted_on_the_same_ports_counted_and_not_ready_meanwhile(repo, victim, reason):
    with Supervisor(_config(repo), settings=FAST, endpoint_port=0) as supervisor:
        url, ports = supervisor.config.grpc_url, (supervisor.config.grpc_port, supervisor.config.metrics_port)
        expected = _infer_one(url)
        first = _generation(supervisor)
        stubs = stub_processes(first[0])
        assert stubs and stub_problem(first[0], len(stubs)) is None
        with ReadinessRecorder(supervisor) as readiness:
            time.sleep(0.3)
            os.kill(first[0] if victim == "tritonserver" else stubs[0][0], signal.SIGKILL)
            _wait_restarted(supervisor, first[0])
            time.sleep(0.3)
        second = _generation(supervisor)
        assert (supervisor.config.grpc_port, supervisor.config.metrics_port) == ports
        np.testing.assert_array_equal(_infer_one(url), expected)
        assert _restarts(supervisor.endpoint_port) == {"exited": 0, "stub": 0, "probe": 0, "memory": 0} | {reason: 1}
        assert readiness.saw_a_restart_window(), readiness.samples
        # Plain Triton clients see the restart too: its own readiness was false within that window.
        assert any(not triton for code, triton in readiness.samples if code == 503), readiness.samples
        assert not _leftovers([first[0]], [first[1]], [first[2]]), "the replaced server left something behind"
    assert not _leftovers([first[0], second[0]], [first[1], second[1]], [first[2], second[2]])


def test_a_hung_server_fails_its_probes_and_is_replaced(repo):
    """SIGSTOP: the process lives and holds its ports but answers nothing; only the inference probe notices."""
    with Supervisor(_config(repo), settings=FAST, endpoint_port=0) as supervisor:
        pid = supervisor.server.pid
        os.killpg(pid, signal.SIGSTOP)
        _wait_restarted(supervisor, pid)
        assert supervisor.restarts == {"exited": 0, "stub": 0, "probe": 1, "memory": 0}
        assert _infer_one(supervisor.config.grpc_url).shape == (1, 40)
        assert not _leftovers([pid], [], [])


def test_the_port_stays_held_while_the_server_is_down_and_the_server_returns_on_it(repo):
    import socket

    with Supervisor(_config(repo), settings=FAST, endpoint_port=0) as supervisor:
        pid, grpc_port = supervisor.server.pid, supervisor.config.grpc_port
        os.kill(pid, signal.SIGKILL)
        # A squatter (this user, as a stray process would bind) tries all through the restart.
        taken, deadline = [], time.monotonic() + 120
        while not (supervisor.ready and supervisor.server is not None and supervisor.server.pid != pid):
            assert time.monotonic() < deadline, "the server did not come back"
            squatter = socket.socket()
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                squatter.bind(("127.0.0.1", grpc_port))
                taken.append(grpc_port)
            except OSError:
                pass
            finally:
                squatter.close()
            time.sleep(0.01)
        assert taken == [], "the port was free during the restart"
        assert supervisor.config.grpc_port == grpc_port
        assert _infer_one(f"127.0.0.1:{grpc_port}").shape == (1, 40)
        assert supervisor.restarts["exited"] == 1


def _post_gzip_body(http_url: str, *, expanded_bytes: int) -> int | str:
    """POST a gzip body of about 1 MB that expands to ``expanded_bytes`` zeros; the HTTP status or the error's name."""
    import zlib

    compressor, zeros = zlib.compressobj(9, zlib.DEFLATED, 31), bytes(1 << 20)  # wbits 31: gzip framing
    body = b"".join([*(compressor.compress(zeros) for _ in range(expanded_bytes >> 20)), compressor.flush()])
    request = urllib.request.Request(f"{http_url}/v2/models/{MODEL_NAME}/infer", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:  # the server was replaced before it answered
        return type(exc).__name__


def test_a_server_over_its_memory_bound_is_replaced_and_its_memory_returns_under_the_bound(repo):
    """Triton 2.51 keeps what a gzip HTTP body expanded to (SECURITY.md); a memory bound turns that into a restart."""
    bound = 1 << 30
    config = dataclasses.replace(_config(repo), allow_http=True, http_port=0)
    with Supervisor(config, settings=dataclasses.replace(FAST, max_rss_bytes=bound), endpoint_port=0) as supervisor:
        pid = supervisor.server.pid
        assert group_rss_bytes(pid) < bound // 2, "the idle server alone is near the bound: the test proves nothing"
        answer = _post_gzip_body(supervisor.config.http_url, expanded_bytes=bound)
        _wait_restarted(supervisor, pid)
        assert supervisor.restarts == {"exited": 0, "stub": 0, "probe": 0, "memory": 1}, answer
        assert group_rss_bytes(supervisor.server.pid) < bound // 2
        assert _infer_one(supervisor.config.grpc_url).shape == (1, 40)


def _serve_command(repo: Path) -> tuple[subprocess.Popen, int, int]:
    """``facialattr serve`` on automatic ports; returns the process, its gRPC port and supervisor port (from its banner)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "facialattr.app.cli", "serve", "--model-repository", str(repo),
         "--grpc-port", "0", "--metrics-port", "0", "--supervisor-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    banner = proc.stdout.readline()
    while "Triton serving" not in banner and proc.poll() is None:
        banner = proc.stdout.readline()
    grpc = SERVE_BANNER.search(banner)
    supervisor = re.search(r"supervisor http://127\.0\.0\.1:(\d+)/metrics", banner)
    assert grpc and supervisor, f"no gRPC port or supervisor endpoint in the banner: {banner!r}"
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    return proc, int(grpc["grpc_port"]), int(supervisor.group(1))


def _tritonserver(grpc_port: int) -> tuple[int, str, Path]:
    """(pid, shm prefix, work folder) of the tritonserver serving ``grpc_port``, read from its command line."""
    pid = int(subprocess.run(["pgrep", "-f", f"grpc-port={grpc_port}"], capture_output=True, text=True).stdout.split()[0])
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    prefix = next(a.split("shm-region-prefix-name=")[1] for a in argv if "shm-region-prefix-name=" in a)
    workdir = Path(next(a.split("=", 1)[1] for a in argv if a.startswith("--model-repository="))).parent
    return pid, prefix, workdir


def test_serve_command_restarts_a_killed_server_and_sigterm_leaves_nothing_behind(repo):
    proc, grpc, supervisor_port = _serve_command(repo)
    try:
        first = _tritonserver(grpc)
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while _restarts(supervisor_port)["exited"] < 1 or _get(supervisor_port, "/ready")[0] != 200:
            assert time.monotonic() < deadline and proc.poll() is None, "serve did not bring the server back"
            time.sleep(0.2)
        assert _infer_one(f"127.0.0.1:{grpc}").shape == (1, 40)
        second = _tritonserver(grpc)
        assert second[0] != first[0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    generations = list(zip(first, second, strict=True))
    assert not _leftovers(*generations)


class _DyingServer:
    """A server whose process is still exiting for ``exits_after_polls`` polls, then has exited."""

    def __init__(self, exits_after_polls: int | None) -> None:
        self.polls, self.exits_after_polls = 0, exits_after_polls

    def is_running(self) -> bool:
        self.polls += 1
        return self.exits_after_polls is None or self.polls <= self.exits_after_polls

    def wait(self) -> int:
        return -9


@pytest.mark.parametrize(("exits_after_polls", "reason"), [(3, "exited"), (None, "stub")])
def test_lost_stubs_are_blamed_on_the_server_when_it_is_exiting_too(repo, exits_after_polls, reason):
    from facialattr.serving.supervisor import Problem

    supervisor = Supervisor(_config(repo))
    found = supervisor._exited_or(_DyingServer(exits_after_polls), Problem("stub", "2 of 2 stubs are gone"), grace_s=0.5)
    assert found.reason == reason
