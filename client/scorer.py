"""A Triton gRPC client for the facial-attribute model: contract from the server, batching, retries, failover.

Requests go out with ``async_infer`` from one dispatcher thread, at most
``max_in_flight`` at a time over all endpoints, so decoding, transfer and
inference overlap. Each chunk of a batch is one job that keeps its result slot
until it succeeds or gives up: a retried chunk can neither be lost nor counted
twice. UNAVAILABLE marks an endpoint down for a backoff and the job moves to
another endpoint; RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED back the job off.
While every endpoint is down jobs keep retrying until ``give_up_after_s``.
Any other failure (INTERNAL from a batch someone else poisoned, an unhealthy
stub, a malformed answer) is the server's, never the image's: the job is
retried ``max_server_error_attempts`` times before its future fails.
Failures are classified by ``grpc.StatusCode``, never by message text.

With ``server_decode`` the scorer sends encoded files instead of pixels, to the
pixel model's bytes twin (:func:`facialattr.encoded.encoded_model_name`), whose
config it reads and checks against the pixel model's contract; an image the server
cannot decode comes back as that row's error (:class:`EncodedAnswer`), not as a
failed request.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facialattr import MODEL_NAME, defaults, encoded
from facialattr.client.connect import check_encoded_twin, wait_for_contract
from facialattr.client.endpoints import MAX_MESSAGE_BYTES, Endpoint, open_endpoints, read_contract
from facialattr.client.failures import (  # noqa: F401  (RetryPolicy, ScorerStats: part of this module's API)
    RateLimitedLog,
    RetryPolicy,
    ScorerStats,
    busy_codes,
    final_error,
    first_line,
    is_unavailable,
    status_code,
    unavailable_error,
)
from facialattr.client.settings import ScorerSettings
from facialattr.contract import ModelContract
from facialattr.decoding import DEFAULT_MAX_FILE_BYTES
from facialattr.errors import ContractError, InferenceError, InputError, ServerUnavailableError
from facialattr.triton_config import ModelConfig, ServedModel

log = logging.getLogger(__name__)


# gRPC framing and the request's other fields, beside the tensor bytes.
_MESSAGE_OVERHEAD_BYTES = 65536


@dataclass(frozen=True)
class EncodedAnswer:
    """The bytes model's answer for N encoded images: probabilities, and per row the server's decode error.

    ``error_kinds[i]`` is "" for a scored row, else a :class:`~facialattr.decoding.DecodeError` kind
    ("corrupt", "too_large", ...) with ``errors[i]`` its reason; such a row's probabilities are zeros.
    """

    probabilities: np.ndarray
    error_kinds: tuple[str, ...]
    errors: tuple[str, ...]

    @classmethod
    def concatenate(cls, parts: Sequence[EncodedAnswer]) -> EncodedAnswer:
        """The answers of consecutive chunks as one, rows in order."""
        if len(parts) == 1:
            return parts[0]
        return cls(np.concatenate([p.probabilities for p in parts]),
                   tuple(k for p in parts for k in p.error_kinds), tuple(e for p in parts for e in p.errors))


@dataclass(eq=False)
class _Job:
    inputs: list
    size: int
    future: concurrent.futures.Future
    first_try: float
    attempts: int = 0
    last_endpoint: Endpoint | None = None


class Scorer:
    """Scores prepared uint8 batches on one or more Triton gRPC endpoints."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        model_name: str = MODEL_NAME,
        model_version: str = "",
        timeout_s: float = defaults.REQUEST_TIMEOUT_S,
        max_in_flight: int = defaults.MAX_IN_FLIGHT,
        retry: RetryPolicy | None = None,
        connect_timeout_s: float | None = None,
        answered_wait_s: float | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        server_decode: bool = False,
    ) -> None:
        """Connect to ``urls`` and read the model contract they serve.

        ``connect_timeout_s`` bounds the wait while no endpoint has answered as a gRPC server.
        None (the default) waits ``defaults.CONNECT_TIMEOUT_S``, but gives up after ``defaults.REFUSED_GRACE_S``
        when every endpoint refuses the TCP connection: nothing listens there, so the answer is already
        in, and waiting 10 s for a server nobody started helps no one (the grace is short rather than
        zero so a listener that is binding just then is not judged on one early look). A number waits
        that long in every case (``math.inf``: forever): pass one to wait for a server that is
        starting, whose port stays closed until its models are loaded. Once an endpoint answered (e.g. a server still
        loading its model) the wait is extended to ``answered_wait_s`` (default: the retry policy's
        ``give_up_after_s``). Raises :class:`ServerUnavailableError` with a plain explanation when the
        wait ends, :class:`InputError` for malformed URLs or settings, :class:`ContractError` when
        endpoints serve different contracts. ``server_decode`` sends file bytes to the model's bytes twin
        (:meth:`infer_async` then takes a list of encoded images); ContractError when a server has no such twin,
        or its contract differs from the pixel model's.
        """
        if max_in_flight < 1:
            raise InputError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if timeout_s <= 0:
            raise InputError(f"timeout_s must be > 0, got {timeout_s}")
        self.model_name, self.model_version = model_name, model_version
        self.timeout_s, self.max_in_flight = timeout_s, max_in_flight
        self.retry = retry or RetryPolicy()
        self.stats = ScorerStats()
        self._warnings = RateLimitedLog()
        self.server_decode = server_decode
        # The model requests go to: the pixel model, or its bytes twin (named by the rule in facialattr.encoded).
        self.request_model_name = encoded.encoded_model_name(model_name) if server_decode else model_name
        if server_decode:
            # One image per request at the server's file-size limit must still fit in a message.
            max_message_bytes = max(max_message_bytes, DEFAULT_MAX_FILE_BYTES + _MESSAGE_OVERHEAD_BYTES)
        self.max_message_bytes = max_message_bytes
        self._endpoints = open_endpoints(urls, max_message_bytes=max_message_bytes)
        if answered_wait_s is None:
            answered_wait_s = self.retry.give_up_after_s
        try:
            # Triton's config (tensor names, max_batch_size) and the contract, as every endpoint serves them.
            self.served: ServedModel = wait_for_contract(
                self._endpoints, model_name, model_version, call_timeout_s=timeout_s, retry=self.retry,
                connect_timeout_s=connect_timeout_s, answered_wait_s=answered_wait_s, warnings=self._warnings)
            self.encoded_config = (check_encoded_twin(self._endpoints, self.served, model_name, model_version,
                                                      timeout_s=timeout_s) if server_decode else None)
        except BaseException:
            for endpoint in self._endpoints:
                endpoint.close()
            raise
        self.contract: ModelContract = self.served.contract
        self.model_config: ModelConfig = self.served.config
        h, w = self.contract.preprocessing.size_hw
        # Requests fill up to the server's max_batch_size, or to the largest preferred_batch_size
        # it declares (on 2 CPU cores MobileNetV2 runs faster at 8-16 than at 64), and never
        # exceed the channel's message limit (leaving room for framing).
        preferred = [e.preferred_batch for e in self._endpoints if e.verified and e.preferred_batch]
        server_batch = min([self.model_config.max_batch_size or 1, *preferred])
        if self.encoded_config is not None:
            # Encoded requests are also cut by their bytes (infer_async); the count is the twin's batch limit.
            self.chunk_size = max(1, min(server_batch, self.encoded_config.max_batch_size))
        else:
            self.chunk_size = max(1, min(server_batch, (max_message_bytes - _MESSAGE_OVERHEAD_BYTES) // (h * w * 3)))
        self._cond = threading.Condition()
        self._ready: list[tuple[float, int, _Job]] = []
        self._seq = itertools.count()
        self._in_flight = 0
        # Congestion window (AIMD): halved when the server times out or sheds load, grown back
        # by one request per window of successes, so retries don't pile onto a slow server.
        self._window = float(max_in_flight)
        self._closed = False
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="facialattr-scorer", daemon=True)
        self._dispatcher.start()

    @classmethod
    def from_settings(cls, settings: ScorerSettings, **tuning) -> Scorer:
        """The scorer ``settings`` describe: the one way commands and engines open one.

        ``give_up_after_s`` sets both the retry deadline and the wait for a server that answered but
        is still loading. ``tuning`` passes what no command sets (``model_version``, ``max_message_bytes``).
        """
        return cls(settings.urls, model_name=settings.model_name, timeout_s=settings.timeout_s,
                   max_in_flight=settings.max_in_flight, retry=RetryPolicy(give_up_after_s=settings.give_up_after_s),
                   connect_timeout_s=settings.connect_timeout_s, server_decode=settings.server_decode, **tuning)

    @property
    def urls(self) -> list[str]:
        """The endpoints' ``HOST:PORT`` URLs, in the order given (normalised, without duplicates)."""
        return [e.url for e in self._endpoints]

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def infer(self, batch: np.ndarray | Sequence[bytes]) -> np.ndarray | EncodedAnswer:
        """uint8 [N, h, w, 3] prepared images -> fp32 [N, num_attributes] probabilities.

        With ``server_decode``: N encoded images (the files' bytes) -> :class:`EncodedAnswer`.
        """
        return self.infer_async(batch).result()

    def request_size(self, requested: int | None = None) -> int:
        """Images per request: ``requested``, or (None) as many as one request may carry (:attr:`chunk_size`).

        The one place the batch size is decided. A larger ``requested`` is capped, with a warning:
        :meth:`infer_async` would split it into requests of :attr:`chunk_size` anyway.
        """
        if requested is None:
            return self.chunk_size
        if requested < 1:
            raise InputError(f"batch size must be at least 1, got {requested}")
        if requested > self.chunk_size:
            log.warning("batch size %d exceeds what one request may carry here; using %d", requested, self.chunk_size)
            return self.chunk_size
        return requested

    def infer_async(self, batch: np.ndarray | Sequence[bytes]) -> concurrent.futures.Future:
        """Like :meth:`infer` without blocking; the future's result() is the fp32 [N, 40] array (or EncodedAnswer)."""
        if self.server_decode:
            return self._infer_encoded_async(batch)
        batch = self._check_batch(batch)
        n = batch.shape[0]
        if n == 0:
            return _done(np.zeros((0, self.contract.num_attributes), np.float32))
        chunks = [batch[i : i + self.chunk_size] for i in range(0, n, self.chunk_size)]
        return self._gather([self._submit_chunk(chunk) for chunk in chunks], np.concatenate)

    def _infer_encoded_async(self, images: Sequence[bytes]) -> concurrent.futures.Future:
        if isinstance(images, np.ndarray) and images.dtype != np.object_ or not all(isinstance(b, bytes) for b in images):
            raise InputError("with server_decode, infer takes a list of encoded images (bytes)")
        if not images:
            return _done(EncodedAnswer(np.zeros((0, self.contract.num_attributes), np.float32), (), ()))
        budget = self.max_message_bytes - _MESSAGE_OVERHEAD_BYTES
        chunks: list[list[bytes]] = [[]]
        size = 0
        for data in images:
            # 4 bytes of length precede each BYTES element.
            if chunks[-1] and (len(chunks[-1]) >= self.chunk_size or size + len(data) + 4 > budget):
                chunks.append([])
                size = 0
            chunks[-1].append(data)
            size += len(data) + 4
        return self._gather([self._submit_encoded_chunk(chunk) for chunk in chunks], EncodedAnswer.concatenate)

    def _gather(self, futures: list[concurrent.futures.Future], join) -> concurrent.futures.Future:
        """One future for the chunks' futures: ``join`` of their results in order, or the first error."""
        result: concurrent.futures.Future = concurrent.futures.Future()
        result.set_running_or_notify_cancel()
        remaining = [len(futures)]
        lock = threading.Lock()

        def _one_done(_: concurrent.futures.Future) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            errors = [f.exception() for f in futures if f.exception() is not None]
            if errors:
                result.set_exception(errors[0])
            else:
                result.set_result(join([f.result() for f in futures]) if len(futures) > 1 else futures[0].result())

        for f in futures:
            f.add_done_callback(_one_done)
        return result

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        h, w = self.contract.preprocessing.size_hw
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (h, w, 3):
            raise InputError(f"expected a uint8 batch of shape [N, {h}, {w}, 3], got {batch.dtype} {batch.shape}")
        return np.ascontiguousarray(batch)

    def _submit_chunk(self, chunk: np.ndarray) -> concurrent.futures.Future:
        import tritonclient.grpc as grpcclient

        inp = grpcclient.InferInput(self.model_config.input_name, list(chunk.shape), "UINT8")
        inp.set_data_from_numpy(chunk)  # serialised once, reused by every retry
        return self._queue(inp, chunk.shape[0])

    def _submit_encoded_chunk(self, chunk: list[bytes]) -> concurrent.futures.Future:
        import tritonclient.grpc as grpcclient

        # np.object_, not np.bytes_: a fixed-width bytes array drops trailing zero bytes (Triton server#2524).
        rows = np.empty((len(chunk), 1), dtype=np.object_)
        rows[:, 0] = chunk
        inp = grpcclient.InferInput(encoded.INPUT_NAME, list(rows.shape), "BYTES")
        inp.set_data_from_numpy(rows)
        return self._queue(inp, len(chunk))

    def _queue(self, inp, size: int) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        job = _Job(inputs=[inp], size=size, future=future, first_try=time.monotonic())
        with self._cond:
            if self._closed:
                raise InferenceError("scorer is closed")
            heapq.heappush(self._ready, (0.0, next(self._seq), job))
            self._cond.notify_all()
        return future

    # The dispatcher: one thread decides when and where each job goes.
    def _dispatch_loop(self) -> None:
        with self._cond:
            while not self._closed:
                if self._ready and all(e.disabled for e in self._endpoints):
                    self._fail_queued(ContractError("no endpoint serves the model contract this scorer started with"))
                    continue
                wait_s = self._next_wait_s()
                if wait_s > 0:
                    self._cond.wait(timeout=min(wait_s, 1.0))
                    continue
                _, _, job = heapq.heappop(self._ready)
                endpoint = self._pick_endpoint(job)
                self._in_flight += 1
                endpoint.in_flight += 1
                job.attempts += 1
                job.last_endpoint = endpoint
                self._cond.release()
                try:
                    self._send(job, endpoint)
                finally:
                    self._cond.acquire()

    def _next_wait_s(self) -> float:
        """0 when a job can go now; else how long to sleep (capped by the caller)."""
        if not self._ready or self._in_flight >= max(1, int(self._window)):
            return 1.0
        now = time.monotonic()
        job_wait = self._ready[0][0] - now
        usable = [e for e in self._endpoints if not e.disabled]
        if not usable:
            return 1.0
        endpoint_wait = min(e.down_until for e in usable) - now
        return max(job_wait, endpoint_wait, 0.0)

    def _pick_endpoint(self, job: _Job) -> Endpoint:
        now = time.monotonic()
        up = [e for e in self._endpoints if not e.disabled and e.down_until <= now]
        # Prefer a different endpoint than the one that just failed this job (failover).
        others = [e for e in up if e is not job.last_endpoint] if job.attempts else up
        candidates = others or up
        return min(candidates, key=lambda e: (e.in_flight, e.sent))

    def _send(self, job: _Job, endpoint: Endpoint) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        started = time.monotonic()
        if not endpoint.verified:
            try:
                contract = read_contract(endpoint, self.model_name, self.model_version, min(self.timeout_s, 5.0))
            except InferenceError as exc:
                self._finish(job, endpoint, started, None, unavailable_error(str(exc)))
                return
            if not contract.interchangeable_with(self.served):
                log.error("%s serves a different model contract; not using it", endpoint.url)
                endpoint.disabled = True
                self._finish(job, endpoint, started, None, unavailable_error(f"{endpoint.url}: contract mismatch"))
                return
            endpoint.verified = True
        endpoint.sent += 1
        try:
            names = ([encoded.OUTPUT_NAME, encoded.ERROR_KIND_NAME, encoded.ERROR_NAME] if self.server_decode
                     else [self.model_config.output_name])
            endpoint.client.async_infer(
                self.request_model_name, job.inputs,
                lambda result, error: self._finish_safely(job, endpoint, started, result, error),
                model_version=self.model_version,
                outputs=[grpcclient.InferRequestedOutput(name) for name in names],
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            self._finish(job, endpoint, started, None, exc)

    def _finish_safely(self, job: _Job, endpoint: Endpoint, started: float, result, error) -> None:
        """An exception escaping a gRPC callback is lost, and the job's caller would wait forever."""
        try:
            self._finish(job, endpoint, started, result, error)
        except BaseException as exc:
            log.exception("completing a request from %s failed", endpoint.url)
            if not job.future.done():
                job.future.set_exception(InferenceError(f"{endpoint.url}: completing the request failed: {exc!r}"))

    def _finish(self, job: _Job, endpoint: Endpoint, started: float, result, error) -> None:
        """Completion callback (gRPC thread): deliver the result or schedule the retry."""
        output, status = None, None
        if error is None:
            output, error = self._read_output(result, job.size, endpoint.url)
        if error is not None:
            status = status_code(error)
        with self._cond:
            self._in_flight -= 1
            endpoint.in_flight -= 1
            self.stats.requests += 1
            self.stats.request_seconds += time.monotonic() - started
            failure = None
            if output is not None:
                endpoint.failures = 0
                self._window = min(float(self.max_in_flight), self._window + 1.0 / self._window)
                self.stats.images += job.size
            else:
                failure = self._handle_error(job, endpoint, error, status)
            self._cond.notify_all()
        # Outside the lock: a future's callbacks may submit more work.
        if output is not None:
            job.future.set_result(output)
        elif failure is not None:
            job.future.set_exception(failure)

    def _read_output(self, result, size: int, url: str) -> tuple[np.ndarray | EncodedAnswer | None, Exception | None]:
        """(the answer for ``size`` images, None), or (None, the error) for a malformed one."""
        name = encoded.OUTPUT_NAME if self.server_decode else self.model_config.output_name
        try:
            output = result.as_numpy(name)
            if self.server_decode:
                kinds, errors = result.as_numpy(encoded.ERROR_KIND_NAME), result.as_numpy(encoded.ERROR_NAME)
        except ValueError as exc:  # payload that doesn't fit its shape: must not escape the callback
            return None, InferenceError(f"{url} returned a malformed {name!r} tensor: {exc}")
        if output is None or output.shape != (size, self.contract.num_attributes):
            shape = None if output is None else output.shape
            return None, InferenceError(f"{url} returned output of shape {shape} for {size} images")
        if not self.server_decode:
            return output, None
        if kinds is None or errors is None or kinds.shape != (size, 1) or errors.shape != (size, 1):
            return None, InferenceError(f"{url} returned no per-row {encoded.ERROR_KIND_NAME}/{encoded.ERROR_NAME} "
                                        f"for {size} images")
        text = [(bytes(k).decode("utf-8", "replace"), bytes(e).decode("utf-8", "replace"))
                for k, e in zip(kinds[:, 0], errors[:, 0], strict=True)]
        return EncodedAnswer(output, tuple(k for k, _ in text), tuple(e for _, e in text)), None

    def _handle_error(self, job: _Job, endpoint: Endpoint, error, status) -> Exception | None:
        """Under the lock: count the error, then queue a retry (None) or return the job's final error."""
        key = str(status) if status is not None else type(error).__name__
        self.stats.errors_by_status[key] = self.stats.errors_by_status.get(key, 0) + 1
        give_up = self.retry.give_up_after_s
        if self._closed:
            return final_error(error, endpoint.url)
        if status in busy_codes():
            self._window = max(1.0, self._window / 2)
        elif is_unavailable(status):
            # Down, restarting or shedding load (a full queue): back the endpoint off and fewer in flight.
            self._window = max(1.0, self._window / 2)
            endpoint.failures += 1
            endpoint.mark_down(self.retry.backoff_s(endpoint.failures))
            endpoint.verified = False  # it may come back serving another model: check before using it again
            if len([e for e in self._endpoints if not e.disabled]) > 1:
                self.stats.failovers += 1
            if endpoint.failures >= 3:
                self._warnings.warning(endpoint.url, "%s is unavailable (%s); retrying for up to %s s",
                                       endpoint.url, first_line(error), give_up)
        else:  # the server failed this request (not the image's doing): a few retries, then a retryable row
            self._warnings.warning(f"{endpoint.url}:{key}", "%s failed a request (%s: %s); retrying",
                                   endpoint.url, key, first_line(error))
            if job.attempts >= self.retry.max_server_error_attempts:
                self.stats.failed_chunks += 1
                return final_error(error, endpoint.url, attempts=job.attempts)
            self.stats.server_error_retries += 1
        if give_up is not None and time.monotonic() - job.first_try > give_up:
            return ServerUnavailableError(
                f"gave up after {job.attempts} attempts over {give_up:.0f} s; last error from {endpoint.url}: {error}")
        log.debug("retrying a chunk of %d after %s from %s", job.size, key, endpoint.url)
        self.stats.retries += 1
        ready = time.monotonic() + self.retry.backoff_s(job.attempts - 1)
        heapq.heappush(self._ready, (ready, next(self._seq), job))
        return None

    def _fail_queued(self, error: Exception) -> None:
        """Under the lock: fail every queued job (their futures are completed outside it)."""
        pending, self._ready = self._ready, []
        self._cond.release()
        try:
            for _, _, job in pending:
                job.future.set_exception(error)
        finally:
            self._cond.acquire()

    def close(self) -> None:
        """Stop dispatching, fail queued jobs, close the channels. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            pending, self._ready = self._ready, []
            self._cond.notify_all()
        for _, _, job in pending:
            job.future.set_exception(InferenceError("scorer closed before the request was sent"))
        self._dispatcher.join(timeout=5.0)
        for endpoint in self._endpoints:
            endpoint.close()



def _done(value) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_running_or_notify_cancel()
    future.set_result(value)
    return future
