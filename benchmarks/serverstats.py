"""Triton's own view of a load run: queue time, compute time and the batches it formed.

Read from ``get_inference_statistics`` before and after a run; the difference is
what the run caused. Client-side latency minus server queue+compute is the
transport (gRPC, serialisation) cost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from facialattr import MODEL_NAME


@dataclass(frozen=True)
class StatsSnapshot:
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
    """What the server did between two snapshots."""

    requests: int
    failed_requests: int
    inferences: int
    executions: int
    mean_queue_ms: float
    mean_compute_ms: float
    mean_formed_batch: float
    formed_batches: dict[int, int]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["formed_batches"] = {str(k): v for k, v in sorted(self.formed_batches.items())}
        return d


def _stat(block: dict, name: str) -> tuple[int, int]:
    entry = block.get(name, {})
    return int(entry.get("count", 0)), int(entry.get("ns", 0))


def snapshot(client, model_name: str = MODEL_NAME) -> StatsSnapshot:
    """Cumulative statistics of all versions of ``model_name`` (a tritonclient gRPC client)."""
    stats = client.get_inference_statistics(model_name, as_json=True).get("model_stats", [])
    total = {"inference": 0, "execution": 0, "success": 0, "fail": 0, "queue": 0, "compute": 0}
    batches: dict[int, int] = {}
    for model in stats:
        total["inference"] += int(model.get("inference_count", 0))
        total["execution"] += int(model.get("execution_count", 0))
        inference = model.get("inference_stats", {})
        total["success"] += _stat(inference, "success")[0]
        total["fail"] += _stat(inference, "fail")[0]
        total["queue"] += _stat(inference, "queue")[1]
        # compute_* are accumulated per request: every request of a batch carries the batch's time.
        total["compute"] += sum(_stat(inference, part)[1] for part in ("compute_input", "compute_infer", "compute_output"))
        for batch in model.get("batch_stats", []):
            size = int(batch["batch_size"])
            batches[size] = batches.get(size, 0) + _stat(batch, "compute_infer")[0]
    return StatsSnapshot(
        inference_count=total["inference"], execution_count=total["execution"],
        success_count=total["success"], fail_count=total["fail"],
        queue_ns=total["queue"], compute_ns=total["compute"], batch_executions=batches,
    )


def difference(before: StatsSnapshot, after: StatsSnapshot) -> ServerStats:
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
