"""``facialattr score --engine ray``: the same scoring spread over a Ray cluster with Ray Data.

The driver (this process) reads the contract from the servers, walks the inputs
into units of ``--shard-size`` paths on disk (client/sharded_out.py) and runs one
Ray Data pipeline over the unit numbers::

    range(units) -> decode tasks (client/batching.py's decode and preprocess, 1 CPU each)
                 -> an actor pool of Scorers (gRPC to every --url, failover, retries)
                 -> one Parquet shard per unit, written by the actor, atomically

Nothing but unit numbers, decoded units (in Ray's object store, bounded by Ray
Data's backpressure) and one small summary row per unit travel through Ray; the
driver holds the plan, the counters and one summary batch at a time, never the
list of inputs. Ray is imported only when this engine runs (the ``ray`` extra).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

# Only light imports here: ``facialattr score --help`` imports this module for its options.
from facialattr import MODEL_NAME
from facialattr.errors import EXIT_FATAL, EXIT_INTERRUPTED, FacialAttrError, InputError

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
# Inputs per unit (one Ray task, one shard): 256 prepared 128 px images are 12.6 MB in the object store.
DEFAULT_SHARD_SIZE = 256


@dataclass(frozen=True)
class RayOptions:
    """How the Ray engine spreads the work; scorer settings mean what they mean for ``facialattr score``."""

    address: str | None = None  # None: start a private Ray instance for the run (no dashboard)
    shard_size: int = DEFAULT_SHARD_SIZE
    actors: int = 2
    # Scoring actors mostly wait on the network, so by default they reserve no CPU: every core decodes.
    actor_cpus: float = 0.0
    timeout_s: float = 30.0
    max_in_flight: int = 4
    connect_timeout_s: float | None = None  # None: the Scorer's default (fails fast on a refused connection)
    give_up_after_s: float = 300.0
    max_file_bytes: int | None = None  # None: the single-process defaults (client/batching.py EngineConfig)
    max_decode_bytes: int | None = None
    model_name: str = MODEL_NAME

    def decode_limits(self) -> dict[str, int]:
        """Byte and pixel limits for the decode tasks: these options over the single-process defaults."""
        from facialattr.client.batching import EngineConfig

        limits = {k: v for k, v in (("max_file_bytes", self.max_file_bytes),
                                    ("max_decode_bytes", self.max_decode_bytes)) if v is not None}
        return EngineConfig(**limits).decode_limits()


@dataclass
class RayTimings:
    """Seconds summed over units (tasks and actors run in parallel, so these add up past wall time)."""

    decode_s: float = 0.0
    infer_s: float = 0.0
    write_s: float = 0.0
    startup_s: float = 0.0
    plan_s: float = 0.0

    def line(self) -> str:
        """One human-readable summary line for stderr."""
        return (f"ray engine: start {self.startup_s:.1f} s, walk {self.plan_s:.1f} s; summed over units: "
                f"decode {self.decode_s:.1f} s, inference {self.infer_s:.1f} s, shard writes {self.write_s:.1f} s")


def add_arguments(parser) -> None:
    """The Ray engine's options on ``facialattr score``."""
    group = parser.add_argument_group("Ray engine (--engine ray; needs the 'ray' extra)")
    group.add_argument("--engine", choices=ENGINES, default="local",
                       help="local: this process (default); ray: Ray Data over a Ray cluster, --out is a folder of shards")
    group.add_argument("--ray-address", metavar="HOST:PORT",
                       help="a running Ray cluster's GCS address (default: start a private Ray instance on this machine)")
    group.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, metavar="N",
                       help="inputs per Ray task and per Parquet shard (default: %(default)s)")
    group.add_argument("--ray-actors", type=int, default=RayOptions.actors, metavar="N",
                       help="scoring actors (gRPC clients over every --url) (default: %(default)s)")
    group.add_argument("--ray-actor-cpus", type=float, default=RayOptions.actor_cpus, metavar="CPUS",
                       help="CPUs each scoring actor reserves (default: %(default)s; they mostly wait on the network)")


