"""``facialattr score``: bulk scoring of image files and folders over Triton gRPC."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from facialattr import MODEL_NAME
from facialattr.errors import EXIT_FATAL, EXIT_INTERRUPTED, EXIT_NO_INPUTS, EXIT_SOME_INPUTS_FAILED, InputError

DEFAULT_URL = os.environ.get("FACIALATTR_GRPC_URL", "127.0.0.1:8001")


def register(subparsers) -> None:
    """Add the ``score`` subcommand to the ``facialattr`` parser."""
    from facialattr.client.decode import DEFAULT_MAX_DECODE_BYTES, DEFAULT_MAX_FILE_BYTES
    from facialattr.client.endpoints import DEFAULT_CONNECT_TIMEOUT_S, REFUSED_GRACE_S

    p = subparsers.add_parser(
        "score", help="score image files and folders into a CSV, JSONL or Parquet file",
        description="One row per input: status, error, the 40 probabilities, present flags and the top-10. "
                    f"Exit status 0 when every input was scored, {EXIT_SOME_INPUTS_FAILED} when some failed "
                    f"(the summary names the first few), {EXIT_NO_INPUTS} when no image was found, "
                    f"{EXIT_FATAL} on a fatal error, {EXIT_INTERRUPTED} when interrupted. See docs/SCORING.md.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files and/or folders")
    p.add_argument("--out", required=True, type=Path, help="results file: .csv, .jsonl or .parquet")
    p.add_argument("--url", action="append", dest="urls", metavar="HOST:PORT",
                   help=f"Triton gRPC endpoint (the server's --grpc-port, not its HTTP port); repeat for several "
                        f"(default: {DEFAULT_URL}, or $FACIALATTR_GRPC_URL)")
    p.add_argument("--model-name", default=MODEL_NAME,
                   help="served model, e.g. facial_attributes_int8 (the INT8 variant, when the repository has it) "
                        "(default: %(default)s)")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into subfolders")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true",
                          help="continue an interrupted run: score only inputs not in --out (and rows the server failed)")
    existing.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--follow-symlinks", action="store_true", help="also follow links that lead outside the given folders")
    p.add_argument("--timeout", type=float, default=30.0, dest="timeout_s", metavar="SECONDS",
                   help="deadline of one inference request (default: %(default)s)")
    p.add_argument("--max-in-flight", type=int, default=4, help="concurrent requests (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="decode threads (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per request (default: the server's max_batch_size; larger values are capped to it)")
    p.add_argument("--connect-timeout", type=float, default=None, metavar="SECONDS",
                   help="give up this soon when no server has answered at all (wrong --url, no server) (default: "
                        f"{DEFAULT_CONNECT_TIMEOUT_S}, or {REFUSED_GRACE_S} when the connection is refused: nothing "
                        "listens there; pass it to wait for a server that is still starting)")
    p.add_argument("--give-up-after", type=float, default=300.0, metavar="SECONDS",
                   help="stop (resumable) when a server that answered stays unreachable this long (default: %(default)s)")
    p.add_argument("--max-file-bytes", type=int, default=DEFAULT_MAX_FILE_BYTES, metavar="BYTES",
                   help="larger files are error rows (too_large), refused before reading (default: %(default)s)")
    p.add_argument("--max-decode-bytes", type=int, default=DEFAULT_MAX_DECODE_BYTES, metavar="BYTES",
                   help="images whose decoded samples (pixels x channels x bytes per sample) exceed this are "
                        "error rows (too_large), refused from the header before decoding (default: %(default)s)")
    p.add_argument("--server-decode", action="store_true",
                   help="send each file's bytes and let the server decode, crop and resize (the model's bytes twin, "
                        "docs/SERVER_DECODE.md): the same rows as decoding here, fewer bytes sent, the decoding CPU "
                        "spent on the server")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress: the inputs are not counted first, and neither a bar (on a terminal) nor a "
                        "plain line every 10 s (otherwise) shows how far the run is")
    from facialattr.client.ray_engine import add_arguments as add_ray_arguments  # no Ray import until --engine ray

    add_ray_arguments(p)
    p.set_defaults(func=_score)


def _check(args: argparse.Namespace) -> None:
    if args.workers < 1 or args.max_in_flight < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise InputError("--workers, --max-in-flight and --batch-size must be at least 1")
    if args.max_file_bytes < 1 or args.max_decode_bytes < 1:
        raise InputError("--max-file-bytes and --max-decode-bytes must be at least 1")
    if (args.connect_timeout is not None and args.connect_timeout <= 0) or args.give_up_after <= 0:
        raise InputError("--connect-timeout and --give-up-after must be positive")


def _score(args: argparse.Namespace) -> int:
    import logging
    import signal

    from facialattr.client.batching import EngineConfig
    from facialattr.client.bulk import ScoringInterrupted, score_paths
    from facialattr.client.scorer import RetryPolicy, Scorer, ServerUnavailableError

    def _terminate(signum, frame):  # SIGTERM ends the run as cleanly as Ctrl-C: rows so far are flushed
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    log = logging.getLogger("facialattr.score")
    _check(args)
    retry = RetryPolicy(give_up_after_s=args.give_up_after)
    # One set of scorer settings for both engines: the Ray engine's actors build their Scorer from these too.
    scorer_kwargs = {"model_name": args.model_name, "timeout_s": args.timeout_s, "max_in_flight": args.max_in_flight,
                     "retry": retry, "connect_timeout_s": args.connect_timeout, "answered_wait_s": args.give_up_after,
                     "server_decode": args.server_decode}
    engine = EngineConfig(decode_workers=args.workers, batch_size=args.batch_size,
                          max_file_bytes=args.max_file_bytes, max_decode_bytes=args.max_decode_bytes)
    if args.engine == "ray":
        from facialattr.client.ray_cluster import require_ray
        from facialattr.client.ray_engine import run

        require_ray()
        return run(args, urls=args.urls or [DEFAULT_URL], scorer_kwargs=scorer_kwargs, engine=engine)
    try:
        scorer = Scorer(args.urls or [DEFAULT_URL], **scorer_kwargs)
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
        for line in exc.summary.lines():
            print(line, file=sys.stderr)
        log.error("%s", exc.summary.interrupted_line())
        return EXIT_INTERRUPTED
    finally:
        scorer.close()
    for line in summary.lines():
        print(line, file=sys.stderr)
    return summary.exit_code
