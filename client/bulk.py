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

from facialattr.client.batching import EngineConfig, EngineTimings, score_files
from facialattr.client.paths import WalkStats, iter_inputs
from facialattr.client.results import RowMaker, open_writer
from facialattr.client.scorer import Scorer

log = logging.getLogger(__name__)

EXIT_OK = 0  # mirrors facialattr.cli (imported lazily there to keep the CLI light)
EXIT_SOME_INPUTS_FAILED = 3


@dataclass
class Summary:
    """What a scoring run did."""

    out: Path
    scored: int = 0
    failed: int = 0
    already_done: int = 0
    elapsed_s: float = 0.0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    timings: EngineTimings = field(default_factory=EngineTimings)
    walk: WalkStats = field(default_factory=WalkStats)
    complete: bool = False

    @property
    def images_per_s(self) -> float:
        return (self.scored + self.failed) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_SOME_INPUTS_FAILED if self.failed else EXIT_OK

    def lines(self) -> list[str]:
        out = [
            f"{self.scored + self.failed} inputs this run in {self.elapsed_s:.1f} s ({self.images_per_s:.1f} images/s): "
            f"{self.scored} scored, {self.failed} failed; {self.already_done} already in {self.out}",
        ]
        if self.errors_by_kind:
            out.append("errors by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(self.errors_by_kind.items())))
        if self.walk.skipped_symlinks:
            out.append(f"{self.walk.skipped_symlinks} symlinks leading outside the given folders were not followed "
                       "(error rows of kind outside_roots; --follow-symlinks to include them)")
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
    """Score every image under ``paths`` into ``out`` (.csv, .jsonl or .parquet)."""
    summary = Summary(out=Path(out))
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
    finally:
        if own_scorer:
            scorer.close()
    return summary


def _pending(inputs: Iterable[str], done: set[str], summary: Summary) -> Iterable[str]:
    for path in inputs:
        if path in done:
            summary.already_done += 1
        else:
            yield path


def _run(inputs, scorer: Scorer, writer, summary: Summary, *, engine: EngineConfig | None, progress: bool) -> None:
    from tqdm import tqdm

    errors: Counter[str] = Counter()
    rows = RowMaker(scorer.contract)
    started = time.perf_counter()
    bar = tqdm(desc="scoring", unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True,
               smoothing=0.1, mininterval=0.5 if sys.stderr.isatty() else 15.0)
    try:
        for result in score_files(inputs, scorer, config=engine, timings=summary.timings):
            writer.write(rows.row(result))
            if result.ok:
                summary.scored += 1
            else:
                summary.failed += 1
                errors[result.error_kind or "input"] += 1
                log.debug("%s", result.error)
            bar.update(1)
            if summary.failed and bar.n % 256 == 0:
                bar.set_postfix(errors=summary.failed, refresh=False)
    finally:
        bar.close()
        summary.elapsed_s = time.perf_counter() - started
        summary.errors_by_kind = dict(errors)
