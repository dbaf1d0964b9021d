"""``facialattr bench``: batch size x concurrency sweep against Triton (imports nothing heavy here)."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from facialattr.app import flags
from facialattr.errors import EXIT_OK, EXIT_SOME_INPUTS_FAILED


def register(subparsers) -> None:
    """Add ``facialattr bench`` (exit status 0, or EXIT_SOME_INPUTS_FAILED when requests failed)."""
    p = subparsers.add_parser(
        "bench", help="measure throughput and p50/p95/p99 latency over client batch size x concurrency",
        description="Closed-loop gRPC load against Triton: one point per (batch size, concurrency), with the "
                    "server's own queue/compute times and formed batch sizes. Writes sweep.json and sweep.png. "
                    "Without --url the embedded server is started on --model-repository (its settings may be "
                    "overridden for the run with --instances/--threads/--queue-delay-us; the repository is not changed). "
                    "For the full comparison with baselines use benchmarks/run_all.py.",
    )
    flags.add_url(p, help_default="start the embedded server on --model-repository; the sweep measures one endpoint")
    flags.add_model_repository(p, what="repository the embedded server serves when no --url is given")
    p.add_argument("--images", type=Path, metavar="DIR",
                   help="face images to send, decoded once before the sweep (default: random frames)")
    p.add_argument("--limit", type=int, default=2000, help="images used from --images (default: %(default)s)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64], metavar="N")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], metavar="N")
    p.add_argument("--duration-s", type=float, default=5.0, help="measured seconds per point (default: %(default)s)")
    p.add_argument("--warmup-s", type=float, default=1.0, help="unmeasured seconds before each point")
    p.add_argument("--instances", type=int, help="embedded server: model instances")
    p.add_argument("--threads", type=int, help="embedded server: ONNX Runtime intra-op threads per instance")
    p.add_argument("--queue-delay-us", type=int, help="embedded server: dynamic batching max_queue_delay_microseconds")
    p.add_argument("--out", type=Path, default=Path("out/bench"), help="output folder (default: %(default)s)")
    p.set_defaults(func=functools.partial(_bench, usage_error=p.error))


def _bench(args: argparse.Namespace, *, usage_error: Callable[[str], NoReturn]) -> int:
    urls = args.urls or []
    if len(urls) > 1:
        # One point is one server's throughput; spreading the load over several would measure none of them.
        usage_error(f"the sweep measures one endpoint: give --url once (got {len(urls)}: {', '.join(urls)})")
    from facialattr.benchmarks.sweep import sweep_command

    result = sweep_command(
        url=urls[0] if urls else None, model_repository=flags.model_repository(args), images_dir=args.images,
        limit=args.limit, batch_sizes=args.batch_sizes, concurrencies=args.concurrency, duration_s=args.duration_s,
        warmup_s=args.warmup_s, out=args.out,
        overrides={"instances": args.instances, "intra_op_threads": args.threads,
                   "max_queue_delay_us": args.queue_delay_us},
    )
    print(f"wrote {result['json']} and {result['png']}")
    # Some requests failed: the same status as a scoring run where some inputs failed.
    return EXIT_OK if result["errors"] == 0 else EXIT_SOME_INPUTS_FAILED
