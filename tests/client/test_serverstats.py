"""Triton's statistics: the protobuf answer parsed once, and the arithmetic of a window."""

from __future__ import annotations

import pytest
from tritonclient.grpc import service_pb2

from facialattr.client.serverstats import StatsSnapshot, difference, mean_batch, parse


def _version_stats(response, *, inferences: int, executions: int, queue_ns: int, infer_ns: int,
                   batches: dict[int, int]) -> None:
    model = response.model_stats.add(name="facial_attributes", inference_count=inferences,
                                     execution_count=executions)
    model.inference_stats.success.count = inferences
    model.inference_stats.queue.ns = queue_ns
    model.inference_stats.compute_input.ns = 1
    model.inference_stats.compute_infer.ns = infer_ns
    model.inference_stats.compute_output.ns = 2
    for size, count in batches.items():
        model.batch_stats.add(batch_size=size).compute_infer.count = count


def test_parse_sums_every_version_and_counts_executions_per_formed_batch_size():
    response = service_pb2.ModelStatisticsResponse()
    _version_stats(response, inferences=10, executions=4, queue_ns=100, infer_ns=1000, batches={1: 2, 4: 2})
    _version_stats(response, inferences=8, executions=1, queue_ns=50, infer_ns=500, batches={8: 1})
    snap = parse(response)
    assert (snap.inference_count, snap.execution_count, snap.success_count, snap.fail_count) == (18, 5, 18, 0)
    assert (snap.queue_ns, snap.compute_ns) == (150, 1000 + 500 + 2 * (1 + 2))
    assert snap.batch_executions == {1: 2, 4: 2, 8: 1}
    assert mean_batch(snap.batch_executions) == pytest.approx((2 + 8 + 8) / 5)


def test_parse_of_a_model_that_never_ran_is_all_zeros():
    assert parse(service_pb2.ModelStatisticsResponse()) == StatsSnapshot()
    assert mean_batch({}) == 0.0


def test_difference_gives_per_request_times_and_the_batches_formed_in_between():
    before = StatsSnapshot(inference_count=10, execution_count=10, success_count=10, queue_ns=5_000_000,
                           compute_ns=20_000_000, batch_executions={1: 10})
    after = StatsSnapshot(inference_count=42, execution_count=14, success_count=42, fail_count=1,
                          queue_ns=5_000_000 + 32 * 2_000_000, compute_ns=20_000_000 + 32 * 10_000_000,
                          batch_executions={1: 10, 8: 4})
    d = difference(before, after)
    assert (d.requests, d.failed_requests, d.inferences, d.executions) == (32, 1, 32, 4)
    assert d.mean_queue_ms == pytest.approx(2.0) and d.mean_compute_ms == pytest.approx(10.0)
    assert d.mean_formed_batch == pytest.approx(8.0)
    assert d.formed_batches == {8: 4}


def test_difference_of_an_idle_window_is_zero_not_a_division_error():
    s = StatsSnapshot(inference_count=3, execution_count=3, success_count=3, batch_executions={1: 3})
    d = difference(s, s)
    assert d.requests == 0 and d.mean_formed_batch == 0.0 and d.formed_batches == {}
