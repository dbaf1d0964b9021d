"""Triton's own view of a model: requests, queue time, compute time and the batches it formed.

The one reader of Triton's inference statistics (``get_inference_statistics``,
the gRPC protobuf answer), for the CCTV watcher's "server batch sizes" and the
benchmarks' load windows. Statistics are cumulative since the model loaded:
read a snapshot before and after a window; ``difference`` is what the window
caused. Client-side latency minus server queue+compute is the transport
(gRPC, serialisation) cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from facialattr import MODEL_NAME


@dataclass(frozen=True)
class StatsSnapshot:
    """Cumulative counters of all versions of one model (times in nanoseconds)."""

    inference_count: int = 0
    execution_count: int = 0
    success_count: int = 0
    fail_count: int = 0
    queue_ns: int = 0
    compute_ns: int = 0
    # formed batch size -> number of model executions with that size
    batch_executions: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerStats:
    """What the server did between two snapshots (times in milliseconds per request)."""

    requests: int
    failed_requests: int
    inferences: int
    executions: int
    mean_queue_ms: float
    mean_compute_ms: float
    mean_formed_batch: float
    formed_batches: dict[int, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; ``formed_batches`` keyed by the batch size as a string, in size order."""
        d = asdict(self)
        d["formed_batches"] = {str(k): v for k, v in sorted(self.formed_batches.items())}
        return d


def parse(response: Any) -> StatsSnapshot:
    """A snapshot from Triton's gRPC ``ModelStatisticsResponse`` protobuf (all models/versions in it summed)."""
    inference = execution = success = fail = queue_ns = compute_ns = 0
    batches: dict[int, int] = {}
    for model in response.model_stats:
        inference += int(model.inference_count)
        execution += int(model.execution_count)
        stats = model.inference_stats
        success += int(stats.success.count)
        fail += int(stats.fail.count)
        queue_ns += int(stats.queue.ns)
        # compute_* are accumulated per request: every request of a batch carries the batch's time.
        compute_ns += int(stats.compute_input.ns) + int(stats.compute_infer.ns) + int(stats.compute_output.ns)
        for batch in model.batch_stats:
            size = int(batch.batch_size)
            batches[size] = batches.get(size, 0) + int(batch.compute_infer.count)
    return StatsSnapshot(inference_count=inference, execution_count=execution, success_count=success,
                         fail_count=fail, queue_ns=queue_ns, compute_ns=compute_ns, batch_executions=batches)


def snapshot(client: Any, model_name: str = MODEL_NAME, *, timeout_s: float | None = None) -> StatsSnapshot:
    """Cumulative statistics of ``model_name`` read through an open tritonclient gRPC client.

    Raises tritonclient's InferenceServerException when the server cannot answer
    (unreachable, unknown model, ``timeout_s`` seconds passed).
    """
    return parse(client.get_inference_statistics(model_name, client_timeout=timeout_s))


def read(url: str, model_name: str = MODEL_NAME, *, timeout_s: float | None = None) -> StatsSnapshot:
    """Like ``snapshot``, over a short-lived channel to the gRPC ``url`` (HOST:PORT)."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        return snapshot(client, model_name, timeout_s=timeout_s)


def mean_batch(batch_executions: Mapping[int, int]) -> float:
    """Mean size of the batches formed, from {batch size: executions}; 0.0 when none ran."""
    executions = sum(batch_executions.values())
    return sum(size * n for size, n in batch_executions.items()) / executions if executions else 0.0


def difference(before: StatsSnapshot, after: StatsSnapshot) -> ServerStats:
    """What the server did between ``before`` and ``after`` (an idle window gives zeros, not an error)."""
    requests = after.success_count - before.success_count
    executions = after.execution_count - before.execution_count
    inferences = after.inference_count - before.inference_count
    batches = {
        size: count - before.batch_executions.get(size, 0)
        for size, count in after.batch_executions.items()
        if count - before.batch_executions.get(size, 0) > 0
    }
    per_request = max(requests, 1)
    return ServerStats(
        requests=requests,
        failed_requests=after.fail_count - before.fail_count,
        inferences=inferences,
        executions=executions,
        mean_queue_ms=(after.queue_ns - before.queue_ns) / per_request / 1e6,
        mean_compute_ms=(after.compute_ns - before.compute_ns) / per_request / 1e6,
        mean_formed_batch=inferences / executions if executions else 0.0,
        formed_batches=batches,
    )
