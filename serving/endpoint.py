"""The supervisor's own small HTTP endpoint: ``/ready`` and ``/metrics`` while tritonserver restarts."""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Protocol

from facialattr.errors import PortInUseError

log = logging.getLogger("facialattr.serving.supervisor")


class Supervisor(Protocol):
    """What the endpoint reads of serving.supervisor.Supervisor (named here: that module imports this one)."""

    ready: bool
    restarts: dict[str, int]
    probes: dict[str, int]
    start_failures: int


def answers_ready(url: str, *, timeout_s: float = 2.0) -> bool:
    """Whether the ``/ready`` at ``url`` answers 200 now (what a container healthcheck or a test polls)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


class SupervisorEndpoint:
    """``GET /metrics`` (Prometheus text format) and ``GET /ready`` (200 or 503) of a Supervisor.

    Its own small HTTP server, because tritonserver's metrics endpoint goes away exactly
    while the server restarts. It only reads counters; it controls nothing.

    Any local user can connect, so it is bounded: one thread and a selector serve every
    connection; at most ``max_connections`` are open (a new one closes the oldest); each gets
    ``timeout_s`` from its connection to its whole request (a request line and a few headers)
    and one answer, then it is closed. http.server's ThreadingHTTPServer keeps a thread and a
    descriptor per idle connection for ever: 1,100 idle connections used up ``facialattr
    serve``'s file descriptors and killed it (issue 27).
    """

    MAX_REQUEST_BYTES = 8192

    def __init__(self, supervisor: Supervisor, host: str, port: int, *, max_connections: int = 64,
                 timeout_s: float = 2.0) -> None:
        self._supervisor = supervisor
        self.max_connections, self.timeout_s = max_connections, timeout_s
        try:
            self._listener = socket.create_server((host, port), backlog=128)
        except OSError as exc:
            raise PortInUseError(f"supervisor port {port} on {host} is already taken ({exc.strerror}); "
                                 "pick another with --supervisor-port") from exc
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        # connection -> (deadline, bytes received so far); insertion order is age order
        self._connections: dict[socket.socket, tuple[float, bytes]] = {}
        self.dropped = 0  # connections closed without an answer: past their deadline, or the oldest when full
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="supervisor-endpoint", daemon=True)

    @property
    def port(self) -> int:
        """The TCP port it listens on (the one picked when it was created with port 0)."""
        return self._listener.getsockname()[1]

    def start(self) -> None:
        """Serve requests from a daemon thread; returns at once."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for connection in list(self._connections):
            self._close(connection)
        self._selector.close()
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    self._receive(key.fileobj)
            now = time.monotonic()
            for connection, (deadline, _) in list(self._connections.items()):
                if now >= deadline:
                    self._drop(connection)

    def _accept(self) -> None:
        try:
            connection, _ = self._listener.accept()
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE) and self._connections:
                self._drop(next(iter(self._connections)))  # the kernel keeps the new one queued meanwhile
            else:
                log.warning("supervisor endpoint: accept failed: %s", exc)
                self._stop.wait(0.05)
            return
        if len(self._connections) >= self.max_connections:
            self._drop(next(iter(self._connections)))
        connection.setblocking(False)
        self._connections[connection] = (time.monotonic() + self.timeout_s, b"")
        self._selector.register(connection, selectors.EVENT_READ)
        self._receive(connection)  # most clients send their request with the connection

    def _receive(self, connection: socket.socket) -> None:
        if connection not in self._connections:  # dropped earlier in the same round of events
            return
        deadline, received = self._connections[connection]
        try:
            chunk = connection.recv(self.MAX_REQUEST_BYTES)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(connection)
            return
        received += chunk
        head, complete, _ = received.partition(b"\r\n\r\n")
        if complete:
            self._answer(connection, *self._respond(head))
        elif len(received) >= self.MAX_REQUEST_BYTES:
            self._answer(connection, 431, "request header too large\n", "text/plain")
        else:
            self._connections[connection] = (deadline, received)

    def _respond(self, head: bytes) -> tuple[int, str, str]:
        """(status, body, content type) for the request whose request line and headers are ``head``."""
        method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        path = rest.partition(" ")[0]
        if method != "GET":
            return 405, "only GET is served\n", "text/plain"
        if path == "/metrics":
            return 200, render_metrics(self._supervisor), "text/plain; version=0.0.4"
        if path == "/ready":
            return (200, "ready\n", "text/plain") if self._supervisor.ready else (503, "not ready\n", "text/plain")
        return 404, "not found: try /metrics or /ready\n", "text/plain"

    def _answer(self, connection: socket.socket, status: int, body: str, content_type: str) -> None:
        data = body.encode()
        head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n")
        try:
            # The send buffer of a fresh connection holds an answer of a few kB: one send, never a
            # wait. A client that reads nothing loses its answer, not one of our threads.
            connection.send(head.encode() + data)
        except OSError:
            pass
        log.debug("supervisor endpoint: %d for %r", status, head)
        self._close(connection)

    def _drop(self, connection: socket.socket) -> None:
        self.dropped += 1
        self._close(connection)

    def _close(self, connection: socket.socket) -> None:
        self._connections.pop(connection, None)
        try:
            self._selector.unregister(connection)
        except (KeyError, ValueError):
            pass
        connection.close()


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}


def render_metrics(supervisor: Supervisor) -> str:
    """The supervisor's counters in the Prometheus text exposition format."""
    lines = [
        "# HELP facialattr_triton_restarts_total Times the supervisor restarted tritonserver, by reason.",
        "# TYPE facialattr_triton_restarts_total counter",
        *(f'facialattr_triton_restarts_total{{reason="{reason}"}} {count}' for reason, count in supervisor.restarts.items()),
        "# HELP facialattr_triton_start_failures_total Restart attempts whose start failed (retried with backoff).",
        "# TYPE facialattr_triton_start_failures_total counter",
        f"facialattr_triton_start_failures_total {supervisor.start_failures}",
        "# HELP facialattr_triton_probes_total Inference probes by result (answered: an error another request caused).",
        "# TYPE facialattr_triton_probes_total counter",
        *(f'facialattr_triton_probes_total{{result="{result}"}} {count}' for result, count in supervisor.probes.items()),
        "# HELP facialattr_triton_ready 1 while tritonserver passes the supervisor's checks, 0 while it (re)starts.",
        "# TYPE facialattr_triton_ready gauge",
        f"facialattr_triton_ready {int(supervisor.ready)}",
    ]
    return "\n".join(lines) + "\n"
