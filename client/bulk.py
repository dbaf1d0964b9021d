"""Score folders of images into a result file: the library behind ``facialattr score``.

:func:`score_paths` walks the inputs lazily, skips what a resumed output already
holds, streams the rest through the pipelined engine and writes one row per
input. Interrupted runs (Ctrl-C, a crash, a server that stays down) leave an
output that a ``resume=True`` run completes with each input exactly once.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facialattr.client.batching import EngineConfig, EngineTimings, ItemResult, score_files
from facialattr.client.outputs import open_writer
from facialattr.client.paths import Input, WalkStats, iter_inputs
from facialattr.client.rows import RowMaker
from facialattr.client.scorer import Scorer, ScorerStats
from facialattr.client.settings import ScorerSettings
from facialattr.errors import EXIT_NO_INPUTS, EXIT_OK, EXIT_SOME_INPUTS_FAILED, ErrorKind

log = logging.getLogger(__name__)

# Failed inputs named in the summary; the rest are in the output file.
SUMMARY_FAILED_SHOWN = 5
# Seconds between plain progress lines when stderr is not a terminal (a log file, CI).
PLAIN_PROGRESS_EVERY_S = 10.0
# The bar's size on a terminal that reports none (a pseudo-terminal nobody sized, `stty cols 0`),
# where tqdm would otherwise draw nothing at all.
FALLBACK_BAR_COLUMNS, FALLBACK_BAR_ROWS = 80, 24


@dataclass
class Summary:
    """What a scoring run did."""

    out: Path
    recursive: bool = False
    scored: int = 0
    failed: int = 0
    server_failed: int = 0  # rows the server failed after every retry; --resume scores them again
    already_done: int = 0
    to_score: int | None = None  # inputs this run set out to score, counted before it began (None: not counted)
    elapsed_s: float = 0.0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    timings: EngineTimings = field(default_factory=EngineTimings)
    walk: WalkStats = field(default_factory=WalkStats)
    scorer_stats: ScorerStats | None = None
    first_failures: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)
    complete: bool = False

    @property
    def images_per_s(self) -> float:
        """Inputs handled this run (scored and failed) per second of wall time; 0.0 before any time passed."""
        return (self.scored + self.failed) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def written(self) -> int:
        """Rows this run wrote to ``out`` (scored and failed inputs)."""
        return self.scored + self.failed

    @property
    def no_inputs(self) -> bool:
        """Nothing was found to score (not even rows of an earlier run)."""
        return self.scored + self.failed + self.already_done == 0

    @property
    def exit_code(self) -> int:
        """The command's exit status: EXIT_SOME_INPUTS_FAILED if any input failed, EXIT_NO_INPUTS if none was found, else EXIT_OK."""
        if self.failed:
            return EXIT_SOME_INPUTS_FAILED
        return EXIT_NO_INPUTS if self.no_inputs else EXIT_OK

    def lines(self) -> list[str]:
        """The run's summary for people: counts, the first failed inputs and where the rest are."""
        out = [
            f"{self.scored + self.failed} inputs this run in {self.elapsed_s:.1f} s ({self.images_per_s:.1f} images/s): "
            f"{self.scored} scored, {self.failed} failed; {self.already_done} already in {self.out}",
        ]
        for root in self.walk.empty_roots:
            out.append(f"warning: no images found under {root}" + ("" if self.recursive else " (--recursive to look in subfolders)"))
        if self.errors_by_kind:
            out.append("errors by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(self.errors_by_kind.items())))
        if self.first_failures:
            out.append("failed inputs:" if self.failed <= len(self.first_failures) else
                       f"first {len(self.first_failures)} of {self.failed} failed inputs (all are rows with status "
                       f"'error' in {self.out}):")
            out += [f"  {path!r}: {reason}" for path, reason in self.first_failures]
        out += self._server_lines()
        if self.walk.skipped_symlinks:
            out.append(f"{self.walk.skipped_symlinks} symlinks leading outside the given folders were not followed "
                       "(error rows of kind outside_roots; --follow-symlinks to include them)")
        return out

    def interrupted_line(self) -> str:
        """What an interrupted run leaves: the rows it wrote (kept) and how to finish."""
        left = "" if self.to_score is None else f" of the {self.to_score} it set out to score"
        return (f"interrupted after writing {self.written} rows{left} to {self.out}; they are kept. "
                "Rerun with --resume to score the rest.")

    def _server_lines(self) -> list[str]:
        stats, out = self.scorer_stats, []
        if stats is not None and (stats.retries or stats.errors_by_status):
            by_status = ", ".join(f"{k.removeprefix('StatusCode.')} {n}" for k, n in sorted(stats.errors_by_status.items()))
            out.append(f"server: {stats.retries} requests retried ({by_status}); every retried image was scored once"
                       if not self.server_failed else f"server: {stats.retries} requests retried ({by_status})")
        if self.server_failed:
            out.append(f"{self.server_failed} inputs failed on the server after retries (error kind 'server', not "
                       f"about the images): rerun with --resume to score them again")
        return out


class ScoringInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped :func:`score_paths`; ``summary`` counts what was written before it."""

    def __init__(self, summary: Summary) -> None:
        super().__init__()
        self.summary = summary


def score_paths(
    paths: Sequence[os.PathLike | str],
    *,
    out: os.PathLike | str,
    recursive: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    follow_symlinks: bool = False,
    progress: bool = True,
    settings: ScorerSettings | None = None,
    engine: EngineConfig | None = None,
    scorer: Scorer | None = None,
) -> Summary:
    """Score every image under ``paths`` into ``out`` (.csv, .jsonl or .parquet); the summary says what happened.

    With ``progress`` the inputs are counted first (a walk without reading any file), so the
    progress shows a total, a percentage and an ETA; on ``resume`` the total is what is left.
    Raises :class:`~facialattr.client.scorer.ServerUnavailableError` when the server stays
    unreachable (rows so far are kept; ``resume=True`` finishes later),
    :class:`~facialattr.errors.InputError` for an unusable ``out`` and :class:`ScoringInterrupted`
    (a KeyboardInterrupt carrying the summary so far) on Ctrl-C or SIGTERM. Without a ``scorer`` one is opened
    from ``settings`` (default :class:`ScorerSettings`: the default URL) and closed at the end.
    """
    summary = Summary(out=Path(out), recursive=recursive)
    walk = functools.partial(iter_inputs, paths, recursive=recursive, follow_symlinks=follow_symlinks)
    own_scorer = scorer is None
    try:
        scorer = scorer or Scorer.from_settings(settings or ScorerSettings())
        writer = open_writer(summary.out, scorer.contract, resume=resume, overwrite=overwrite)
        complete = False
        try:
            already_done = 0
            if progress:
                summary.to_score, already_done = _count_pending(walk(stats=WalkStats(), warn=False), writer.done)
            report = _Progress(enabled=progress, total=summary.to_score, already_done=already_done, out=summary.out)
            inputs = _pending(walk(stats=summary.walk), writer.done, summary)
            _run(inputs, scorer, writer, summary, engine=engine, report=report)
            complete = True
        finally:
            writer.close(complete=complete)
            summary.complete = complete
            summary.scorer_stats = scorer.stats
    except KeyboardInterrupt as exc:
        raise ScoringInterrupted(summary) from exc
    finally:
        if own_scorer and scorer is not None:
            scorer.close()
    return summary


def score_into(inputs: Iterable[Input], scorer: Scorer, writer, summary: Summary, *,
               engine: EngineConfig | None = None) -> None:
    """Score ``inputs`` (walked and filtered by the caller) into ``writer`` (anything with ``write(row)``),
    counting into ``summary``: :func:`score_paths`'s scoring loop for callers that walk and write
    themselves (the Ray engine's actors, client/ray_engine.py). No progress is shown."""
    _run(inputs, scorer, writer, summary, engine=engine, report=_Progress(enabled=False, total=None))


def _count_pending(inputs: Iterable[Input], done: Container[str]) -> tuple[int, int]:
    """(inputs still to score, inputs ``done`` already holds)."""
    pending = already = 0
    for item in inputs:
        if item.path in done:
            already += 1
        else:
            pending += 1
    return pending, already


def _pending(inputs: Iterable[Input], done: set[str], summary: Summary) -> Iterable[Input]:
    for item in inputs:
        if item.path in done:
            summary.already_done += 1
        else:
            yield item


def _run(inputs, scorer: Scorer, writer, summary: Summary, *, engine: EngineConfig | None, report: _Progress) -> None:
    errors: Counter[str] = Counter()
    rows = RowMaker(scorer.contract)
    started = time.perf_counter()
    report.start(started)
    try:
        for result in score_files(inputs, scorer, config=engine, timings=summary.timings):
            writer.write(rows.row(result))
            _count(result, summary, errors)
            report.update(summary)
    finally:
        report.close()
        summary.elapsed_s = time.perf_counter() - started
        summary.errors_by_kind = dict(errors)


def _count(result: ItemResult, summary: Summary, errors: Counter[str]) -> None:
    if result.ok:
        summary.scored += 1
        return
    summary.failed += 1
    summary.server_failed += result.retryable
    errors[ErrorKind.of(result.error_kind)] += 1
    if len(summary.first_failures) < SUMMARY_FAILED_SHOWN:
        reason = (result.error or "").removeprefix(f"{result.path}: ")
        summary.first_failures.append((result.path, " ".join(reason.splitlines())[:200]))
    log.debug("%s", result.error)


class _Progress:
    """A line saying how many inputs there are, then a tqdm bar on a terminal, or elsewhere one plain
    line every PLAIN_PROGRESS_EVERY_S (no run-together \\r updates in a log file or CI)."""

    def __init__(self, *, enabled: bool, total: int | None, already_done: int = 0, out: Path | None = None) -> None:
        self.enabled, self.total = enabled, total
        self.started = self._next_line = 0.0
        self._bar = None
        if not enabled:
            return
        if total is not None:
            already = f"; {already_done} already in {out}" if already_done else ""
            log.info("%d inputs to score%s", total, already)
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc="scoring", unit="img", file=sys.stderr, smoothing=0.1, mininterval=0.5,
                             **_bar_size())

    def start(self, started: float) -> None:
        """The run's clock starts at ``started`` (time.perf_counter())."""
        self.started = started
        self._next_line = started + PLAIN_PROGRESS_EVERY_S

    def update(self, summary: Summary) -> None:
        """One more input done; ``summary`` holds the counts so far."""
        if self._bar is not None:
            self._bar.update(1)
            if summary.failed and self._bar.n % 256 == 0:
                self._bar.set_postfix(errors=summary.failed, refresh=False)
        elif self.enabled and (now := time.perf_counter()) >= self._next_line:
            self._next_line = now + PLAIN_PROGRESS_EVERY_S
            log.info("%s", self.plain_line(summary.written, summary.failed, elapsed_s=now - self.started))

    def plain_line(self, done: int, failed: int, *, elapsed_s: float) -> str:
        """``scoring: 500/8000 inputs (6%) in 10 s (50.0/s, ETA 0:02:30), 0 failed`` (without a total: no share, no ETA)."""
        rate = done / elapsed_s if elapsed_s > 0 else 0.0
        if not self.total:
            return f"scoring: {done} inputs in {elapsed_s:.0f} s ({rate:.1f}/s), {failed} failed"
        eta = f", ETA {_clock(max(0, self.total - done) / rate)}" if rate > 0 else ""
        return (f"scoring: {done}/{self.total} inputs ({100 * done / self.total:.0f}%) in {elapsed_s:.0f} s "
                f"({rate:.1f}/s{eta}), {failed} failed")

    def close(self) -> None:
        """Draw the bar's final state and end its line."""
        if self._bar is not None:
            self._bar.close()


def _bar_size() -> dict:
    """tqdm's size arguments: follow the terminal, or a fixed size when it reports none (tqdm then prints nothing)."""
    try:
        columns, rows = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        columns = rows = 0
    if columns > 1 and rows > 1:
        return {"dynamic_ncols": True}
    return {"ncols": FALLBACK_BAR_COLUMNS, "nrows": FALLBACK_BAR_ROWS}


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
