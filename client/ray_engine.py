"""``facialattr score --engine ray``: the single-process scorer, once per CPU of a Ray cluster.

The driver (this process) reads the contract from the servers, joins (or starts) Ray, walks the
inputs into units of ``--shard-size`` paths on disk (client/sharded_out.py) and hands the unit
numbers to a pool of :class:`ShardScorer` actors, one per CPU the cluster offers::

    driver: unit numbers, a few per call ──► ShardScorer actor (1 CPU each, on any node)
                                               reads its units' paths from OUT/_manifest/
                                               client/bulk.py's scoring loop, as `facialattr score` runs it:
                                                 decode threads, requests in flight, one Scorer (gRPC to
                                                 every --url, failover, retries), RowMaker rows
                                               writes each unit's shard OUT/part-NNNNNN.parquet, atomically
    driver ◄── one Summary per call (counters, first failures, time split)

Images never travel through Ray: only unit numbers go out and small summaries come back, so
the object store, Ray Data's executor and its decode tasks (most of the old engine's extra
CPU, docs/DISTRIBUTED.md) are gone. The actors take the single-process settings unchanged
(the :class:`~facialattr.client.settings.ScorerSettings` and the ``EngineConfig``), so a scorer
option reaches them without edits here. Ray is imported only when this engine runs (the ``ray`` extra).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# Only light imports here: ``facialattr score --help`` reads this module's defaults.
from facialattr.errors import FacialAttrError, InputError

if TYPE_CHECKING:
    from facialattr.client.batching import EngineConfig
    from facialattr.client.bulk import Summary
    from facialattr.client.settings import ScorerSettings

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
# Inputs per unit (one shard): big enough that a shard's write is noise, small enough to spread 4,000 images.
DEFAULT_SHARD_SIZE = 256
# Calls queued per actor: the next call's units are there the moment one ends, so an actor never waits on the driver.
CALLS_QUEUED_PER_ACTOR = 2
# Calls per actor aimed at over a run: enough that actors finish close together, few enough that the
# pipeline's fill and drain (once per call) stay small.
CALLS_PER_ACTOR = 4
MAX_UNITS_PER_CALL = 8


@dataclass(frozen=True)
class RayOptions:
    """How the Ray engine spreads the work (the scoring itself is set by the single-process settings)."""

    address: str | None = None  # None: start a private Ray instance for the run (no dashboard)
    shard_size: int = DEFAULT_SHARD_SIZE
    actors: int | None = None  # None: one per CPU the cluster offers (divided by actor_cpus)
    actor_cpus: float = 1.0  # an actor decodes on its own threads and runs the gRPC client: a core's work


@dataclass
class RayTimings:
    """Seconds; decode and inference wait are summed over actors (they run in parallel, past wall time)."""

    startup_s: float = 0.0
    plan_s: float = 0.0
    actors: int = 0
    decode_s: float = 0.0
    infer_s: float = 0.0

    def line(self) -> str:
        """One human-readable summary line for stderr."""
        return (f"ray engine: start {self.startup_s:.1f} s, walk {self.plan_s:.1f} s, {self.actors} actors; "
                f"summed over actors: decode {self.decode_s:.1f} s, inference wait {self.infer_s:.1f} s")


def score_paths_ray(paths, *, out, settings: ScorerSettings | None = None, recursive: bool = False,
                    resume: bool = False, overwrite: bool = False, follow_symlinks: bool = False,
                    progress: bool = True, options: RayOptions | None = None, engine: EngineConfig | None = None,
                    ) -> tuple[Summary, RayTimings]:
    """Score every image under ``paths`` into the shard folder ``out`` on a Ray cluster; the summary and timings.

    Each actor opens its scorer from ``settings`` (default :class:`ScorerSettings`: the default
    URL) and scores with ``engine``, as :func:`~facialattr.client.bulk.score_paths` does in one process.
    Everything that can fail at the start (the output refused, no server, no cluster) fails before
    ``out`` is created, so a retry is not refused. Raises RayClusterError (no cluster),
    ServerUnavailableError (no server; past the retry deadline, resumable), InputError (bad
    arguments, an ``out`` that is not this engine's); a KeyboardInterrupt keeps the shards written.
    """
    from facialattr.client import connect, sharded_out
    from facialattr.client.ray_cluster import ray_session
    from facialattr.client.settings import ScorerSettings
    from facialattr.files import OutputLock

    options = options or RayOptions()
    settings = settings or ScorerSettings()
    timings = RayTimings()
    if (options.actors is not None and options.actors < 1) or options.actor_cpus < 0:
        raise InputError("--ray-actors must be at least 1, --ray-actor-cpus at least 0")
    if options.shard_size < 1:
        raise InputError(f"--shard-size must be at least 1, got {options.shard_size}")
    # One run per output folder, for the whole run (a second fails at once, before anything is deleted).
    # The lock file goes with the lock, so a start that fails below leaves nothing behind.
    with OutputLock(out):
        sharded_out.check_dataset(out, resume=resume, overwrite=overwrite)
        # The driver's own look at the servers, with the actors' settings and waits: a clear failure
        # (the one message naming each URL) before any Ray work or output.
        connect.probe(settings)
        with ray_session(options.address) as startup_s:
            timings.startup_s = startup_s
            summary = _score(paths, out, settings, recursive=recursive, resume=resume, overwrite=overwrite,
                             follow_symlinks=follow_symlinks, progress=progress, options=options, engine=engine,
                             timings=timings)
    return summary, timings


def _score(paths, out, settings: ScorerSettings, *, recursive: bool, resume: bool, overwrite: bool,
           follow_symlinks: bool, progress: bool, options: RayOptions, engine: EngineConfig | None,
           timings: RayTimings) -> Summary:
    """The run, once the output is locked and checked, the servers answered and Ray is up."""
    import ray

    from facialattr.client import sharded_out
    from facialattr.client.bulk import Summary

    started = time.perf_counter()
    # The actors start (a worker process each: imports, a gRPC connection) while this process walks.
    actors = _start_actors(Path(out), settings, engine, options, timings)
    try:
        out = sharded_out.open_dataset(out, resume=resume, overwrite=overwrite)
        summary = Summary(out=out, recursive=recursive)
        plan = sharded_out.plan_units(out, paths, recursive=recursive, follow_symlinks=follow_symlinks,
                                      unit_size=options.shard_size, stats=summary.walk)
        timings.plan_s = time.perf_counter() - started
        summary.walk.skipped_symlinks = plan.skipped_symlinks
        if plan.units:
            _drive(out, plan, actors, summary, timings, progress=progress)
    finally:
        for actor in actors:
            ray.kill(actor)
    summary.elapsed_s = time.perf_counter() - started
    summary.complete = True
    return summary


def actor_count(options: RayOptions, cluster_cpus: float) -> int:
    """``options.actors``, or as many actors as the cluster's CPUs hold at ``actor_cpus`` each (at least one)."""
    if options.actors is not None:
        return options.actors
    if options.actor_cpus <= 0:
        return max(1, int(cluster_cpus))
    return max(1, int(cluster_cpus // options.actor_cpus))


def unit_calls(units: list[int], actors: int) -> list[list[int]]:
    """The units split into calls: about CALLS_PER_ACTOR calls per actor, consecutive units per call."""
    per_call = max(1, min(MAX_UNITS_PER_CALL, len(units) // max(1, actors * CALLS_PER_ACTOR)))
    return [units[i : i + per_call] for i in range(0, len(units), per_call)]


def _start_actors(out: Path, settings: ScorerSettings, engine: EngineConfig | None, options: RayOptions,
                  timings: RayTimings) -> list:
    """The pool of ShardScorer actors, one per CPU of the cluster unless ``options`` say otherwise."""
    import ray

    cluster_cpus = ray.cluster_resources().get("CPU", 0.0)
    n = actor_count(options, cluster_cpus)
    if n * options.actor_cpus > cluster_cpus:
        log.warning("%d actors at %s CPUs each need more CPUs than the cluster's %s; some will wait for others",
                    n, options.actor_cpus, cluster_cpus)
    timings.actors = n
    actor_class = ray.remote(ShardScorer).options(
        num_cpus=options.actor_cpus,
        # A dead actor (its node lost, its process killed) is restarted and its calls run again: each
        # call's shards replace themselves, so every input still has exactly one row. Its arguments
        # are small (no object-store copies to keep for a restart).
        max_restarts=2, max_task_retries=2)
    return [actor_class.remote(str(out), settings, engine) for _ in range(n)]


def _drive(out: Path, plan, actors: list, summary, timings: RayTimings, *, progress: bool) -> None:
    """Keep each actor fed with calls and add up what they return."""
    import ray
    from tqdm import tqdm

    from facialattr.client import sharded_out

    # Units a finished shard already holds are counted here, not sent out (a resumed run, a rerun).
    todo = []
    for unit in range(plan.units):
        done = sharded_out.done_rows(out, unit)
        if done is None:
            todo.append(unit)
        else:
            summary.already_done += done
    if not todo:
        return
    calls = deque(unit_calls(todo, len(actors)))
    bar = tqdm(desc="scoring", unit="img", total=plan.inputs, initial=summary.already_done, file=sys.stderr,
               disable=not progress, dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 15.0)
    pending: dict = {}  # call's ObjectRef -> its actor
    try:
        for actor in actors:
            for _ in range(CALLS_QUEUED_PER_ACTOR):
                if calls:
                    pending[actor.score_units.remote(calls.popleft())] = actor
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(ref)
            if calls:
                pending[actor.score_units.remote(calls.popleft())] = actor
            part = _result(ray, ref)
            _add(summary, part, timings)
            bar.update(part.written + part.already_done)
    finally:
        bar.close()


def _result(ray, ref):
    try:
        return ray.get(ref)
    except Exception as exc:
        raise _facialattr_cause(exc) or exc from None


def _add(summary, part, timings: RayTimings) -> None:
    """Add one call's Summary to the run's."""
    from facialattr.client.bulk import SUMMARY_FAILED_SHOWN

    for name in ("scored", "failed", "server_failed", "already_done"):
        setattr(summary, name, getattr(summary, name) + getattr(part, name))
    for kind, n in part.errors_by_kind.items():
        summary.errors_by_kind[kind] = summary.errors_by_kind.get(kind, 0) + n
    room = SUMMARY_FAILED_SHOWN - len(summary.first_failures)
    summary.first_failures.extend(part.first_failures[:max(0, room)])
    stats, theirs = summary.scorer_stats, part.scorer_stats
    if theirs is not None:
        if stats is None:
            summary.scorer_stats = theirs
        else:
            stats.retries += theirs.retries
            for status, n in theirs.errors_by_status.items():
                stats.errors_by_status[status] = stats.errors_by_status.get(status, 0) + n
    timings.decode_s += part.timings.decode_s
    timings.infer_s += part.timings.wait_infer_s


def _facialattr_cause(exc: BaseException) -> FacialAttrError | None:
    """The project's error inside Ray's wrappers (a task's exception reaches the driver wrapped)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, FacialAttrError):
            cause = getattr(exc, "cause", None)  # RayTaskError subclasses the cause's class; unwrap it
            return cause if isinstance(cause, FacialAttrError) else exc
        exc = getattr(exc, "cause", None) or exc.__cause__
    return None


class ShardScorer:
    """Ray actor: the single-process scorer over the inputs of the units it is given, one shard per unit.

    ``settings`` and ``engine`` are what ``facialattr score`` opens its Scorer from and gives its scoring loop.
    """

    def __init__(self, out: str, settings: ScorerSettings, engine: EngineConfig | None) -> None:
        from facialattr.client.rows import parquet_schema
        from facialattr.client.scorer import Scorer

        # Every actor talks to every endpoint: the Scorer sends to the least busy one and fails over when one dies.
        self.scorer = Scorer.from_settings(settings)
        self.out, self.engine = Path(out), engine
        self.schema = parquet_schema(self.scorer.contract)

    def score_units(self, units: list[int]):
        """Score the units not done yet as one stream (no drain between units); returns their Summary."""
        from facialattr.client import sharded_out
        from facialattr.client.bulk import Summary, score_into
        from facialattr.client.scorer import ScorerStats

        summary = Summary(out=self.out)
        todo = []
        for unit in units:
            done = sharded_out.done_rows(self.out, unit)  # a retried call: its finished shards stay
            if done is None:
                todo.append(unit)
            else:
                summary.already_done += done
        retries_before = self.scorer.stats.retries
        statuses_before = dict(self.scorer.stats.errors_by_status)
        writer = _ShardWriter(self.out, self.schema, [(u, sharded_out.read_unit(self.out, u)) for u in todo])
        score_into(writer.inputs(), self.scorer, writer, summary, engine=self.engine)
        writer.finish()
        stats = self.scorer.stats
        summary.scorer_stats = ScorerStats(retries=stats.retries - retries_before, errors_by_status={
            k: n - statuses_before.get(k, 0) for k, n in stats.errors_by_status.items() if n > statuses_before.get(k, 0)})
        return summary

    def __del__(self) -> None:
        scorer = getattr(self, "scorer", None)
        if scorer is not None:
            scorer.close()


class _ShardWriter:
    """Rows in input order -> one shard per unit, each written the moment its last row arrives."""

    def __init__(self, out: Path, schema, units: list[tuple[int, list]]) -> None:
        self.out, self.schema, self.units = out, schema, deque(units)
        self.rows: list[dict] = []

    def inputs(self):
        """The units' inputs in order, as the scoring loop takes them."""
        for _, items in list(self.units):
            yield from items

    def write(self, row: dict) -> None:
        """One result row (the writer interface of client/outputs.py)."""
        self.rows.append(row)
        unit, items = self.units[0]
        if len(self.rows) == len(items):
            self._flush(unit)

    def _flush(self, unit: int) -> None:
        import pyarrow as pa

        from facialattr.client import sharded_out
        from facialattr.client.rows import record_batch

        sharded_out.write_shard(self.out, unit, pa.Table.from_batches([record_batch(self.rows, self.schema)]))
        self.units.popleft()
        self.rows = []

    def finish(self) -> None:
        """Check that every unit got its rows (the loop gives one row per input, in order)."""
        if self.units or self.rows:
            raise RuntimeError(f"scoring ended with {len(self.units)} units unwritten")
