"""The supervisor's /ready and /metrics endpoint stays bounded whatever local clients do (issue 27 item 4).

A real SupervisorEndpoint on a real socket, in front of a Supervisor that was never started
(not ready, no server): no tritonserver is needed to see how it treats its connections.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from facialattr.serving.embedded import ServerConfig
from facialattr.serving.endpoint import SupervisorEndpoint
from facialattr.serving.supervisor import PROBE_RESULTS, Supervisor, classify_probe_error

TIMEOUT_S = 0.5
MAX_CONNECTIONS = 4


@pytest.fixture
def endpoint():
    supervisor = Supervisor(ServerConfig(Path("never-started")))
    endpoint = SupervisorEndpoint(supervisor, "127.0.0.1", 0, max_connections=MAX_CONNECTIONS, timeout_s=TIMEOUT_S)
    endpoint.start()
    yield endpoint
    endpoint.close()


def _request(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(raw)
        return b"".join(iter(lambda: s.recv(65536), b""))


def _closed_by_server(s: socket.socket) -> bool:
    s.settimeout(0.05)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:  # reset
        return True


@pytest.mark.parametrize(("raw", "status", "body"), [
    (b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n", b"503", b"not ready"),
    (b"GET /metrics HTTP/1.0\r\n\r\n", b"200", b'facialattr_triton_restarts_total{reason="probe"} 0'),
    (b"GET /nothing HTTP/1.1\r\n\r\n", b"404", b"try /metrics or /ready"),
    (b"POST /ready HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"405", b"only GET"),
    (b"GET /" + b"x" * (SupervisorEndpoint.MAX_REQUEST_BYTES - 5), b"431", b"too large"),
], ids=["ready", "metrics", "unknown path", "not GET", "endless request line"])
def test_each_request_gets_one_answer_and_the_connection_is_closed(endpoint, raw, status, body):
    answer = _request(endpoint.port, raw)  # returns only once the server closed the connection
    assert answer.startswith(b"HTTP/1.1 " + status) and body in answer, answer


def test_probe_results_are_counted_on_the_metrics_endpoint(endpoint):
    answer = _request(endpoint.port, b"GET /metrics HTTP/1.1\r\n\r\n").decode()
    for result in PROBE_RESULTS:
        assert f'facialattr_triton_probes_total{{result="{result}"}} 0' in answer


def test_idle_connections_beyond_the_limit_close_the_oldest_and_the_rest_close_after_the_timeout(endpoint):
    idle = [socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) for _ in range(3 * MAX_CONNECTIONS)]
    try:
        time.sleep(0.1)
        assert b"503" in _request(endpoint.port, b"GET /ready HTTP/1.1\r\n\r\n")  # answered though all slots were taken
        evicted = [_closed_by_server(s) for s in idle]
        assert all(evicted[:2 * MAX_CONNECTIONS]), evicted  # the oldest made room for the newer ones
        time.sleep(TIMEOUT_S + 0.5)
        assert all(_closed_by_server(s) for s in idle)
        assert endpoint.dropped >= 3 * MAX_CONNECTIONS - 1
    finally:
        for s in idle:
            s.close()


def test_a_request_trickled_slower_than_the_timeout_is_dropped_unanswered(endpoint):
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) as s:
        deadline = time.monotonic() + 3 * TIMEOUT_S
        closed = False
        for byte in b"GET /ready HTTP/1.1\r\nX-Slow: " + b"y" * 100:
            try:
                s.send(bytes([byte]))
            except OSError:
                closed = True
                break
            if _closed_by_server(s) or time.monotonic() > deadline:
                closed = _closed_by_server(s)
                break
            time.sleep(0.05)
        assert closed, "a trickled request kept its connection past the timeout"


# (status, message) -> what one probe found; "answered" errors are someone else's doing.
PROBE_ERRORS = {
    "another client's negative batch merged with the probe": (
        "StatusCode.INTERNAL", "[StatusCode.INTERNAL] batch size 65 for 'facial_attributes_0_0', max allowed is 16",
        "answered"),
    "no answer within the deadline": ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", "failed"),
    "no connection": ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", "failed"),
    "full queue": ("StatusCode.UNAVAILABLE", "Exceeds maximum queue size", "busy"),
    "dead stub": ("StatusCode.INTERNAL", "Stub process 'facial_attributes_0_0' is not healthy.", "unhealthy"),
    "the model itself failed": ("StatusCode.INTERNAL", "inference failed: bad allocation", "failed"),
    "a batch size within the limit is no one else's doing": (
        "StatusCode.INTERNAL", "batch size 16 for 'facial_attributes_0_0', max allowed is 16", "failed"),
}


@pytest.mark.parametrize("case", list(PROBE_ERRORS))
def test_a_probe_error_counts_as_a_failure_only_when_no_other_request_caused_it(case):
    status, message, result = PROBE_ERRORS[case]
    assert classify_probe_error(status, message) == result
