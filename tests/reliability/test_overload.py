"""Overload: a bounded server queue rejects the excess at once, clients back off, and everyone finishes.

The server here holds 2 images per batch and 2 queued requests, and its model
sleeps before each batch (support.SlowEmbeddedTriton), so a handful of
concurrent clients is already more than it can take, without burning the CI's CPU.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time

import numpy as np
import pytest
import reliability_support as support
import tritonclient.grpc as grpcclient

from facialattr import MODEL_NAME
from facialattr.client.scorer import Scorer

H, W = support.SIZE_HW
MAX_BATCH, MAX_QUEUE = 2, 2
DELAY_S = 0.3


@pytest.fixture(scope="module")
def busy_repository(tmp_path_factory):
    return support.make_repository(tmp_path_factory.mktemp("overload"), max_batch_size=MAX_BATCH, max_queue_size=MAX_QUEUE)


@pytest.fixture(scope="module")
def busy_server(busy_repository):
    server = support.start(busy_repository, delay_s=DELAY_S)
    yield server
    server.stop()


def _fire(url: str, n: int) -> list[tuple[float, object]]:
    """Send n single-image requests at once; (completion time, error or None) in completion order."""
    outcomes: list[tuple[float, object]] = []
    lock, all_done = threading.Lock(), threading.Event()

    def on_done(result, error) -> None:
        with lock:
            outcomes.append((time.monotonic(), error))
            if len(outcomes) == n:
                all_done.set()

    with grpcclient.InferenceServerClient(url) as client:
        for _ in range(n):
            tensor = grpcclient.InferInput("images", [1, H, W, 3], "UINT8")
            tensor.set_data_from_numpy(np.zeros((1, H, W, 3), np.uint8))
            client.async_infer(MODEL_NAME, [tensor], on_done)
        assert all_done.wait(timeout=120), "the server neither answered nor rejected every request"
    return outcomes


def test_requests_beyond_the_queue_bound_are_rejected_before_any_accepted_one_finishes(busy_server):
    outcomes = _fire(busy_server.config.grpc_url, 12)
    rejected = [error for _, error in outcomes if error is not None]
    # At most one batch running plus MAX_QUEUE waiting requests are accepted.
    assert len(rejected) >= 12 - (MAX_BATCH + MAX_QUEUE)
    for error in rejected:
        assert error.status() == "StatusCode.UNAVAILABLE"
        assert "exceeds maximum queue size" in error.message().lower()
    first_success = next(i for i, (_, error) in enumerate(outcomes) if error is None)
    assert all(error is not None for _, error in outcomes[:first_success])
    assert len(rejected) == first_success, "a rejection waited for a running batch: the queue is not bounded"


def test_overloaded_clients_back_off_and_all_finish_with_correct_scores(busy_server, busy_repository):
    url = busy_server.config.grpc_url
    clients, images_per_client = 8, 4
    batches = [support.random_uint8((images_per_client, H, W, 3), seed=i) for i in range(clients)]

    def score(batch: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
        with Scorer(url, max_in_flight=2) as scorer:
            return scorer.infer(batch), dict(scorer.stats.errors_by_status)

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(score, batches))
    rejections = sum(errors.get("StatusCode.UNAVAILABLE", 0) for _, errors in answers)
    assert rejections > 0, "the load never exceeded the queue bound, so this test proved nothing"
    reference = support.in_process_model(busy_repository)  # the served ONNX file, run here without contention
    for batch, (probabilities, _) in zip(batches, answers, strict=True):
        np.testing.assert_allclose(probabilities, reference(batch), atol=1e-6)


def test_server_memory_stays_bounded_under_a_flood_of_rejected_requests(busy_server):
    url = busy_server.config.grpc_url
    _fire(url, 20)  # warm the allocation pools before measuring
    before = support.rss_bytes(busy_server.pid)
    for _ in range(5):
        outcomes = _fire(url, 120)
        assert sum(error is not None for _, error in outcomes) > 0
    after = support.rss_bytes(busy_server.pid)
    # 600 requests went through or were refused; an unbounded queue or a leak per request would show.
    assert after - before < 64 * 1024 * 1024, f"tritonserver RSS grew from {before >> 20} MiB to {after >> 20} MiB"
    assert busy_server.is_running()
