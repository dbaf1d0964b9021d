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

from facialattr.benchmarks.baselines import ort_throughput
from facialattr.benchmarks.load import LoadSpec, run_load
from facialattr.onnx_runtime import cpu_session


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def paired_rounds(onnx_path: Path, url: str, frames: np.ndarray, *, batch_size: int, users: int, threads: int,
                  bulk_batch_size: int | None = None, bulk_concurrency: int = 2, server_pid: int | None = None,
                  rounds: int = 3, duration_s: float = 4.0) -> dict[str, Any]:
    """Alternating windows; ratios of images/s and of images per CPU-second (client + server CPU)."""
    session = cpu_session(onnx_path, threads=threads)
    rows = []
    for _ in range(rounds):
        ort = ort_throughput(session, frames, batch_size, duration_s=duration_s)
        bulk_spec = LoadSpec(batch_size=bulk_batch_size or batch_size, concurrency=bulk_concurrency,
                             duration_s=duration_s)
        bulk = run_load(url, frames, bulk_spec,
                        server_pid=server_pid)
        crowd = run_load(url, frames, LoadSpec(batch_size=1, concurrency=users, duration_s=duration_s),
                         server_pid=server_pid)
        rows.append({
            "ort_images_per_s": ort.images_per_s, "ort_images_per_cpu_s": ort.images_per_cpu_s,
            "bulk": bulk.to_dict(), "users": crowd.to_dict(),
            "bulk_over_ort": bulk.images_per_s / ort.images_per_s,
            "users_over_bulk": crowd.images_per_s / bulk.images_per_s if bulk.images_per_s else 0.0,
            "bulk_over_ort_cpu": _ratio(bulk.images_per_cpu_s, ort.images_per_cpu_s),
            "users_over_bulk_cpu": _ratio(crowd.images_per_cpu_s, bulk.images_per_cpu_s),
        })
    return {
        "batch_size": batch_size, "users": users, "rounds": rows, "duration_s": duration_s,
        "bulk_batch_size": bulk_batch_size or batch_size, "bulk_concurrency": bulk_concurrency,
        "median_bulk_over_ort": statistics.median(r["bulk_over_ort"] for r in rows),
        "median_users_over_bulk": statistics.median(r["users_over_bulk"] for r in rows),
        "median_bulk_over_ort_cpu": _median(r["bulk_over_ort_cpu"] for r in rows),
        "median_users_over_bulk_cpu": _median(r["users_over_bulk_cpu"] for r in rows),
        "median_users_p99_ms": statistics.median(r["users"]["p99_ms"] for r in rows),
        "worst_users_p99_ms": max(r["users"]["p99_ms"] for r in rows),
        "errors": sum(r["bulk"]["errors"] + r["users"]["errors"] for r in rows),
    }
