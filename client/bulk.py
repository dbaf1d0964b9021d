"""Score folders of images into a result file: the library behind ``facialattr score``.

:func:`score_paths` walks the inputs lazily, skips what a resumed output already
holds, streams the rest through the pipelined engine and writes one row per
input. Interrupted runs (Ctrl-C, a crash, a server that stays down) leave an
output that a ``resume=True`` run completes with each input exactly once.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facialattr.client.batching import EngineConfig, EngineTimings, ItemResult, score_files
from facialattr.client.outputs import open_writer
from facialattr.client.paths import Input, WalkStats, iter_inputs
from facialattr.client.results import RowMaker
from facialattr.client.scorer import Scorer, ScorerStats
from facialattr.errors import EXIT_NO_INPUTS, EXIT_OK, EXIT_SOME_INPUTS_FAILED

log = logging.getLogger(__name__)

# Failed inputs named in the summary; the rest are in the output file.
SUMMARY_FAILED_SHOWN = 5
# Seconds between plain progress lines when stderr is not a terminal (a log file, CI).
PLAIN_PROGRESS_EVERY_S = 10.0


@dataclass
class Summary:
    """What a scoring run did."""

    out: Path
    recursive: bool = False
    scored: int = 0
    failed: int = 0
    server_failed: int = 0  # rows the server failed after every retry; --resume scores them again
    already_done: int = 0
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


def score_paths(
    paths: Sequence[os.PathLike | str],
    *,
    out: os.PathLike | str,
    urls: str | Sequence[str] = "127.0.0.1:8001",
    recursive: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    follow_symlinks: bool = False,
    progress: bool = True,
    timeout_s: float = 30.0,
    max_in_flight: int = 4,
    engine: EngineConfig | None = None,
    scorer: Scorer | None = None,
) -> Summary:
    """Score every image under ``paths`` into ``out`` (.csv, .jsonl or .parquet); the summary says what happened.

    Raises :class:`~facialattr.client.scorer.ServerUnavailableError` when the server stays
    unreachable (rows so far are kept; ``resume=True`` finishes later) and
    :class:`~facialattr.errors.InputError` for an unusable ``out``.
    """
    summary = Summary(out=Path(out), recursive=recursive)
    own_scorer = scorer is None
    scorer = scorer or Scorer(urls, timeout_s=timeout_s, max_in_flight=max_in_flight)
    try:
        writer = open_writer(summary.out, scorer.contract, resume=resume, overwrite=overwrite)
        complete = False
        try:
            inputs = _pending(iter_inputs(paths, recursive=recursive, follow_symlinks=follow_symlinks, stats=summary.walk),
                              writer.done, summary)
            _run(inputs, scorer, writer, summary, engine=engine, progress=progress)
            complete = True
        finally:
            writer.close(complete=complete)
            summary.complete = complete
            summary.scorer_stats = scorer.stats
    finally:
        if own_scorer:
            scorer.close()
    return summary


def _pending(inputs: Iterable[Input], done: set[str], summary: Summary) -> Iterable[Input]:
    for item in inputs:
        if item.path in done:
            summary.already_done += 1
        else:
            yield item


def _run(inputs, scorer: Scorer, writer, summary: Summary, *, engine: EngineConfig | None, progress: bool) -> None:
    errors: Counter[str] = Counter()
    rows = RowMaker(scorer.contract)
    started = time.perf_counter()
    report = _Progress(enabled=progress, started=started)
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
    errors[result.error_kind or "input"] += 1
    if len(summary.first_failures) < SUMMARY_FAILED_SHOWN:
        reason = (result.error or "").removeprefix(f"{result.path}: ")
        summary.first_failures.append((result.path, " ".join(reason.splitlines())[:200]))
    log.debug("%s", result.error)


class _Progress:
    """A tqdm bar on a terminal; elsewhere one plain line every PLAIN_PROGRESS_EVERY_S (no run-together \\r updates)."""

    def __init__(self, *, enabled: bool, started: float) -> None:
        self.enabled, self.started = enabled, started
        self.tty = sys.stderr.isatty()
        self._bar = None
        self._next_line = started + PLAIN_PROGRESS_EVERY_S
        if enabled and self.tty:
            from tqdm import tqdm

            self._bar = tqdm(desc="scoring", unit="img", file=sys.stderr, dynamic_ncols=True, smoothing=0.1, mininterval=0.5)

    def update(self, summary: Summary) -> None:
        if self._bar is not None:
            self._bar.update(1)
            if summary.failed and self._bar.n % 256 == 0:
                self._bar.set_postfix(errors=summary.failed, refresh=False)
        elif self.enabled and (now := time.perf_counter()) >= self._next_line:
            self._next_line = now + PLAIN_PROGRESS_EVERY_S
            done = summary.scored + summary.failed
            log.info("scoring: %d inputs in %.0f s (%.1f/s), %d failed",
                     done, now - self.started, done / (now - self.started), summary.failed)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