def run(args, *, urls: list[str]) -> int:
    """``facialattr score --engine ray``: exit status as the single-process command gives it."""
    from facialattr.client.scorer import ServerUnavailableError

    options = RayOptions(address=args.ray_address, shard_size=args.shard_size, actors=args.ray_actors,
                         actor_cpus=args.ray_actor_cpus, timeout_s=args.timeout_s,
                         max_in_flight=args.max_in_flight, connect_timeout_s=args.connect_timeout,
                         give_up_after_s=args.give_up_after, max_file_bytes=args.max_file_bytes,
                         max_decode_bytes=args.max_decode_bytes, model_name=args.model_name)
    timings = RayTimings()
    try:
        summary = score_paths_ray(args.paths, out=args.out, urls=urls, recursive=args.recursive, resume=args.resume,
                                  overwrite=args.overwrite, follow_symlinks=args.follow_symlinks,
                                  progress=not args.no_progress, options=options, timings=timings)
    except ServerUnavailableError as exc:
        log.error("%s", exc)
        log.error("stopped; shards written so far are kept. Rerun with --resume once the server is back.")
        return EXIT_FATAL
    except KeyboardInterrupt:
        log.error("interrupted; shards written so far are kept. Rerun with --resume to finish.")
        return EXIT_INTERRUPTED
    for line in [*summary.lines(), timings.line()]:
        print(line, file=sys.stderr)
    return summary.exit_code


def score_paths_ray(paths, *, out: os.PathLike | str, urls: list[str], recursive: bool = False, resume: bool = False,
                    overwrite: bool = False, follow_symlinks: bool = False, progress: bool = True,
                    options: RayOptions | None = None, timings: RayTimings | None = None):
    """Score every image under ``paths`` into the shard folder ``out`` on a Ray cluster.

    Raises RayClusterError (no cluster), ServerUnavailableError (no server past the retry
    deadline; resumable), InputError (bad arguments, an ``out`` that is not this engine's).
    """
    from facialattr.client import sharded_out
    from facialattr.client.bulk import Summary
    from facialattr.client.paths import WalkStats
    from facialattr.client.scorer import Scorer
    from facialattr.files import OutputLock

    options = options or RayOptions()
    if options.actors < 1 or options.max_in_flight < 1 or options.actor_cpus < 0:
        raise InputError("--ray-actors and --max-in-flight must be at least 1, --ray-actor-cpus at least 0")
    # One run per output folder, for the whole run (a second fails at once, before anything is deleted).
    with OutputLock(out):
        out = sharded_out.open_dataset(out, resume=resume, overwrite=overwrite)
        summary = Summary(out=out)
        timings = timings if timings is not None else RayTimings()
        # The driver's own look at the servers: the contract (and a clear failure before any Ray work).
        with Scorer(urls, model_name=options.model_name, timeout_s=options.timeout_s,
                    connect_timeout_s=options.connect_timeout_s, answered_wait_s=options.give_up_after_s) as probe:
            contract = probe.contract
        started = time.perf_counter()
        walk = WalkStats()
        plan = sharded_out.plan_units(out, paths, recursive=recursive, follow_symlinks=follow_symlinks,
                                      unit_size=options.shard_size, stats=walk)
        timings.plan_s = time.perf_counter() - started
        summary.walk.skipped_symlinks = plan.skipped_symlinks
        if plan.units:
            from facialattr.client.ray_cluster import ray_session

            with ray_session(options.address) as startup_s:
                timings.startup_s = startup_s
                _drive(_pipeline(out, plan, urls, contract, options, progress=progress), summary, timings, plan,
                       progress)
        summary.elapsed_s = time.perf_counter() - started
        summary.complete = True
    return summary


def _pipeline(out: Path, plan, urls: list[str], contract, options: RayOptions, *, progress: bool):
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = False
    ctx.enable_progress_bars = progress  # Ray's per-operator progress, beside the command's own bar
    units = ray.data.range(plan.units, override_num_blocks=plan.units)
    decoded = units.map_batches(
        decode_units, batch_format="pyarrow", batch_size=1, num_cpus=1,
        fn_kwargs={"out": str(out), "preprocessing": contract.preprocessing, "limits": options.decode_limits()},
    )
    return decoded.map_batches(
        ScoreUnits, batch_format="pyarrow", batch_size=1, num_cpus=options.actor_cpus,
        compute=ray.data.ActorPoolStrategy(size=options.actors),
        fn_constructor_kwargs={"urls": urls, "out": str(out), "options": asdict(options)},
    )


def _drive(dataset, summary, timings: RayTimings, plan, progress: bool) -> None:
    """Consume the per-unit summaries: counters, the progress bar, errors from the cluster."""
    from tqdm import tqdm

    errors: Counter[str] = Counter()
    bar = tqdm(desc="scoring", unit="img", total=plan.inputs, file=sys.stderr, disable=not progress,
               dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 15.0)
    try:
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            for unit in batch.to_pylist():
                summary.already_done += unit["already_done"]
                summary.scored += unit["scored"]
                summary.failed += unit["failed"]
                errors.update(json.loads(unit["errors_by_kind"]))
                for name in ("decode_s", "infer_s", "write_s"):
                    setattr(timings, name, getattr(timings, name) + unit[name])
                bar.update(unit["already_done"] + unit["scored"] + unit["failed"])
    except Exception as exc:
        raise _facialattr_cause(exc) or exc from None
    finally:
        bar.close()
        summary.errors_by_kind = dict(errors)


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


