"""The Scorer against the real embedded Triton: same numbers as ONNX Runtime, batching, failover."""

from __future__ import annotations

import numpy as np
import pytest
from facialattr.client.preprocess import load_and_prepare
from facialattr.client.scorer import RetryPolicy, Scorer, ServerUnavailableError
from testsupport import free_ports

from facialattr import repository
from facialattr.errors import InputError


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, make_jpegs, reference):
    paths = make_jpegs(tmp_path_factory.mktemp("scorer"), 37)
    expected = reference(paths)
    return paths, expected


def _batch(paths, contract):
    return np.stack([load_and_prepare(p, contract.preprocessing) for p in paths])


def test_scorer_reads_the_contract_from_the_server(grpc_url, tiny_repository):
    with Scorer(grpc_url) as scorer:
        assert scorer.contract == repository.load_model(tiny_repository).contract
        assert scorer.contract.max_batch_size == 16


def test_outputs_equal_direct_onnx_runtime_across_chunked_requests(grpc_url, prepared):
    paths, expected = prepared
    with Scorer(grpc_url, max_in_flight=2) as scorer:
        got = scorer.infer(_batch(paths, scorer.contract))  # 37 images: chunks of 16, 16, 5
        assert scorer.stats.requests == 3 and scorer.stats.images == 37
    np.testing.assert_allclose(got, np.stack([expected[str(p)] for p in paths]), rtol=0, atol=1e-6)


def test_many_async_batches_come_back_to_their_own_futures(grpc_url, prepared):
    paths, expected = prepared
    with Scorer(grpc_url, max_in_flight=3) as scorer:
        batches = [_batch(paths[i : i + 5], scorer.contract) for i in range(0, len(paths), 5)]
        futures = [scorer.infer_async(b) for b in batches]
        got = np.concatenate([f.result(timeout=60) for f in futures])
    np.testing.assert_allclose(got, np.stack([expected[str(p)] for p in paths]), rtol=0, atol=1e-6)


def test_two_endpoints_with_one_down_still_scores_everything(grpc_url, prepared):
    paths, expected = prepared
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    # No backoff: the dead endpoint is tried again at once, so every new request meets it first.
    retry = RetryPolicy(initial_backoff_s=0.0, max_backoff_s=0.0)
    with Scorer([dead, grpc_url], max_in_flight=4, retry=retry) as scorer:
        assert scorer.urls == [dead, grpc_url]
        futures = [scorer.infer_async(_batch(paths[i : i + 4], scorer.contract)) for i in range(0, len(paths), 4)]
        got = np.concatenate([f.result(timeout=60) for f in futures])
        assert scorer.stats.failovers >= 1 and scorer.stats.errors_by_status["StatusCode.UNAVAILABLE"] >= 1
        assert scorer.stats.images == len(paths)  # each image answered exactly once
    np.testing.assert_allclose(got, np.stack([expected[str(p)] for p in paths]), rtol=0, atol=1e-6)


def test_no_reachable_endpoint_gives_up_after_the_connect_deadline():
    dead = [f"127.0.0.1:{port}" for port in free_ports(2)]
    with pytest.raises(ServerUnavailableError, match="no Triton endpoint reachable"):
        Scorer(dead, connect_timeout_s=0.3, retry=RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.05))


@pytest.mark.parametrize("batch", [
    np.zeros((2, 64, 64, 3), np.float32),
    np.zeros((2, 32, 32, 3), np.uint8),
    np.zeros((64, 64, 3), np.uint8),
])
def test_batches_of_the_wrong_shape_or_dtype_are_refused(grpc_url, batch):
    with Scorer(grpc_url) as scorer, pytest.raises(InputError):
        scorer.infer(batch)


def test_empty_batch_returns_empty_probabilities(grpc_url):
    with Scorer(grpc_url) as scorer:
        assert scorer.infer(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0, 40)


@pytest.mark.parametrize("urls", ["localhost", "", "host:port"])
def test_malformed_urls_are_refused(urls):
    with pytest.raises(InputError):
        Scorer(urls)


def test_requests_fill_up_to_the_preferred_batch_size_the_server_declares(tmp_path, prepared):
    from facialattr.export.tiny_model import build_tiny_onnx
    from testsupport import start_server

    from facialattr import triton_config
    from facialattr.contract import ModelContract, Preprocessing

    contract = ModelContract(preprocessing=Preprocessing(size_hw=(64, 64)), max_batch_size=16)
    config = triton_config.ModelConfig(max_batch_size=16, dynamic_batching=triton_config.DynamicBatching(preferred_batch_size=(4,)))
    repository.write_model(tmp_path / "repo", build_tiny_onnx(tmp_path / "m.onnx", size_hw=(64, 64)), contract, model_config=config)
    paths, expected = prepared
    server = start_server(tmp_path / "repo")
    try:
        with Scorer(server.config.grpc_url) as scorer:
            assert scorer.chunk_size == 4
            got = scorer.infer(_batch(paths[:10], scorer.contract))
            assert scorer.stats.requests == 3  # 4 + 4 + 2
    finally:
        server.stop()
    np.testing.assert_allclose(got, np.stack([expected[str(p)] for p in paths[:10]]), rtol=0, atol=1e-6)
