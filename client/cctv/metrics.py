"""What the watcher measures: processed fps, faces/s, frame latency, batch sizes.

Logged every few seconds; also served as Prometheus metrics on this machine (defaults.HOST) when
``--metrics-port`` asks. "Server batch sizes" are the batches Triton's dynamic
batcher actually formed, read from the server's statistics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from facialattr import MODEL_NAME, defaults
from facialattr.client import serverstats

log = logging.getLogger(__name__)


def server_batch_counts(url: str, model_name: str = MODEL_NAME) -> Counter[int]:
    """{batch size: executions} Triton has run for the model since it loaded.

    Read through ``client/serverstats.py``; raises tritonclient's InferenceServerException
    when the server at ``url`` cannot answer.
    """
    return Counter(serverstats.read(url, model_name).batch_executions)


@dataclass
class Snapshot:
    """The watcher's counters at one moment: totals since start, rates per second, frame latency in ms."""

    elapsed_s: float
    frames: int
    faces: int
    scored: int
    dropped: int
    requests: int
    fps: float
    faces_per_s: float
    latency_p50_ms: float
    latency_p95_ms: float
    mean_request_batch: float

    def line(self) -> str:
        """One log line with the rates, counts and latency percentiles."""
        return (f"{self.fps:.1f} frames/s, {self.faces_per_s:.1f} faces/s, {self.frames} frames "
                f"({self.dropped} dropped), {self.scored} crops scored in {self.requests} requests "
                f"(mean {self.mean_request_batch:.1f}/request), latency p50 {self.latency_p50_ms:.0f} ms "
                f"p95 {self.latency_p95_ms:.0f} ms")


class WatchMetrics:
    """Thread-safe counters; ``serve(port)`` exposes them to Prometheus."""

    def __init__(self, *, latency_window: int = 2000) -> None:
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self.frames = 0
        self.faces = 0
        self.scored = 0
        self.requests = 0
        self.dropped = 0
        self._latencies_ms: deque[float] = deque(maxlen=latency_window)
        self._prom = None

    def serve(self, port: int, *, host: str = defaults.HOST) -> int:
        """Expose the counters on http://HOST:PORT/metrics from a daemon thread; port 0 picks a free one.

        Returns the port bound (logged too), so a caller never has to probe for a free port first.
        Raises OSError when the port cannot be bound.
        """
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

        registry = CollectorRegistry()
        self._prom = {
            "frames": Counter("facialattr_cctv_frames", "frames processed", ["camera"], registry=registry),
            "dropped": Gauge("facialattr_cctv_frames_dropped", "frames skipped to stay real-time", ["camera"], registry=registry),
            "faces": Counter("facialattr_cctv_faces", "faces detected", ["camera"], registry=registry),
            "latency": Histogram("facialattr_cctv_frame_latency_seconds", "frame read to events written", registry=registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)),
            "batch": Histogram("facialattr_cctv_request_batch_size", "face crops per inference request", registry=registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64)),
            "server_batch": Gauge("facialattr_cctv_server_mean_batch", "mean batch Triton formed", registry=registry),
        }
        httpd, _ = start_http_server(port, addr=host, registry=registry)
        bound = httpd.server_port
        log.info("Prometheus metrics on http://%s:%d/metrics", host, bound)
        return bound

    def frame(self, camera: str, *, faces: int, latency_s: float) -> None:
        """Count one processed frame of ``camera`` with its ``faces`` and read-to-written latency (seconds)."""
        with self._lock:
            self.frames += 1
            self.faces += faces
            self._latencies_ms.append(latency_s * 1000)
        if self._prom:
            self._prom["frames"].labels(camera).inc()
            self._prom["faces"].labels(camera).inc(faces)
            self._prom["latency"].observe(latency_s)

    def request(self, batch_size: int) -> None:
        """Count one inference request of ``batch_size`` face crops."""
        with self._lock:
            self.requests += 1
            self.scored += batch_size
        if self._prom:
            self._prom["batch"].observe(batch_size)

    def set_dropped(self, per_camera: dict[str, int]) -> None:
        """Frames skipped so far to stay real-time, per camera."""
        with self._lock:
            self.dropped = sum(per_camera.values())
        if self._prom:
            for camera, n in per_camera.items():
                self._prom["dropped"].labels(camera).set(n)

    def set_server_mean_batch(self, value: float) -> None:
        """The mean batch size Triton formed (exported only when metrics are served)."""
        if self._prom:
            self._prom["server_batch"].set(value)

    def snapshot(self) -> Snapshot:
        """The counters now, with rates over the time since this object was created."""
        with self._lock:
            elapsed = max(1e-9, time.monotonic() - self._start)
            lat = np.asarray(self._latencies_ms) if self._latencies_ms else np.zeros(1)
            return Snapshot(
                elapsed, self.frames, self.faces, self.scored, self.dropped, self.requests,
                self.frames / elapsed, self.faces / elapsed,
                float(np.percentile(lat, 50)), float(np.percentile(lat, 95)),
                self.scored / self.requests if self.requests else 0.0,
            )
