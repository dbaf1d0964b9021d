"""The pipelined engine: file paths -> parallel decode -> batches -> in-flight inference -> results.

Everything is bounded: at most ``decode_ahead`` files are being decoded and at
most ``scorer.max_in_flight`` batches await the server, so memory does not grow
with the number of inputs. Results come out in input order, one per path,
with a decode failure as an error result in its place (the run goes on).
A failure of the server (not of the image) that outlasts the scorer's retries
becomes a *retryable* error result: written, and scored again by a resumed run.
A server that stays unreachable past the scorer's retry deadline raises
:class:`~facialattr.client.scorer.ServerUnavailableError`: nothing is invented
for the images in flight, and a resumed run scores them later.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from facialattr.client.decode import (
    DEFAULT_MAX_DECODE_BYTES,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_PIXELS,
    DecodeError,
    decode_and_prepare,
    read_file,
)
from facialattr.client.paths import Input, as_input
from facialattr.client.scorer import EncodedAnswer, Scorer
from facialattr.contract import Preprocessing
from facialattr.errors import ErrorKind, InferenceError, ServerUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemResult:
    """One input's outcome: probabilities, or an error message naming the input and its kind."""

    path: str
    probabilities: np.ndarray | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None

    @classmethod
    def failed(cls, error: DecodeError) -> ItemResult:
        """The error row of an input that was refused or did not decode: ``error``'s path, message and kind."""
        return cls(error.path, error=str(error), error_kind=error.kind)

    @property
    def ok(self) -> bool:
        """True when the input was scored (``probabilities`` holds one float per attribute)."""
        return self.probabilities is not None

    @property
    def retryable(self) -> bool:
        """True when the server failed, not the input: a resumed run scores it again."""
        return self.error_kind is not None and ErrorKind.of(self.error_kind).retryable


@dataclass
class EngineTimings:
    """Where the time went (seconds, summed over workers / requests)."""

    decode_s: float = 0.0
    wait_decode_s: float = 0.0  # the main thread waited for a decode worker
    wait_infer_s: float = 0.0  # the main thread waited for the server
    batch_sizes: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineConfig:
    """How :func:`score_files` decodes and batches; byte and pixel limits refuse an input before work on it."""

    decode_workers: int = 2
    batch_size: int | None = None  # None: the server's max_batch_size (bounded by message size)
    decode_ahead: int | None = None  # None: two batches' worth
    decode_chunk: int = 4  # files per decode task (1, 4 and 8 measured alike here, within noise)
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES  # refused before reading
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES  # pixels x channels x bytes per sample, refused before decoding

    def decode_limits(self) -> dict[str, int]:
        """The keyword arguments :func:`~facialattr.client.decode.decode_image` (and :func:`decode_files`) take."""
        return {"max_pixels": self.max_pixels, "max_file_bytes": self.max_file_bytes,
                "max_decode_bytes": self.max_decode_bytes}


class RequestGroup:
    """Consecutive inputs that share one inference request, kept in input order.

    Inputs that failed to decode ride along as error rows, so results come out in input order.
    Call :meth:`add` per input, :meth:`submit` once, then :meth:`results` once.
    """

    def __init__(self) -> None:
        self.items: list[tuple[str, DecodeError | None]] = []
        self.images: list[np.ndarray] = []
        self.future: concurrent.futures.Future | None = None

    def add(self, path: str, image: np.ndarray | bytes | None, error: DecodeError | None) -> None:
        """Append one input: its prepared uint8 HxWx3 ``image`` (its file's bytes with server decoding), or the ``error``."""
        self.items.append((path, error))
        if image is not None:
            self.images.append(image)

    def submit(self, scorer: Scorer, timings: EngineTimings) -> RequestGroup:
        """Send the group's images as one request (none when every input failed); returns ``self``.

        Counts the request's batch size in ``timings.batch_sizes`` and drops the per-image copies.
        """
        if self.images:
            n = len(self.images)
            timings.batch_sizes[n] = timings.batch_sizes.get(n, 0) + 1
            self.future = scorer.infer_async(self.images if scorer.server_decode else np.stack(self.images))
            self.images = []  # the stacked copy is all the request needs
        return self

    @property
    def done(self) -> bool:
        """True when :meth:`results` will not wait: no request was sent, or its answer is in."""
        return self.future is None or self.future.done()

    def results(self, timings: EngineTimings) -> Iterator[ItemResult]:
        """One :class:`ItemResult` per added input, in order; waits for the request (time in ``timings.wait_infer_s``).

        A request that failed on the server after the scorer's retries gives retryable error rows.
        Raises :class:`ServerUnavailableError` when no server answered within the scorer's retry deadline.
        """
        probabilities, batch_error, row_errors = None, None, None
        if self.future is not None:
            started = time.perf_counter()
            try:
                probabilities = self.future.result()
                if isinstance(probabilities, EncodedAnswer):
                    probabilities, row_errors = probabilities.probabilities, probabilities
            except ServerUnavailableError:
                raise
            except InferenceError as exc:
                batch_error = exc
                log.warning("a batch of %d failed on the server after retries (rows kept for --resume): %s",
                            len(self.items), exc)
            finally:
                timings.wait_infer_s += time.perf_counter() - started
        row = 0
        for path, error in self.items:
            if error is not None:
                yield ItemResult.failed(error)
            elif batch_error is not None:
                yield ItemResult(path, error=f"{path}: server failed after retries: {batch_error}",
                                 error_kind=ErrorKind.SERVER)
            elif row_errors is not None and row_errors.error_kinds[row]:
                # The server could not decode this file: the row the client's decoder would have written.
                kind = ErrorKind.of(row_errors.error_kinds[row])
                yield ItemResult.failed(DecodeError(path, row_errors.errors[row], kind=kind))
                row += 1
            else:
                yield ItemResult(path, probabilities=probabilities[row])
                row += 1


