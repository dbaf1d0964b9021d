"""The Scorer against the real embedded Triton: same numbers as ONNX Runtime, batching, failover."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import numpy as np
import pytest
from testsupport import free_ports

from facialattr import repository
from facialattr.client.endpoints import unreachable_message
from facialattr.client.failures import RateLimitedLog
from facialattr.client.preprocess import load_and_prepare
from facialattr.client.scorer import RetryPolicy, Scorer
from facialattr.errors import InputError, ServerUnavailableError


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
        assert scorer.model_config.max_batch_size == 16


@pytest.mark.parametrize(("requested", "used", "warned"), [(None, 16, False), (5, 5, False), (16, 16, False), (40, 16, True)])
def test_request_size_is_the_asked_batch_capped_to_the_servers_with_a_warning(grpc_url, caplog, requested, used, warned):
    with Scorer(grpc_url) as scorer:  # the tiny model's max_batch_size is 16
        assert scorer.request_size(requested) == used
    assert ("exceeds what one request may carry" in caplog.text) == warned


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


def test_no_reachable_endpoint_gives_up_after_the_connect_deadline_with_a_plain_message():
    dead = [f"127.0.0.1:{port}" for port in free_ports(2)]
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match="no Triton gRPC endpoint answered") as caught:
        Scorer(dead, connect_timeout_s=0.3, retry=RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.05))
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert all(url in message for url in dead) and "nothing is listening" in message and "facialattr serve" in message


@contextlib.contextmanager
def http_listener():
    """An HTTP/1.1 server where gRPC was expected (e.g. Triton's HTTP port given as --url); yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def answer_http() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=answer_http, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_a_listener_that_is_not_grpc_is_told_apart_from_no_server():
    with http_listener() as url, pytest.raises(ServerUnavailableError) as caught:
        Scorer(url, connect_timeout_s=1.0, retry=RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.05))
    assert "something accepts connections there, but it does not answer as Triton gRPC" in str(caught.value)


@pytest.mark.parametrize(("connect_timeout_s", "at_least_s", "at_most_s"), [
    (None, 0.9, 2.0),  # the default: nothing listens, which is an answer; a 1 s grace, then the hint
    (2.5, 2.5, 4.0),   # an explicit wait is for a server still starting, whose port is closed until it is ready
])
def test_a_refused_connection_fails_at_once_unless_told_to_wait(connect_timeout_s, at_least_s, at_most_s):
    url = f"127.0.0.1:{free_ports(1)[0]}"
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError) as caught:
        Scorer(url, connect_timeout_s=connect_timeout_s)
    elapsed_s = time.monotonic() - started
    assert at_least_s <= elapsed_s < at_most_s, f"gave up after {elapsed_s:.2f} s"
    message = str(caught.value)
    assert f"{url}: nothing is listening there (connection refused)" in message
    assert "facialattr serve" in message and "--url HOST:PORT" in message


def test_a_port_that_accepts_gets_the_whole_connect_timeout_not_the_refusal_grace(monkeypatch):
    from facialattr import defaults

    monkeypatch.setattr(defaults, "CONNECT_TIMEOUT_S", 3.0)  # the default wait, shortened for the test
    started = time.monotonic()
    with http_listener() as url, pytest.raises(ServerUnavailableError, match="something accepts connections"):
        Scorer(url)
    assert time.monotonic() - started >= 3.0


@pytest.mark.parametrize(("url", "hinted"), [("127.0.0.1:8000", True), ("127.0.0.1:8001", False), ("10.0.0.9:9000", False)])
def test_the_message_hints_at_the_grpc_port_only_when_the_http_port_was_given(url, hinted):
    message = unreachable_message([url], waited_s=10, last_errors={})
    assert (f"--url {url.rpartition(':')[0]}:8001" in message) == hinted
    assert "facialattr serve" in message


def test_repeated_warnings_about_one_endpoint_are_rate_limited(caplog):
    limited = RateLimitedLog(interval_s=60)
    with caplog.at_level("WARNING"):
        for _ in range(50):
            limited.warning("127.0.0.1:1", "%s is down", "127.0.0.1:1")
        limited.warning("127.0.0.1:2", "%s is down", "127.0.0.1:2")
    assert [r.getMessage() for r in caplog.records] == ["127.0.0.1:1 is down", "127.0.0.1:2 is down"]


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
    from testsupport import start_server

    from facialattr import triton_config
    from facialattr.contract import ModelContract, Preprocessing
    from facialattr.export.tiny_model import build_tiny_onnx

    contract = ModelContract(preprocessing=Preprocessing(size_hw=(64, 64)))
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
