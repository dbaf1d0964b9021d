"""Failures of Triton gRPC calls: classified by ``grpc.StatusCode`` (never by message text), retried, counted, logged.

``grpc`` is imported inside the functions: importing the client stays light.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from facialattr import defaults
from facialattr.errors import InferenceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long the scorer retries a request (seconds; backoff doubles per attempt, jittered)."""

    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    # How long one chunk may keep retrying (server down, overloaded); None retries forever.
    give_up_after_s: float | None = defaults.GIVE_UP_AFTER_S
    # Attempts of a chunk the server failed (INTERNAL, an unhealthy stub, a malformed answer) before
    # its rows are written as retryable server errors: with the backoff, about 5-10 s of retrying.
    max_server_error_attempts: int = 10

    def backoff_s(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based): doubling from ``initial_backoff_s``, capped, jittered to 50-100 %."""
        base = min(self.max_backoff_s, self.initial_backoff_s * (2 ** min(attempt, 20)))
        return base * random.uniform(0.5, 1.0)  # jitter: clients that failed together don't retry together


@dataclass
class ScorerStats:
    """Counters for progress summaries and benchmarks (read them, don't write them)."""

    requests: int = 0
    images: int = 0
    retries: int = 0
    server_error_retries: int = 0  # retries after a server-side failure (INTERNAL, ...), not a busy or down server
    failed_chunks: int = 0  # chunks whose future failed after every retry
    failovers: int = 0
    request_seconds: float = 0.0
    errors_by_status: dict[str, int] = field(default_factory=dict)


class EndpointError(InferenceError):
    """A call to one endpoint failed; ``code`` is the gRPC status (None when there was none)."""

    def __init__(self, message: str, *, code: Any = None) -> None:
        super().__init__(message)
        self.code = code


@functools.cache
def codes_by_name() -> dict[str, Any]:
    """str(code) -> code for every grpc.StatusCode (tritonclient reports statuses as those strings)."""
    import grpc

    return {str(code): code for code in grpc.StatusCode}


def status_code(error: BaseException | None):
    """The ``grpc.StatusCode`` an error carries (tritonclient's exceptions or :class:`EndpointError`), else None."""
    if isinstance(error, EndpointError):
        return error.code
    status = error.status() if error is not None and hasattr(error, "status") else None
    return codes_by_name().get(status) if status else None


class RateLimitedLog:
    """Warnings about the same key at most once per ``interval_s``; suppressed repeats are counted."""

    def __init__(self, interval_s: float = 30.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, message: str, *args: Any) -> None:
        """Log ``message % args`` as a warning unless ``key`` was logged within ``interval_s``; then count it instead."""
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self.interval_s) < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            repeats = self._suppressed.pop(key, 0)
        suffix = f" ({repeats} similar warnings in the last {self.interval_s:.0f} s not shown)" if repeats else ""
        log.warning(message + suffix, *args)


def busy_codes() -> frozenset:
    """The server is there but slow or shedding load: fewer requests in flight, retry until give-up."""
    import grpc

    return frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED})


def is_unavailable(code) -> bool:
    """UNAVAILABLE: the endpoint is down, restarting or its queue is full; back it off, try another."""
    import grpc

    return code == grpc.StatusCode.UNAVAILABLE


def server_answered(code) -> bool:
    """An error a gRPC server sent (a model not ready yet, ...), not a failed connection.

    NOT_FOUND does not count: Triton answers it for a model name it does not serve, and the
    servers this project starts (model control "none") load every model before they listen,
    so waiting longer would not make the model appear.
    """
    import grpc

    return code is not None and code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                             grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
                                             grpc.StatusCode.NOT_FOUND)


def is_not_found(code) -> bool:
    """NOT_FOUND: the server answered that it serves no model of that name."""
    import grpc

    return code == grpc.StatusCode.NOT_FOUND


def unavailable_error(message: str) -> EndpointError:
    """An UNAVAILABLE failure made on the client side (an endpoint that cannot be used now)."""
    import grpc

    return EndpointError(message, code=grpc.StatusCode.UNAVAILABLE)


def first_line(error) -> str:
    """An error's first line, at most 300 characters, for logs and rows."""
    return str(error).splitlines()[0][:300] if str(error) else type(error).__name__


def final_error(error, url: str, *, attempts: int = 1) -> InferenceError:
    """The error a job fails with: the server's own message, the endpoint and the attempts made."""
    if isinstance(error, InferenceError) and attempts <= 1:
        return error
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    return InferenceError(f"{url}: inference failed{tries}: {first_line(error)}")
