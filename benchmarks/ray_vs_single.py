"""``facialattr score --engine ray`` against the single-process command, side by side in one run.

    python benchmarks/ray_vs_single.py --images DIR [--model-repository model_repository] [--count 2000]

Both sides are the real command (a subprocess) on the same JPEGs and the same embedded
Triton; the Ray side joins a Ray head this script starts beforehand (``ray start --head
--num-cpus <cores>``), as a user with a running cluster would. Runs alternate (single,
Ray, single, ...) after one warm-up each, so a noisy host hurts both alike; medians are
reported. Prints the ratios (the command's own images/s, and wall time from process
start to exit) and where the Ray side's time goes: joining the cluster, the walk, and,
summed over units, decode / inference / shard writes.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from facialattr.benchmarks.score_throughput import add_run_args, pick_files, run_cli
from facialattr.serving.embedded import start_on_free_ports

RAY_LINE = re.compile(r"ray engine: start ([\d.]+) s, walk ([\d.]+) s; summed over units: decode ([\d.]+) s, "
                      r"inference ([\d.]+) s, shard writes ([\d.]+) s")
SUMMARY = re.compile(r"(\d+) inputs this run in ([\d.]+) s \(([\d.]+) images/s\)")


def run_ray(folder: Path, out: Path, url: str, address: str, *, shard_size: int, actors: int) -> dict:
    """One ``--engine ray`` run: wall and own images/s, and the command's time split (seconds)."""
    command = [sys.executable, "-m", "facialattr.app.cli", "score", str(folder), "--out", str(out), "--url", url,
               "--follow-symlinks", "--overwrite", "--no-progress", "--engine", "ray", "--ray-address", address,
               "--shard-size", str(shard_size), "--ray-actors", str(actors)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    summary, split = SUMMARY.search(done.stderr), RAY_LINE.search(done.stderr)
    if done.returncode != 0 or not summary or not split:
        raise SystemExit(f"facialattr score --engine ray failed ({done.returncode}):\n{done.stderr[-3000:]}")
    n, elapsed = int(summary[1]), float(summary[2])
    start_s, walk_s = float(split[1]), float(split[2])
    return {"wall": n / wall, "own": float(summary[3]), "pipeline": n / max(elapsed - start_s - walk_s, 1e-9),
            "start_s": start_s, "walk_s": walk_s, "decode_s": float(split[3]), "infer_s": float(split[4]),
            "write_s": float(split[5]), "elapsed_s": elapsed, "process_s": wall}


def parse_args(argv=None) -> argparse.Namespace:
    """The shared run options (``add_run_args``) plus the Ray comparison's own."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(p)
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--ray-actors", type=int, default=2)
    p.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs the Ray head offers (default: all cores)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Command line (see the module docstring); returns the exit status 0."""
    import logging

    from facialattr.client.ray_cluster import start_ray_head, stop_ray_head

    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    files = pick_files(args.images, args.count)
    print(f"images: {len(files)} from {args.images}; cores: {os.cpu_count()}; ray head CPUs: {args.cpus}; "
          f"shard size {args.shard_size}; actors {args.ray_actors}; load average at start: {_load()}")
    with tempfile.TemporaryDirectory(prefix="ray-bench-", dir="/tmp") as tmp:
        tmp = Path(tmp)
        folder = tmp / "images"
        folder.mkdir()
        for path in files:
            (folder / path.name).symlink_to(path.resolve())
        (tmp / "ray-head").mkdir()
        server = start_on_free_ports(args.model_repository)
        head, address = start_ray_head(tmp / "ray-head", num_cpus=args.cpus)
        try:
            single, ray = _alternate(args, folder, tmp, server.config.grpc_url, address)
        finally:
            stop_ray_head(head)
            server.stop()
    _report(single, ray)
    print(f"load average at end: {_load()}")
    return 0


def _alternate(args, folder: Path, tmp: Path, url: str, address: str) -> tuple[list, list]:
    single_side = {"workers": 2, "max_in_flight": 4, "batch_size": None}  # the command's defaults
    ray_side = {"shard_size": args.shard_size, "actors": args.ray_actors}
    run_cli(folder, tmp / "warm.csv", url, **single_side)
    run_ray(folder, tmp / "warm-scores", url, address, **ray_side)  # starts the cluster's workers
    single, ray = [], []
    for i in range(args.repeats):
        single.append(run_cli(folder, tmp / "single.parquet", url, **single_side))
        ray.append(run_ray(folder, tmp / "scores", url, address, **ray_side))
        print(f"run {i + 1}/{args.repeats}: single {single[-1][1]:.0f} images/s (wall {single[-1][0]:.0f}); "
              f"ray {ray[-1]['own']:.0f} (wall {ray[-1]['wall']:.0f}, pipeline alone {ray[-1]['pipeline']:.0f}); "
              f"load {_load()}", flush=True)
    return single, ray


def _report(single: list, ray: list) -> None:
    med = statistics.median
    single_own, single_wall = med(s[1] for s in single), med(s[0] for s in single)
    ray_own, ray_wall, ray_pipe = (med(r[k] for r in ray) for k in ("own", "wall", "pipeline"))
    print(f"\nmedian images/s: single {single_own:.0f} (wall {single_wall:.0f}); "
          f"ray {ray_own:.0f} (wall {ray_wall:.0f}, pipeline alone {ray_pipe:.0f})")
    print(f"RATIO ray/single (each command's own rate): {ray_own / single_own:.2f}x")
    print(f"RATIO ray/single (wall, process start to exit): {ray_wall / single_wall:.2f}x")
    print(f"RATIO ray pipeline alone (without joining the cluster and the walk)/single: {ray_pipe / single_own:.2f}x")
    split = {k: med(r[k] for r in ray) for k in ("process_s", "elapsed_s", "start_s", "walk_s", "decode_s",
                                                  "infer_s", "write_s")}
    print("ray side, median seconds: process {process_s:.1f} (of which the command's run {elapsed_s:.1f}: joining "
          "the cluster {start_s:.1f}, walk {walk_s:.1f}); summed over units: decode {decode_s:.1f}, inference wait "
          "{infer_s:.1f}, shard writes {write_s:.1f}".format(**split))


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