def _decode_one(item: Input, preprocessing: Preprocessing | None, limits: dict[str, int]) -> np.ndarray | bytes:
    path = item.path
    try:
        data = read_file(item, max_file_bytes=limits["max_file_bytes"])  # the Input: its listing is checked on open
    except DecodeError:
        raise
    except MemoryError:
        raise DecodeError(path, "out of memory while reading", kind=ErrorKind.TOO_LARGE) from None
    except Exception as exc:  # whatever reading one file raises must not end a million-file run
        raise DecodeError(path, f"decoder failed: {type(exc).__name__}: {exc}",
                          kind=ErrorKind.DECODER_FAILURE) from None
    if preprocessing is None:  # the server decodes (with the same limits, facialattr.decoding)
        return data
    return decode_and_prepare(data, preprocessing, path=path, **limits)


def decode_files(
    items: list[Input], preprocessing: Preprocessing | None, limits: dict[str, int]
) -> tuple[list[tuple[np.ndarray | bytes | None, DecodeError | None]], float]:
    """Decode and prepare ``items`` in order: ``([(image, None) | (None, error)], seconds spent)``.

    ``limits`` are :meth:`EngineConfig.decode_limits`. A file that cannot be scored (corrupt, too
    large, a codec crash) becomes its :class:`DecodeError`, and a refused input keeps the one the walk
    made (``Input.refused``, unchanged); nothing is raised. With ``preprocessing`` None the files are
    only read: ``image`` is the file's bytes, for server decoding. Several files per task means fewer
    futures and thread hand-overs per image.
    """
    started = time.perf_counter()
    out: list[tuple[np.ndarray | bytes | None, DecodeError | None]] = []
    for item in items:
        if item.refused is not None:
            out.append((None, item.refused))
            continue
        try:
            out.append((_decode_one(item, preprocessing, limits), None))
        except DecodeError as exc:
            out.append((None, exc))
    return out, time.perf_counter() - started


def score_files(
    paths: Iterable[Input | os.PathLike | str],
    scorer: Scorer,
    *,
    config: EngineConfig | None = None,
    timings: EngineTimings | None = None,
) -> Iterator[ItemResult]:
    """Score image files in input order; bounded memory however many paths come in.

    Raises :class:`ServerUnavailableError` when no server answers within the scorer's retry deadline.
    """
    config = config or EngineConfig()
    timings = timings if timings is not None else EngineTimings()
    batch_size = scorer.request_size(config.batch_size)
    decode_ahead = config.decode_ahead or max(2 * batch_size, 4 * config.decode_workers)
    # A server-decoding scorer sends the files' bytes: read here, decoded there.
    preprocessing = None if scorer.server_decode else scorer.contract.preprocessing
    # Threads, not processes: decoding scaled to 1.5x on 2 threads here, and a process pool measured slower
    # (about 300 vs 570 images/s, median of 4 alternating runs on the placeholder model).
    pool = concurrent.futures.ThreadPoolExecutor(config.decode_workers, thread_name_prefix="facialattr-decode")
    chunk = max(1, min(config.decode_chunk, batch_size))
    limits = config.decode_limits()
    decoding: deque[tuple[list[Input], concurrent.futures.Future]] = deque()
    groups: deque[RequestGroup] = deque()
    path_iter = iter(paths)
    current = RequestGroup()
    try:
        while True:
            while len(decoding) * chunk < decode_ahead:
                items = [as_input(p) for p in _take(path_iter, chunk)]
                if not items:
                    break
                decoding.append((items, pool.submit(decode_files, items, preprocessing, limits)))
            if not decoding:
                break
            items, future = decoding.popleft()
            for item, (image, error) in zip(items, _collect(future, timings), strict=True):
                current.add(item.path, image, error)
                # Error rows count too, so a folder of broken files cannot pile up unbounded.
                if len(current.images) >= batch_size or len(current.items) >= 4 * batch_size:
                    groups.append(current.submit(scorer, timings))
                    current = RequestGroup()
            # Keep at most max_in_flight requests out; hand over whatever is already done.
            while groups and (len(groups) > scorer.max_in_flight or groups[0].done):
                yield from groups.popleft().results(timings)
        if current.items:
            groups.append(current.submit(scorer, timings))
        while groups:
            yield from groups.popleft().results(timings)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _take(iterator: Iterator, n: int) -> list:
    out = []
    for _ in range(max(0, n)):
        try:
            out.append(next(iterator))
        except StopIteration:
            break
    return out


def _collect(future: concurrent.futures.Future, timings: EngineTimings) -> list:
    started = time.perf_counter()
    results, decode_s = future.result()
    timings.wait_decode_s += time.perf_counter() - started
    timings.decode_s += decode_s
    return results
