"""Closed-loop gRPC load on a Triton server: N clients, each sending a batch and waiting for it.

This is the measuring core of ``facialattr bench``. Every client thread owns its
own gRPC channel (as separate processes or cameras would); latency is measured
per request on the client, and the server's statistics for the same window say
how much of it was queueing, computing and which batches the dynamic batcher formed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from facialattr import MODEL_NAME, defaults, triton_config
from facialattr.benchmarks.cpu import CpuMeter
from facialattr.client import serverstats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadSpec:
    """One load point: ``concurrency`` closed-loop clients sending ``batch_size`` images, ``duration_s`` measured
    after ``warmup_s`` seconds; a request taking over ``timeout_s`` seconds counts as an error.
    """

    batch_size: int
    concurrency: int
    duration_s: float = 5.0
    warmup_s: float = 1.0
    timeout_s: float = defaults.REQUEST_TIMEOUT_S


@dataclass(frozen=True)
class LoadResult:
    """What one load point measured: client latencies in ms, images/s over the window, errors, and
    the server's own statistics for the same window (``server``, None when not read).
    """

    batch_size: int
    concurrency: int
    duration_s: float
    requests: int
    errors: int
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    server: serverstats.ServerStats | None
    # CPU seconds of the load generator + the server's process tree in the window (None: server not local)
    cpu_s: float | None = None

    @property
    def images_per_cpu_s(self) -> float | None:
        """Images per CPU second of load generator + server, or None when the server is not local."""
        return self.requests * self.batch_size / self.cpu_s if self.cpu_s else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record, with the server's statistics when they were read."""
        d = asdict(self)
        d["server"] = self.server.to_dict() if self.server else None
        d["images_per_cpu_s"] = self.images_per_cpu_s
        return d


def percentiles_ms(latencies_s: list[float]) -> tuple[float, float, float, float]:
    """(p50, p95, p99, mean) in milliseconds; NaN when nothing was measured."""
    if not latencies_s:
        return (float("nan"),) * 4  # type: ignore[return-value]
    ms = np.asarray(latencies_s) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return float(p50), float(p95), float(p99), float(ms.mean())


class _Worker(threading.Thread):
    def __init__(self, url: str, images: np.ndarray, spec: LoadSpec, *, offset: int, model_name: str,
                 served: triton_config.ModelConfig, stop_at: float) -> None:
        super().__init__(daemon=True)
        self.url, self.images, self.spec, self.offset = url, images, spec, offset
        self.model_name, self.served, self.stop_at = model_name, served, stop_at
        # (finish time, latency) per successful request; errors counted by finish time
        self.done: list[tuple[float, float]] = []
        self.failed: list[float] = []
        self.first_error: str | None = None

    def run(self) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.url)
        n, b = len(self.images), self.spec.batch_size
        cursor = self.offset
        output = [grpcclient.InferRequestedOutput(self.served.output_name)]
        try:
            while time.perf_counter() < self.stop_at:
                idx = np.arange(cursor, cursor + b) % n
                cursor = (cursor + b) % n
                batch = self.images[idx]
                tensor = grpcclient.InferInput(self.served.input_name, list(batch.shape), "UINT8")  # the contract's pixels
                tensor.set_data_from_numpy(batch)
                start = time.perf_counter()
                try:
                    client.infer(self.model_name, [tensor], outputs=output, client_timeout=self.spec.timeout_s)
                except Exception as exc:  # noqa: BLE001 - an error is a measured outcome, not a crash
                    self.failed.append(time.perf_counter())
                    self.first_error = self.first_error or str(exc)
                    continue
                end = time.perf_counter()
                self.done.append((end, end - start))
        finally:
            client.close()


def run_load(url: str, images: np.ndarray, spec: LoadSpec, *, model_name: str = MODEL_NAME,
             server_pid: int | None = None) -> LoadResult:
    """Drive ``spec.concurrency`` closed-loop clients for warm-up + duration; measure the window after warm-up.

    With ``server_pid`` (a local server) the CPU time of client + server in the window is recorded too.
    """
    import tritonclient.grpc as grpcclient

    if len(images) < spec.batch_size:
        raise ValueError(f"need at least {spec.batch_size} images, have {len(images)}")
    stride = max(1, len(images) // spec.concurrency)
    with grpcclient.InferenceServerClient(url) as stats_client:
        # Tensor names as the server's own config declares them (parsed as every client parses it).
        served = triton_config.ModelConfig.from_proto(
            stats_client.get_model_config(model_name, client_timeout=spec.timeout_s).config)
        window_start = time.perf_counter() + spec.warmup_s
        window_end = window_start + spec.duration_s
        workers = [_Worker(url, images, spec, offset=i * stride, model_name=model_name, served=served,
                           stop_at=window_end) for i in range(spec.concurrency)]
        for w in workers:
            w.start()
        time.sleep(max(0.0, window_start - time.perf_counter()))
        meter = CpuMeter(server_pid)
        cpu_before = meter.read()
        before = serverstats.snapshot(stats_client, model_name)
        time.sleep(max(0.0, window_end - time.perf_counter()))
        after = serverstats.snapshot(stats_client, model_name)
        cpu_s = meter.read() - cpu_before
        for w in workers:
            w.join(spec.timeout_s + 5)
    latencies = [lat for w in workers for end, lat in w.done if window_start <= end <= window_end]
    errors = sum(1 for w in workers for t in w.failed if window_start <= t <= window_end)
    first_error = next((w.first_error for w in workers if w.first_error), None)
    if first_error:
        log.warning("requests failed (batch %d x %d): %s", spec.batch_size, spec.concurrency, first_error)
    p50, p95, p99, mean = percentiles_ms(latencies)
    result = LoadResult(
        batch_size=spec.batch_size, concurrency=spec.concurrency, duration_s=spec.duration_s,
        requests=len(latencies), errors=errors,
        images_per_s=len(latencies) * spec.batch_size / spec.duration_s,
        p50_ms=p50, p95_ms=p95, p99_ms=p99, mean_ms=mean,
        server=serverstats.difference(before, after),
        cpu_s=cpu_s if server_pid is not None else None,
    )
    log.info("batch %3d x %2d clients: %7.1f images/s, p50 %.1f ms, p99 %.1f ms, formed batch %.1f, errors %d",
             spec.batch_size, spec.concurrency, result.images_per_s, p50, p99,
             result.server.mean_formed_batch, errors)
    return result