def decode_units(batch, *, out: str, preprocessing, limits: dict[str, int]):
    """Ray task: unit numbers -> one row per unit with its prepared images (or its shard's size, when done)."""
    import pyarrow as pa

    from facialattr.client import sharded_out
    from facialattr.client.batching import decode_files

    rows = []
    for unit in batch.column("id").to_pylist():
        done = sharded_out.done_rows(Path(out), unit)
        row = {"unit": unit, "done_rows": -1 if done is None else done, "paths": [], "errors": [], "kinds": [],
               "images": b"", "decode_s": 0.0}
        if done is None:
            items = sharded_out.read_unit(Path(out), unit)
            decoded, row["decode_s"] = decode_files(items, preprocessing, limits)
            row["paths"] = [os.fsencode(item.path) for item in items]
            row["errors"] = [None if error is None else str(error) for _, error in decoded]
            row["kinds"] = [None if error is None else getattr(error, "kind", "input") for _, error in decoded]
            row["images"] = b"".join(image.tobytes() for image, _ in decoded if image is not None)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=_decoded_schema())


def _decoded_schema():
    import pyarrow as pa

    return pa.schema([("unit", pa.int64()), ("done_rows", pa.int64()), ("paths", pa.list_(pa.binary())),
                      ("errors", pa.list_(pa.string())), ("kinds", pa.list_(pa.string())),
                      ("images", pa.large_binary()), ("decode_s", pa.float64())])


class ScoreUnits:
    """Ray actor: scores decoded units through a Scorer over every endpoint and writes each unit's shard."""

    def __init__(self, *, urls: list[str], out: str, options: dict) -> None:
        from facialattr.client.parquet_out import parquet_schema
        from facialattr.client.results import RowMaker
        from facialattr.client.scorer import RetryPolicy, Scorer

        opts = RayOptions(**options)
        # Every actor talks to every endpoint: the Scorer sends to the least busy one and fails over when one dies.
        self.scorer = Scorer(urls, model_name=opts.model_name, timeout_s=opts.timeout_s, max_in_flight=opts.max_in_flight,
                             retry=RetryPolicy(give_up_after_s=opts.give_up_after_s),
                             connect_timeout_s=opts.connect_timeout_s, answered_wait_s=opts.give_up_after_s)
        self.out = Path(out)
        self.rows = RowMaker(self.scorer.contract)
        self.schema = parquet_schema(self.scorer.contract)

    def __call__(self, batch):
        import pyarrow as pa

        return pa.Table.from_pylist([self._unit(unit) for unit in batch.to_pylist()])

    def _unit(self, unit: dict) -> dict:
        import numpy as np

        from facialattr.client import sharded_out
        from facialattr.client.batching import EngineTimings, RequestGroup
        from facialattr.client.parquet_out import record_batch

        summary = {"unit": unit["unit"], "already_done": 0, "scored": 0, "failed": 0, "errors_by_kind": "{}",
                   "decode_s": unit["decode_s"], "infer_s": 0.0, "write_s": 0.0}
        if unit["done_rows"] >= 0:
            summary["already_done"] = unit["done_rows"]
            return summary
        h, w = self.scorer.contract.preprocessing.size_hw
        images = np.frombuffer(unit["images"], np.uint8).reshape(-1, h, w, 3)
        group, row = RequestGroup(), 0
        for raw, error, kind in zip(unit["paths"], unit["errors"], unit["kinds"], strict=True):
            if error is None:
                group.add(os.fsdecode(raw), images[row], None)
                row += 1
            else:
                group.add(os.fsdecode(raw), None, _DecodeFailure(error, kind))
        timings = EngineTimings()
        results = list(group.submit(self.scorer, timings).results(timings))
        rows = [self.rows.row(result) for result in results]
        started = time.perf_counter()
        sharded_out.write_shard(self.out, unit["unit"], _table(record_batch(rows, self.schema)))
        errors = Counter(result.error_kind or "input" for result in results if not result.ok)
        summary.update(scored=len(results) - sum(errors.values()), failed=sum(errors.values()),
                       errors_by_kind=json.dumps(errors), infer_s=timings.wait_infer_s,
                       write_s=time.perf_counter() - started)
        return summary

    def __del__(self) -> None:
        scorer = getattr(self, "scorer", None)
        if scorer is not None:
            scorer.close()


class _DecodeFailure(InputError):
    """A decode error carried across Ray as text; ``kind`` as the decoder gave it."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def _table(batch):
    import pyarrow as pa

    return pa.Table.from_batches([batch])
