"""Serving cost of the input size: ONNX Runtime images/s of the same network at several sizes, side by side.

Issue 11 weighs accuracy at 112, 128 and 160 px against serving throughput. Speed depends on
the architecture and the input size, not on the weights, so each size's stand-in
(:mod:`facialattr.benchmarks.standin`, published by the real exporter) is timed on the same
face JPEGs prepared at its size, in interleaved rounds so that all sizes see the same machine
load, with the session settings the served model uses. Prints images/s and the ratio to 128 px
(or to the first size when 128 is not measured).

    python benchmarks/input_size.py --images DIR [--sizes 112 128 160]
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np

from facialattr.benchmarks.images import benchmark_images
from facialattr.benchmarks.standin import DEFAULT_STANDIN_DIR, build_standin
from facialattr.contract import Preprocessing
from facialattr.export.quantize import interleaved_throughput
from facialattr.onnx_runtime import cpu_session

log = logging.getLogger(__name__)

REFERENCE_SIZE = 128


def measure(sizes: list[int], images_dir, *, batch_size: int, rounds: int, limit: int,
            standin_dir=DEFAULT_STANDIN_DIR) -> dict[int, float]:
    """Median images/s per input size, rounds interleaved across sizes."""
    sessions, batches = [], []
    for size in sizes:
        sessions.append(cpu_session(build_standin(standin_dir, size=size).onnx_path))
        images = benchmark_images(images_dir, Preprocessing(size_hw=(size, size)), limit=limit)
        batches.append(np.resize(images, (batch_size, *images.shape[1:])))
    speeds = interleaved_throughput(sessions, batches, rounds=rounds, images_per_round=512)
    return dict(zip(sizes, speeds, strict=True))


def main(argv: list[str] | None = None) -> int:
    """Print a markdown table of images/s per input size and the ratio to 128 px, with the load average."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="folder of face JPEGs (CelebA aligned framing)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 128, 160])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--limit", type=int, default=256, help="JPEGs to prepare per size")
    parser.add_argument("--standin-dir", type=Path, default=DEFAULT_STANDIN_DIR, help="where the stand-ins are built")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    load_before = os.getloadavg()[0]
    speeds = measure(args.sizes, args.images, batch_size=args.batch_size, rounds=args.rounds, limit=args.limit,
                     standin_dir=args.standin_dir)
    reference_size = REFERENCE_SIZE if REFERENCE_SIZE in speeds else args.sizes[0]
    reference = speeds[reference_size]
    print(f"ONNX Runtime, batch {args.batch_size}, median of {args.rounds} interleaved rounds; "
          f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"| input | images/s | vs {reference_size} px |\n| --- | --- | --- |")
    for size, speed in speeds.items():
        print(f"| {size}x{size} | {speed:.1f} | {speed / reference:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
