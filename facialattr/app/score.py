"""``facialattr score``: bulk scoring of image files and folders over Triton gRPC.

The work is :func:`facialattr.client.bulk.score_paths` (this process) or
:func:`facialattr.client.ray_engine.score_paths_ray` (``--engine ray``), both given the same
:class:`~facialattr.client.settings.ScorerSettings` and
:class:`~facialattr.client.batching.EngineConfig`; this module parses the flags, prints the
summary and turns the outcome into the exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from facialattr import defaults
from facialattr.app import flags
from facialattr.errors import EXIT_FATAL, EXIT_INTERRUPTED, ServerUnavailableError

if TYPE_CHECKING:
    from facialattr.client.batching import EngineConfig
    from facialattr.client.settings import ScorerSettings

log = logging.getLogger("facialattr.score")


def register(subparsers) -> None:
    """Add the ``score`` subcommand to the ``facialattr`` parser."""
    # Light modules (their defaults are shown in --help); Ray itself is imported only when --engine ray runs.
    from facialattr.client.ray_engine import DEFAULT_SHARD_SIZE, ENGINES, RayOptions
    from facialattr.decoding import DEFAULT_MAX_DECODE_BYTES, DEFAULT_MAX_FILE_BYTES

    p = subparsers.add_parser(
        "score", help="score image files and folders into a CSV, JSONL or Parquet file",
        description="One row per input: status, error, the 40 probabilities, present flags and the top-10. "
                    + flags.scoring_exit_statuses() + " See docs/SCORING.md.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files and/or folders")
    p.add_argument("--out", required=True, type=Path, help="results file: .csv, .jsonl or .parquet")
    flags.add_scorer_flags(p)
    p.add_argument("--recursive", "-r", action="store_true", help="descend into subfolders")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true",
                          help="continue an interrupted run: score only inputs not in --out (and rows the server failed)")
    existing.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--follow-symlinks", action="store_true", help="also follow links that lead outside the given folders")
    p.add_argument("--workers", type=flags.at_least_one, default=defaults.DECODE_WORKERS,
                   help="decode threads (default: %(default)s)")
    p.add_argument("--batch-size", type=flags.at_least_one, default=None,
                   help="images per request (default: the server's max_batch_size; larger values are capped to it)")
    p.add_argument("--max-file-bytes", type=flags.at_least_one, default=DEFAULT_MAX_FILE_BYTES, metavar="BYTES",
                   help="larger files are error rows (too_large), refused before reading (default: %(default)s)")
    p.add_argument("--max-decode-bytes", type=flags.at_least_one, default=DEFAULT_MAX_DECODE_BYTES, metavar="BYTES",
                   help="images whose decoded samples (pixels x channels x bytes per sample) exceed this are "
                        "error rows (too_large), refused from the header before decoding (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress: the inputs are not counted first, and neither a bar (on a terminal) nor a "
                        "plain line every 10 s (otherwise) shows how far the run is")

    ray = p.add_argument_group("Ray engine (--engine ray; needs the 'ray' extra)")
    ray.add_argument("--engine", choices=ENGINES, default="local",
                     help="local: this process (default); ray: the same scoring on every CPU of a Ray cluster, "
                          "--out is a folder of shards")
    ray.add_argument("--ray-address", metavar="HOST:PORT",
                     help="a running Ray cluster's GCS address (default: start a private Ray instance on this machine)")
    ray.add_argument("--shard-size", type=flags.at_least_one, default=DEFAULT_SHARD_SIZE, metavar="N",
                     help="inputs per Parquet shard (default: %(default)s)")
    ray.add_argument("--ray-actors", type=flags.at_least_one, default=None, metavar="N",
                     help="scoring actors, each a whole single-process scorer (default: one per CPU of the cluster)")
    ray.add_argument("--ray-actor-cpus", type=float, default=RayOptions.actor_cpus, metavar="CPUS",
                     help="CPUs each scoring actor reserves (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``facialattr score``: score the inputs with the chosen engine; the exit status."""
    from facialattr.client.batching import EngineConfig

    # One set of settings for both engines: the Ray engine's actors open their Scorer from these too.
    settings = flags.scorer_settings(args)
    engine = EngineConfig(decode_workers=args.workers, batch_size=args.batch_size,
                          max_file_bytes=args.max_file_bytes, max_decode_bytes=args.max_decode_bytes)
    if args.engine == "ray":
        return _score_on_ray(args, settings, engine)
    return _score_here(args, settings, engine)


def _score_here(args: argparse.Namespace, settings: ScorerSettings, engine: EngineConfig) -> int:
    from facialattr.client.bulk import ScoringInterrupted, score_paths
    from facialattr.client.scorer import Scorer

    try:
        scorer = Scorer.from_settings(settings)
    except ServerUnavailableError as exc:
        log.error("%s", exc)
        return EXIT_FATAL
    try:
        summary = score_paths(
            args.paths, out=args.out, recursive=args.recursive, resume=args.resume, overwrite=args.overwrite,
            follow_symlinks=args.follow_symlinks, progress=not args.no_progress, engine=engine, scorer=scorer,
        )
    except ServerUnavailableError as exc:
        log.error("%s", exc)
        log.error("stopped; rows written so far are kept. Rerun with --resume once the server is back.")
        return EXIT_FATAL
    except ScoringInterrupted as exc:
        _print(exc.summary.lines())
        log.error("%s", exc.summary.interrupted_line())
        return EXIT_INTERRUPTED
    finally:
        scorer.close()
    _print(summary.lines())
    return summary.exit_code


def _score_on_ray(args: argparse.Namespace, settings: ScorerSettings, engine: EngineConfig) -> int:
    from facialattr.client.ray_cluster import require_ray
    from facialattr.client.ray_engine import RayOptions, score_paths_ray

    require_ray()
    options = RayOptions(address=args.ray_address, shard_size=args.shard_size, actors=args.ray_actors,
                         actor_cpus=args.ray_actor_cpus)
    try:
        summary, timings = score_paths_ray(
            args.paths, out=args.out, settings=settings, recursive=args.recursive, resume=args.resume,
            overwrite=args.overwrite, follow_symlinks=args.follow_symlinks, progress=not args.no_progress,
            options=options, engine=engine)
    except ServerUnavailableError as exc:
        log.error("%s", exc)
        log.error("stopped; shards written so far are kept. Rerun with --resume once the server is back.")
        return EXIT_FATAL
    except KeyboardInterrupt:
        log.error("interrupted; shards written so far are kept. Rerun with --resume to finish.")
        return EXIT_INTERRUPTED
    _print([*summary.lines(), timings.line()])
    return summary.exit_code


def _print(lines: list[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr)
