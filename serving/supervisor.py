"""Keep the embedded Triton serving: restart it when it dies, when a stub dies, or when it stops answering.

tritonserver 2.51 can die on its own (SIGSEGV, ``boost::interprocess::lock_exception``
aborts; docs/RELIABILITY.md), and a Python-backend stub killed under it is never
replaced while the server keeps answering "ready". The :class:`Supervisor` drives
:class:`~facialattr.serving.embedded.EmbeddedTriton` through its public API and
watches three things: the server process, its stub processes (from ``/proc``) and a
real one-image inference; optionally also their resident memory. On a problem it marks itself not ready, stops what is left
of the server (process group, ``/dev/shm`` regions, work folder) and starts a fresh
one on the same ports, with exponential backoff when restarts come in quick
succession. Restarts are counted in the log and on a small Prometheus endpoint.

Other local users reach the same ports, so nothing they can send may cause a restart
(issue 27): the probe connects afresh each time (a server that accepts no new connection
is caught, one whose old connections still work is not mistaken for healthy), an error
*answer* that another client's malformed request caused counts as an answer, not as a
failure, and the memory bound acts only on memory held for a while, not on one request
in flight. The endpoint serves a bounded number of connections from one thread.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facialattr import MODEL_NAME, repository
from facialattr.errors import FacialAttrError, ServerError
from facialattr.serving.embedded import PORT_SETTINGS, EmbeddedTriton, ServerConfig
from facialattr.serving.endpoint import SupervisorEndpoint
from facialattr.serving.portguard import PortGuard
from facialattr.triton_config import ServedModel

log = logging.getLogger(__name__)

# /proc/<pid>/stat truncates a command name to 15 characters.
_STUB_COMM = "triton_python_backend_stub"[:15]
RESTART_REASONS = ("exited", "stub", "probe", "memory")
# What one probe found: "answered" is an error answer another request caused (alive, not a failure).
PROBE_RESULTS = ("ok", "busy", "answered", "failed", "unhealthy")
# The smallest memory bound accepted, as a multiple of what the started server holds idle:
# below it the server would be replaced under ordinary load, or at once and forever.
MIN_MEMORY_BOUND_FACTOR = 1.25


@dataclass(frozen=True)
class SupervisorSettings:
    """How often the watchdog looks, how patient it is, how it backs off (all seconds)."""

    check_interval_s: float = 0.5  # server process and stub processes: cheap, /proc only
    probe_interval_s: float = 2.0  # one real inference of one image
    # A busy server queues the probe behind real work: generous, and several misses in a row.
    probe_timeout_s: float = 10.0
    probe_failures_to_restart: int = 3
    # Graceful drain allowed to a server being replaced: short, since one with a dead stub
    # ignores SIGTERM, and clients retry whatever it did not finish.
    stop_timeout_s: float = 2.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    # A server that stayed healthy this long resets the backoff: its next crash restarts at once.
    stable_after_s: float = 60.0
    # Resident memory of tritonserver and its stubs together above which it is replaced (None: no
    # bound). Triton 2.51 keeps what a gzip HTTP body expanded to (SECURITY.md).
    max_rss_bytes: int | None = None
    # The memory must stay above the bound this long: one large request in flight holds its
    # message (up to 2 GiB in 2.51) only until it is answered, and is no reason for a restart.
    memory_window_s: float = 10.0


@dataclass(frozen=True)
class Problem:
    """Why a server must be replaced: ``reason`` one of RESTART_REASONS, ``detail`` a line for the log."""

    reason: str  # one of RESTART_REASONS
    detail: str


def _processes():
    """(pid, command name, the /proc/<pid>/stat fields after the name) of every process."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited while we looked
            continue
        yield int(stat.parent.name), text[text.find("(") + 1:text.rfind(")")], text[text.rfind(")") + 2:].split()


