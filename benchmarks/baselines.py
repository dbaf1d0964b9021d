"""The numbers Triton serving is judged against, measured on the same images in the same run.

(a) the in-process ceiling: ONNX Runtime on pre-decoded batches, no server;
(b) a Keras ``model.predict`` over a tf.data folder pipeline (what a user writes instead);
(c) the seed's one-process-per-image way, timed on a small sample and extrapolated.
Plus the product's own bulk path: JPEG folder -> client decode -> Triton, pipelined.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facialattr.benchmarks.cpu import CpuMeter
from facialattr.errors import FacialAttrError
from facialattr.onnx_runtime import cpu_session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Throughput:
    """One measured way of scoring: ``images`` in ``seconds`` wall time (``images_per_s``), with its CPU seconds when known."""

    name: str
    images: int
    seconds: float
    images_per_s: float
    batch_size: int | None = None
    extrapolated: bool = False
    note: str = ""
    cpu_s: float | None = None  # CPU seconds of everything involved (this process, children, local server)

    @property
    def images_per_cpu_s(self) -> float | None:
        """Images per CPU second (client + local server), or None when CPU time was not measured."""
        return self.images / self.cpu_s if self.cpu_s else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record, with the derived images per CPU second."""
        return {**asdict(self), "images_per_cpu_s": self.images_per_cpu_s}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Throughput:
        """The inverse of :meth:`to_dict` (derived fields dropped)."""
        return cls(**{k: v for k, v in d.items() if k != "images_per_cpu_s"})


def ort_throughput(session, images: np.ndarray, batch_size: int, *, duration_s: float) -> Throughput:
    """Images/s of one ONNX Runtime session at one batch size (after one warm-up batch)."""
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    session.run([output_name], {input_name: images[:batch_size]})
    done, cursor, start, cpu_start = 0, 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < duration_s:
        idx = np.arange(cursor, cursor + batch_size) % len(images)
        cursor = (cursor + batch_size) % len(images)
        session.run([output_name], {input_name: images[idx]})
        done += batch_size
    elapsed, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    log.info("ONNX Runtime in-process batch %d: %.1f images/s", batch_size, done / elapsed)
    return Throughput(f"onnxruntime in-process, batch {batch_size}", done, elapsed, done / elapsed,
                      batch_size=batch_size, cpu_s=cpu_s)


def ort_in_process(onnx_path: Path, images: np.ndarray, batch_sizes: list[int], *, threads: int,
                   duration_s: float = 4.0) -> list[Throughput]:
    """ONNX Runtime in this process on pre-decoded ``images``, one ``Throughput`` per batch size.

    ``threads`` intra-op threads (as the served model), ``duration_s`` measured seconds per batch size.
    Raises onnxruntime's errors when ``onnx_path`` cannot be loaded.
    """
    session = cpu_session(onnx_path, threads=threads)
    return [ort_throughput(session, images, b, duration_s=duration_s) for b in batch_sizes]


def _run_json(args: list[str], *, timeout_s: float) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "facialattr.benchmarks.keras_baseline", *args],
                          capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise FacialAttrError(f"keras baseline failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def keras_predict_loop(keras_path: Path, files: list[Path], *, size: int, batch_size: int = 32,
                       timeout_s: float = 1800) -> Throughput:
    """model.predict over a tf.data pipeline that decodes the same JPEGs (in a separate process)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as listing:
        listing.write("\n".join(str(f) for f in files))
        listing.flush()
        out = _run_json(["predict-loop", "--model", str(keras_path), "--file-list", listing.name,
                         "--size", str(size), "--batch-size", str(batch_size)], timeout_s=timeout_s)
    log.info("Keras predict loop: %.1f images/s", out["images_per_s"])
    return Throughput("Keras model.predict over tf.data (decode included)", out["images"], out["seconds"],
                      out["images_per_s"], batch_size=batch_size,
                      note=f"model load {out['model_load_s']:.1f} s not counted", cpu_s=out["cpu_s"])


def per_image_process(keras_path: Path, files: list[Path], *, size: int, sample: int = 5,
                      extrapolate_to: int, timeout_s: float = 300) -> Throughput:
    """Wall time of one fresh process per image over ``sample`` images, extrapolated to ``extrapolate_to``."""
    start, cpu_start = time.perf_counter(), CpuMeter().read()
    for f in files[:sample]:
        _run_json(["one-image", "--model", str(keras_path), "--image", str(f), "--size", str(size)],
                  timeout_s=timeout_s)
    elapsed, cpu_s = time.perf_counter() - start, CpuMeter().read() - cpu_start
    per_image_s = elapsed / sample
    log.info("one process per image: %.2f s per image", per_image_s)
    return Throughput("one process per image (seed's run.py way)", extrapolate_to, per_image_s * extrapolate_to,
                      1.0 / per_image_s, batch_size=1, extrapolated=True, cpu_s=cpu_s / sample * extrapolate_to,
                      note=f"measured on {sample} images ({per_image_s:.2f} s each), extrapolated to {extrapolate_to}")


def bulk_scoring(url: str, files: list[Path], *, batch_size: int | None = None,
                 server_pid: int | None = None) -> Throughput:
    """The product's bulk path (client.batching.score_files, its defaults): decode overlaps inference."""
    from facialattr.client.batching import EngineConfig, EngineTimings, score_files
    from facialattr.client.scorer import Scorer
    from facialattr.client.settings import ScorerSettings

    timings = EngineTimings()
    meter = CpuMeter(server_pid)
    with Scorer.from_settings(ScorerSettings(urls=url)) as scorer:
        start, cpu_start = time.perf_counter(), meter.read()
        results = list(score_files(files, scorer, config=EngineConfig(batch_size=batch_size), timings=timings))
        elapsed, cpu_s = time.perf_counter() - start, meter.read() - cpu_start
    failed = [r for r in results if not r.ok]
    if failed:
        raise FacialAttrError(f"bulk scoring failed on {len(failed)} images, e.g. {failed[0].error}")
    sizes = ", ".join(f"{n} x {b}" for b, n in sorted(timings.batch_sizes.items()))
    log.info("bulk scoring through Triton: %.1f images/s", len(results) / elapsed)
    return Throughput("facialattr bulk scoring via Triton (decode included)", len(results), elapsed,
                      len(results) / elapsed, batch_size=max(timings.batch_sizes, default=None),
                      note=f"client.batching.score_files defaults; batches sent: {sizes}",
                      cpu_s=cpu_s if server_pid is not None else None)
