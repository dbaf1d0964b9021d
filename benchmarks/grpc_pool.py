"""What the shipped ``grpc_infer_allocation_pool_size=0`` costs: Triton throughput with and without a pool.

The embedded server frees every gRPC request object after its reply, because a pooled one keeps
the memory of the largest request it ever held (SECURITY.md). Reuse saves an allocation per
request; this measures what that is worth for this model: two embedded servers on the same
repository, one per pool size, loaded in alternating windows so both see the same machine load.
Prints images/s per round and the median ratio, with the load average.

    python benchmarks/grpc_pool.py --images DIR [--pool-sizes 0 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
from pathlib import Path

from facialattr.app import flags
from facialattr.benchmarks.images import benchmark_images
from facialattr.benchmarks.load import LoadSpec, run_load
from facialattr.benchmarks.sweep import server_contract
from facialattr.serving.embedded import start_on_free_ports

log = logging.getLogger(__name__)


def measure(model_repository: Path, images_dir, *, pool_sizes: list[int], spec: LoadSpec, rounds: int,
            limit: int) -> dict[int, list[float]]:
    """images/s per pool size and round; within a round the servers are loaded one after the other."""
    with contextlib.ExitStack() as stack:
        servers = {}
        for size in pool_sizes:
            server = start_on_free_ports(model_repository, grpc_infer_allocation_pool_size=size)
            stack.callback(server.stop)
            servers[size] = server
        first = servers[pool_sizes[0]]
        images = benchmark_images(images_dir, server_contract(first.config.grpc_url).contract.preprocessing, limit=limit)
        speeds: dict[int, list[float]] = {size: [] for size in pool_sizes}
        for round_index in range(rounds):
            # Alternate the order so neither server always runs right after the other's load.
            order = pool_sizes if round_index % 2 == 0 else pool_sizes[::-1]
            for size in order:
                result = run_load(servers[size].config.grpc_url, images, spec)
                speeds[size].append(result.images_per_s)
                log.info("round %d, pool %d: %.1f images/s", round_index + 1, size, result.images_per_s)
    return speeds


def main(argv: list[str] | None = None) -> int:
    """Print a markdown table of images/s per pool size and round, and the median ratio to the first size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    flags.add_model_repository(parser)
    parser.add_argument("--images", required=True, help="folder of face JPEGs (CelebA aligned framing)")
    parser.add_argument("--pool-sizes", type=int, nargs="+", default=[0, 8])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration-s", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--limit", type=int, default=256, help="JPEGs decoded once and sent over and over")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    load_before = os.getloadavg()[0]
    spec = LoadSpec(batch_size=args.batch_size, concurrency=args.concurrency, duration_s=args.duration_s)
    speeds = measure(flags.model_repository(args), args.images, pool_sizes=args.pool_sizes, spec=spec,
                     rounds=args.rounds, limit=args.limit)
    reference = args.pool_sizes[0]
    print(f"Triton gRPC, batch {spec.batch_size} x {spec.concurrency} clients, {spec.duration_s:g} s windows, "
          f"{args.rounds} alternating rounds; load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"| grpc_infer_allocation_pool_size | images/s per round | median | vs {reference} (median of round ratios) |")
    print("| --- | --- | --- | --- |")
    for size, values in speeds.items():
        ratio = statistics.median(v / r for v, r in zip(values, speeds[reference], strict=True))
        print(f"| {size} | {' / '.join(f'{v:.1f}' for v in values)} | {statistics.median(values):.1f} | {ratio:.3f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
