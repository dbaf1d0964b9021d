"""Ratios measured side by side: short alternating windows instead of one long window each.

On a shared machine other jobs come and go over minutes; alternating
ONNX Runtime in-process, Triton bulk and Triton concurrent-users windows, round
after round, lets each ratio compare numbers taken seconds apart. The targets
use the median ratio over the rounds; every round is kept in the results.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np
from facialattr.benchmarks.baselines import ort_session, ort_throughput
from facialattr.benchmarks.load import LoadSpec, run_load


def paired_rounds(onnx_path: Path, url: str, frames: np.ndarray, *, batch_size: int, users: int, threads: int,
                  rounds: int = 3, duration_s: float = 4.0) -> dict[str, Any]:
    session = ort_session(onnx_path, threads=threads)
    rows = []
    for _ in range(rounds):
        ort = ort_throughput(session, frames, batch_size, duration_s=duration_s)
        bulk = run_load(url, frames, LoadSpec(batch_size=batch_size, concurrency=2, duration_s=duration_s))
        crowd = run_load(url, frames, LoadSpec(batch_size=1, concurrency=users, duration_s=duration_s))
        rows.append({
            "ort_images_per_s": ort.images_per_s, "bulk": bulk.to_dict(), "users": crowd.to_dict(),
            "bulk_over_ort": bulk.images_per_s / ort.images_per_s,
            "users_over_bulk": crowd.images_per_s / bulk.images_per_s if bulk.images_per_s else 0.0,
        })
    return {
        "batch_size": batch_size, "users": users, "rounds": rows, "duration_s": duration_s,
        "median_bulk_over_ort": statistics.median(r["bulk_over_ort"] for r in rows),
        "median_users_over_bulk": statistics.median(r["users_over_bulk"] for r in rows),
        "median_users_p99_ms": statistics.median(r["users"]["p99_ms"] for r in rows),
        "worst_users_p99_ms": max(r["users"]["p99_ms"] for r in rows),
        "errors": sum(r["bulk"]["errors"] + r["users"]["errors"] for r in rows),
    }
