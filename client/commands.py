"""``facialattr score``: bulk scoring of image files and folders over Triton gRPC."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_URL = os.environ.get("FACIALATTR_GRPC_URL", "127.0.0.1:8001")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "score", help="score image files and folders into a CSV, JSONL or Parquet file",
        description="One row per input: status, error, the 40 probabilities, present flags and the top-10. "
                    "Exit status 0 when every input was scored, 3 when some failed, 1 on a fatal error.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files and/or folders")
    p.add_argument("--out", required=True, type=Path, help="results file: .csv, .jsonl or .parquet")
    p.add_argument("--url", action="append", dest="urls", metavar="HOST:PORT",
                   help=f"Triton gRPC endpoint; repeat for several (default: {DEFAULT_URL})")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into subfolders")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true", help="continue an interrupted run: score only inputs not in --out")
    existing.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--follow-symlinks", action="store_true", help="also follow links that lead outside the given folders")
    p.add_argument("--timeout", type=float, default=30.0, dest="timeout_s", metavar="SECONDS",
                   help="deadline of one inference request (default: %(default)s)")
    p.add_argument("--max-in-flight", type=int, default=4, help="concurrent requests (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="decode threads (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per request (default: the server's max_batch_size; larger values are capped to it)")
    p.add_argument("--give-up-after", type=float, default=300.0, metavar="SECONDS",
                   help="stop (resumable) when the server stays unreachable this long (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from facialattr.client.ray_engine import add_arguments as add_ray_arguments  # no Ray import until --engine ray

    add_ray_arguments(p)
    p.set_defaults(func=_score)


def _score(args: argparse.Namespace) -> int:
    import logging
    import signal

    from facialattr.client.batching import EngineConfig
    from facialattr.client.bulk import score_paths
    from facialattr.client.scorer import RetryPolicy, Scorer, ServerUnavailableError

    from facialattr.cli import EXIT_FATAL
    from facialattr.errors import InputError

    def _terminate(signum, frame):  # SIGTERM ends the run as cleanly as Ctrl-C: rows so far are flushed
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    if args.engine == "ray":
        from facialattr.client.ray_engine import run

        return run(args, urls=args.urls or [DEFAULT_URL])
    log = logging.getLogger("facialattr.score")
    if args.workers < 1 or args.max_in_flight < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise InputError("--workers, --max-in-flight and --batch-size must be at least 1")
    retry = RetryPolicy(give_up_after_s=args.give_up_after)
    scorer = Scorer(args.urls or [DEFAULT_URL], timeout_s=args.timeout_s, max_in_flight=args.max_in_flight,
                    retry=retry, connect_timeout_s=args.give_up_after)
    try:
        summary = score_paths(
            args.paths, out=args.out, recursive=args.recursive, resume=args.resume, overwrite=args.overwrite,
            follow_symlinks=args.follow_symlinks, progress=not args.no_progress,
            engine=EngineConfig(decode_workers=args.workers, batch_size=args.batch_size), scorer=scorer,
        )
    except ServerUnavailableError as exc:
        log.error("%s", exc)
        log.error("stopped; rows written so far are kept. Rerun with --resume once the server is back.")
        return EXIT_FATAL
    except KeyboardInterrupt:
        log.error("interrupted; rows written so far are kept. Rerun with --resume to finish.")
        return 130
    finally:
        scorer.close()
    for line in summary.lines():
        print(line, file=sys.stderr)
    return summary.exit_code