def stub_processes(server_pid: int) -> list[tuple[int, str]]:
    """(pid, state letter) of each Python-backend stub whose parent is ``server_pid``.

    A stub killed under tritonserver stays a zombie (state ``Z``): the server never reaps it.
    """
    return [(pid, fields[0]) for pid, comm, fields in _processes() if int(fields[1]) == server_pid and comm == _STUB_COMM]


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of every process in process group ``pgid`` (tritonserver and its stubs), in bytes."""
    pages = sum(int(fields[21]) for _, _, fields in _processes() if int(fields[2]) == pgid)
    return pages * os.sysconf("SC_PAGE_SIZE")


def stub_problem(server_pid: int, expected: int) -> str | None:
    """Why the stubs of ``server_pid`` are unhealthy (dead, zombie, missing), or None."""
    stubs = stub_processes(server_pid)
    dead = [pid for pid, state in stubs if state in ("Z", "X")]
    if dead:
        return f"Python-backend stub(s) {dead} died"
    if len(stubs) < expected:
        return f"{expected - len(stubs)} of {expected} Python-backend stubs are gone"
    return None


# The Python backend's refusal of a merged batch whose size someone's malformed request (a
# negative batch dimension, which 2.51 admits) pushed past max_batch_size. A one-image probe
# cannot make a batch too large by itself: seeing this, the server answered; another request failed it.
_POISONED_BATCH = re.compile(r"batch size (\d+) for '[^']*', max allowed is (\d+)")


def classify_probe_error(status: str | None, message: str) -> str:
    """The PROBE_RESULTS entry for a probe that got ``status`` (e.g. "StatusCode.INTERNAL") and ``message``.

    "failed" means no answer (deadline passed, no connection) or an error the probe itself caused.
    """
    if "not healthy" in message:  # the Python backend's own verdict on a stub
        return "unhealthy"
    if "queue" in message.lower():  # "Exceeds maximum queue size": overloaded, answering
        return "busy"
    poisoned = _POISONED_BATCH.search(message)
    if status == "StatusCode.INTERNAL" and poisoned and int(poisoned[1]) > int(poisoned[2]):
        return "answered"
    return "failed"


class InferenceProbe:
    """One real inference of one black image against the served model, through a fresh connection, with a deadline.

    A fresh connection each time: a server whose file descriptors are used up by idle
    connections still answers on connections it already holds but accepts no new one, and
    that is what its clients meet.
    """

    def __init__(self, config: ServerConfig, served: ServedModel, *, timeout_s: float) -> None:
        import tritonclient.grpc as grpcclient

        size_hw = served.contract.preprocessing.size_hw
        self._url = config.grpc_url
        self._input = grpcclient.InferInput(served.config.input_name, [1, *size_hw, 3], "UINT8")
        self._input.set_data_from_numpy(np.zeros((1, *size_hw, 3), np.uint8))
        self._output = grpcclient.InferRequestedOutput(served.config.output_name)
        self.timeout_s = timeout_s

    def check(self) -> tuple[str, str]:
        """(one of PROBE_RESULTS, detail)."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        # A channel of its own subchannel pool: gRPC would otherwise reuse a live connection.
        client = grpcclient.InferenceServerClient(self._url, channel_args=[("grpc.use_local_subchannel_pool", 1)])
        try:
            client.infer(MODEL_NAME, [self._input], outputs=[self._output], client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            return classify_probe_error(exc.status(), str(exc)), str(exc)
        finally:
            client.close()
        return "ok", ""


class Supervisor:
    """Runs an EmbeddedTriton and replaces it whenever it dies or turns unhealthy.

    ``run()`` blocks (the ``serve`` command runs it in the main thread); as a context
    manager it runs in a thread of its own that lives as long as the servers it starts
    (the servers die with the thread that started them: ``PR_SET_PDEATHSIG``, serving/embedded.py).
    ``endpoint_port`` (None: no endpoint; 0: any free port) serves ``/metrics`` and
    ``/ready`` on the server's host.
    """

    def __init__(self, config: ServerConfig, *, settings: SupervisorSettings | None = None,
                 server_factory: Callable[[ServerConfig], EmbeddedTriton] = EmbeddedTriton,
                 endpoint_port: int | None = None) -> None:
        self.config = config
        self.settings = settings or SupervisorSettings()
        self._factory = server_factory
        self.restarts = dict.fromkeys(RESTART_REASONS, 0)
        self.probes = dict.fromkeys(PROBE_RESULTS, 0)
        self.start_failures = 0
        # Resident memory of the first server after one inference: what a memory bound must exceed.
        self.idle_rss_bytes: int | None = None
        self.server: EmbeddedTriton | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._first_start_done = threading.Event()
        self._first_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._quick_restarts = 0  # restarts since the last stable period: the backoff exponent
        self._served: ServedModel | None = None
        self._endpoint = SupervisorEndpoint(self, config.host, endpoint_port) if endpoint_port is not None else None

    @property
    def ready(self) -> bool:
        """True while a started server passes every check; False while starting or restarting."""
        return self._ready.is_set()

    @property
    def endpoint_port(self) -> int | None:
        """The port of the ``/metrics`` and ``/ready`` endpoint, or None when it has none."""
        return self._endpoint.port if self._endpoint else None

    @property
    def restarts_total(self) -> int:
        """Restarts so far, whatever the reason (``restarts`` counts them by reason)."""
        return sum(self.restarts.values())

    def run(self, *, on_first_ready: Callable[[Supervisor], None] | None = None) -> None:
        """Start the server, then watch and restart it until ``stop()`` or KeyboardInterrupt.

        The first start is not retried: its errors (a broken repository, a taken port)
        are the user's to fix and propagate (:class:`ServerError` and friends).
        """
        if self._endpoint:
            self._endpoint.start()
        guard = PortGuard(self.config.host)
        try:
            self.config = self._hold_ports(guard)
            self.server = self._factory(self.config).start()
            # Restarts reuse the ports this start got, so clients reconnect to the same URLs.
            self.config = self.server.config
            # Read once: a repository edited on disk later must not stop the watching (a restart
            # that cannot load it fails and is retried instead).
            self._served = repository.load_model(self.config.model_repository).served
            self._check_memory_bound()
            self._first_start_done.set()
            if on_first_ready:
                on_first_ready(self)
            self._supervise()
        finally:
            self._ready.clear()
            self._stop_server(timeout_s=30.0)
            guard.close()
            if self._endpoint:
                self._endpoint.close()

    def _hold_ports(self, guard: PortGuard) -> ServerConfig:
        """The config with its client-facing ports held by ``guard`` until ``run()`` ends (0: a free port).

        Between a dead tritonserver and the next, no other local user can bind them and answer the
        clients as an impostor (serving/portguard.py); the metrics port is not held (2.51 cannot share it).
        """
        cfg = self.config
        if not (cfg.reuse_grpc_port and (cfg.reuse_http_port or not cfg.allow_http)):
            log.warning("reuse_grpc_port/reuse_http_port off: the ports are free during restarts, and another "
                        "local user could take them")
            return cfg
        held = {"grpc_port": guard.hold(cfg.grpc_port, chosen_with=PORT_SETTINGS["grpc_port"])}
        if cfg.allow_http:
            held["http_port"] = guard.hold(cfg.http_port, chosen_with=PORT_SETTINGS["http_port"])
        return dataclasses.replace(cfg, **held, guarded_ports=tuple(held.values()))

    def stop(self) -> None:
        """Ask ``run()`` to stop the server and return; joins the thread of a context manager."""
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Supervisor:
        self._thread = threading.Thread(target=self._run_in_thread, name="triton-supervisor")
        self._thread.start()
        self._first_start_done.wait()
        if self._first_error is not None:
            self._thread.join()
            raise self._first_error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, *, timeout_s: float) -> bool:
        """Block until the server is ready (True) or ``timeout_s`` passed (False)."""
        return self._ready.wait(timeout_s)

    def _run_in_thread(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that called __enter__
            self._first_error = exc
            self._first_start_done.set()

    def _check_memory_bound(self) -> None:
        """Refuse a memory bound the started server would cross idle (it would be replaced for ever)."""
        bound = self.settings.max_rss_bytes
        if not bound:
            return
        InferenceProbe(self.config, self._served, timeout_s=self.settings.probe_timeout_s).check()  # warm, as in use
        self.idle_rss_bytes = group_rss_bytes(self.server.pid)
        log.info("tritonserver and its stubs hold %.0f MiB idle; memory bound %.0f MiB",
                 self.idle_rss_bytes / 2**20, bound / 2**20)
        if bound < MIN_MEMORY_BOUND_FACTOR * self.idle_rss_bytes:
            least_mib = -(-MIN_MEMORY_BOUND_FACTOR * self.idle_rss_bytes // 2**20)
            raise ServerError(f"the memory bound of {bound / 2**20:.0f} MiB (--max-memory-mb) is too low: this server "
                              f"holds {self.idle_rss_bytes / 2**20:.0f} MiB idle, with its models loaded, and would be "
                              f"restarted under ordinary load or for ever; give at least {least_mib:.0f} "
                              f"({MIN_MEMORY_BOUND_FACTOR:g} times that), or 0 for no bound")

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            self._ready.set()
            problem = self._watch(self.server)
            if problem is None:  # asked to stop
                return
            self._restart(problem)

    def _watch(self, server: EmbeddedTriton) -> Problem | None:
        """Check until something is wrong (the Problem) or a stop is asked for (None)."""
        s = self.settings
        expected_stubs = len(stub_processes(server.pid))
        probe = InferenceProbe(server.config, self._served, timeout_s=s.probe_timeout_s)
        started, next_probe = time.monotonic(), time.monotonic() + s.probe_interval_s
        failures, last_verdict = 0, "ok"
        over_bound_since: float | None = None
        while not self._stopping.wait(s.check_interval_s):
            if not server.is_running():
                return Problem("exited", f"tritonserver exited with code {server.wait()}")
            detail = stub_problem(server.pid, expected_stubs)
            if detail:
                return self._exited_or(server, Problem("stub", detail))
            if s.max_rss_bytes:
                rss, now = group_rss_bytes(server.pid), time.monotonic()
                over_bound_since = (over_bound_since or now) if rss > s.max_rss_bytes else None
                if over_bound_since is not None and now - over_bound_since >= s.memory_window_s:
                    return Problem("memory", f"tritonserver and its stubs have used more than the bound of "
                                             f"{s.max_rss_bytes / 2**20:.0f} MiB for {s.memory_window_s:g} s "
                                             f"(now {rss / 2**20:.0f} MiB)")
            if time.monotonic() < next_probe:
                continue
            verdict, detail = probe.check()
            self.probes[verdict] += 1
            next_probe = time.monotonic() + s.probe_interval_s
            failures = failures + 1 if verdict == "failed" else 0
            if verdict == "unhealthy":  # the Python backend's own word on a stub: a stub problem
                return self._exited_or(server, Problem("stub", f"inference probe: {detail}"))
            if failures >= s.probe_failures_to_restart:
                return Problem("probe", f"inference probe failed {failures} times in a row, each through a fresh "
                                        f"connection with a {s.probe_timeout_s:g} s deadline: {detail}")
            if verdict == "failed":
                log.warning("inference probe failed (%d of %d before a restart): %s",
                            failures, s.probe_failures_to_restart, detail)
            elif verdict == "answered" and last_verdict != "answered":
                log.warning("inference probe got an error that another client's request caused; the server "
                            "answered, so it is not restarted: %s", detail)
            last_verdict = verdict
            if time.monotonic() - started >= s.stable_after_s:
                self._quick_restarts = 0
        return None

    def _exited_or(self, server: EmbeddedTriton, problem: Problem, *, grace_s: float = 2.0) -> Problem:
        """``problem``, unless the server itself is dying: a killed tritonserver takes longer to exit
        than its stubs, whose loss would otherwise be blamed (and counted) first."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not server.is_running():
                return Problem("exited", f"tritonserver exited with code {server.wait()} ({problem.detail})")
            time.sleep(0.05)
        return problem

    def _restart(self, problem: Problem) -> None:
        self._ready.clear()
        self.restarts[problem.reason] += 1
        log.warning("restarting tritonserver (restart %d, reason %s): %s\n--- its log tail ---\n%s",
                    self.restarts_total, problem.reason, problem.detail, self.server.log_tail(40) if self.server else "")
        self._stop_server(timeout_s=self.settings.stop_timeout_s)
        while not self._stopping.is_set():
            delay_s = self._backoff_s()
            self._quick_restarts += 1
            if delay_s and self._stopping.wait(delay_s):
                return
            try:
                self.server = self._factory(self.config).start()
            except (FacialAttrError, OSError) as exc:  # a port taken meanwhile, a crashed start, no descriptor left
                self.start_failures += 1
                log.error("restart of tritonserver failed (%d failed starts so far): %s", self.start_failures, exc)
                continue
            log.info("tritonserver is back (restart %d): gRPC %s", self.restarts_total, self.config.grpc_url)
            return

    def _backoff_s(self) -> float:
        if self._quick_restarts == 0:
            return 0.0
        s = self.settings
        return min(s.backoff_initial_s * 2 ** (self._quick_restarts - 1), s.backoff_max_s)

    def _stop_server(self, *, timeout_s: float) -> None:
        """Stop the current server; a stub that outlived it is killed too (no orphan, no shm region)."""
        server, self.server = self.server, None
        if server is None:
            return
        pgid = server.pid
        try:
            server.stop(timeout_s=timeout_s)
        finally:
            # If that stop was interrupted (a second Ctrl-C), nothing of the group may survive,
            # and a second stop() still removes the shm regions and the work folder.
            if pgid is not None:
                _kill_group(pgid)
            server.stop(timeout_s=0)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
