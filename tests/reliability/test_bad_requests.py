"""Malformed inference requests sent straight to the real server: each gets a clear error, the server lives on."""

from __future__ import annotations

import numpy as np
import pytest
import reliability_support as support
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from facialattr import MODEL_NAME

H, W = support.SIZE_HW
MAX_BATCH = 16  # support.make_repository's default


def _raw_input(name: str, shape: list[int], datatype: str, payload: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, shape, datatype)
    tensor._raw_content = payload  # what a buggy or hostile client could put on the wire
    return tensor


def _array_input(array: np.ndarray, *, name: str = "images", datatype: str = "UINT8") -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


# case -> (input tensor factory, substring the server's error must contain)
BAD_REQUESTS = {
    "wrong dtype (float32 pixels)": (
        lambda: _array_input(np.zeros((2, H, W, 3), np.float32), datatype="FP32"),
        "expects 'UINT8'",
    ),
    "wrong image size": (lambda: _array_input(np.zeros((2, H // 2, W, 3), np.uint8)), "unexpected shape"),
    "missing batch dimension": (lambda: _array_input(np.zeros((H, W, 3), np.uint8)), "batch-size must be <= 16"),
    "four channels": (lambda: _array_input(np.zeros((1, H, W, 4), np.uint8)), "unexpected shape"),
    "batch above max_batch_size": (
        lambda: _array_input(np.zeros((MAX_BATCH + 1, H, W, 3), np.uint8)),
        f"batch-size must be <= {MAX_BATCH}",
    ),
    "empty batch": (lambda: _array_input(np.zeros((0, H, W, 3), np.uint8)), "byte size mismatch"),
    "unknown input name": (lambda: _array_input(np.zeros((1, H, W, 3), np.uint8), name="imgs"), "unexpected inference input 'imgs'"),
    "payload shorter than its shape": (lambda: _raw_input("images", [2, H, W, 3], "UINT8", b"\0" * 10), "byte size mismatch"),
    "payload longer than its shape": (
        lambda: _raw_input("images", [1, H, W, 3], "UINT8", b"\0" * (2 * H * W * 3)),
        "byte size mismatch",
    ),
}


@pytest.fixture(scope="module")
def client(own_server):
    with grpcclient.InferenceServerClient(own_server.config.grpc_url) as c:
        yield c


def _good_request_works(client) -> bool:
    images = support.random_uint8((3, H, W, 3))
    result = client.infer(MODEL_NAME, [_array_input(images)])
    probabilities = result.as_numpy("probabilities")
    return probabilities.shape == (3, 40) and bool(np.all((probabilities > 0) & (probabilities < 1)))


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_is_rejected_clearly_and_the_server_stays_up(case, client, own_server):
    make_input, reason = BAD_REQUESTS[case]
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL_NAME, [make_input()])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert reason in caught.value.message()
    assert own_server.is_running()
    assert client.is_server_live() and client.is_model_ready(MODEL_NAME)
    assert _good_request_works(client)


def test_request_for_an_unknown_model_is_rejected_and_the_server_stays_up(client):
    with pytest.raises(InferenceServerException) as caught:
        client.infer("no_such_model", [_array_input(np.zeros((1, H, W, 3), np.uint8))])
    assert "no_such_model" in caught.value.message()
    assert client.is_server_live() and _good_request_works(client)


def test_a_hundred_megabyte_request_is_refused_without_harm(client, own_server):
    """The transport accepts it (Triton's gRPC limit is 2 GiB, see SECURITY.md); the model config refuses it."""
    batch = (100 * 1024 * 1024) // (H * W * 3)
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL_NAME, [_array_input(np.zeros((batch, H, W, 3), np.uint8))])
    assert f"batch-size must be <= {MAX_BATCH}" in caught.value.message()
    assert own_server.is_running() and _good_request_works(client)


REFUSED_REQUEST_BYTES = 200 << 20
REFUSED_REQUESTS = 5


@pytest.mark.parametrize(("pool_size", "pinned"), [(None, False), (8, True)],
                         ids=["shipped default frees them", "triton's default 8 pins them"])
def test_large_refused_grpc_requests_pin_server_memory_only_with_an_allocation_pool(pool_size, pinned,
                                                                                       own_repository):
    """A hostile local client repeats a 200 MB request the model refuses; what does the server keep?"""
    from facialattr.serving.embedded import start_on_free_ports
    from facialattr.serving.supervisor import group_rss_bytes

    fields = {} if pool_size is None else {"grpc_infer_allocation_pool_size": pool_size}
    server = start_on_free_ports(own_repository, **fields)
    try:
        before = group_rss_bytes(server.pid)
        batch = REFUSED_REQUEST_BYTES // (H * W * 3)
        with grpcclient.InferenceServerClient(server.config.grpc_url) as client:
            for _ in range(REFUSED_REQUESTS):
                with pytest.raises(InferenceServerException) as caught:
                    client.infer(MODEL_NAME, [_array_input(np.zeros((batch, H, W, 3), np.uint8))])
                assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
            grown = group_rss_bytes(server.pid) - before
            assert _good_request_works(client)
    finally:
        server.stop()
    if pinned:  # Triton 2.51 with its own default: each pooled request object keeps its 200 MB
        assert grown > 3 * REFUSED_REQUEST_BYTES, grown >> 20
    else:
        assert grown < 2 * REFUSED_REQUEST_BYTES, grown >> 20


# Attacks on Triton 2.51's HTTP frontend, which is why `facialattr serve` serves HTTP only with --http
# (SECURITY.md). Each uses its own server: the first one kills tritonserver.
NESTING_THAT_CRASHES_2_51 = 150_000  # 100,000 gets an error answer; from ~150,000 the recursive parser overflows
GZIP_EXPANDED_BYTES = 1 << 30
MEMORY_BOUND_BYTES = 768 << 20  # the tiny model's server and stub use a few hundred MiB


def _post_infer(http_url: str, body: bytes, headers: dict[str, str]) -> int | str:
    """POST an inference body; the HTTP status, or the transport error's name when the server died."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{http_url}/v2/models/{MODEL_NAME}/infer", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError) as exc:
        return type(exc).__name__


def _http_ready(http_url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{http_url}/v2/health/ready", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def test_deeply_nested_json_over_http_kills_tritonserver_and_the_supervisor_brings_it_back(own_repository):
    from facialattr.serving.supervisor import Supervisor

    config = support.AUTOMATIC.server_config(own_repository, allow_http=True)
    with Supervisor(config) as supervisor:
        first, process = supervisor.server, supervisor.server._process
        answer = _post_infer(supervisor.config.http_url, b"[" * NESTING_THAT_CRASHES_2_51, {})
        # Triton 2.51's recursive JSON parser overflows the stack (SIGSEGV); fixed upstream, see SECURITY.md.
        assert process.wait(timeout=60) == -11, answer
        support.wait_until(lambda: supervisor.restarts["exited"] == 1, timeout_s=60, what="a restart")
        assert supervisor.wait_ready(timeout_s=120) and supervisor.server is not first
        assert _http_ready(supervisor.config.http_url)  # same URLs as before the crash
        with grpcclient.InferenceServerClient(supervisor.config.grpc_url) as client:
            assert _good_request_works(client)


def _gzip_bomb(expanded_bytes: int) -> bytes:
    import zlib

    compressor, zeros = zlib.compressobj(9, zlib.DEFLATED, 31), bytes(1 << 20)  # wbits 31: gzip framing
    return b"".join([*(compressor.compress(zeros) for _ in range(expanded_bytes >> 20)), compressor.flush()])


def test_gzip_bomb_over_http_leaks_in_2_51_and_the_supervisor_gives_the_memory_back(own_repository):
    """A 1 MB body that expands to 1 GB: answered with an error, but 2.51 never frees the expansion (SECURITY.md)."""
    from facialattr.serving.supervisor import Supervisor, SupervisorSettings, group_rss_bytes

    config = support.AUTOMATIC.server_config(own_repository, allow_http=True)
    with Supervisor(config, settings=SupervisorSettings(max_rss_bytes=MEMORY_BOUND_BYTES)) as supervisor:
        first, process = supervisor.server, supervisor.server._process
        assert group_rss_bytes(first.pid) < MEMORY_BOUND_BYTES
        bomb = _gzip_bomb(GZIP_EXPANDED_BYTES)
        assert len(bomb) < 2 << 20
        answer = _post_infer(supervisor.config.http_url, bomb, {"Content-Encoding": "gzip"})
        # An error, or no answer when the supervisor's memory check replaced the server mid-request (load-dependent).
        assert answer in (500, "RemoteDisconnected", "ConnectionResetError"), answer
        # The leak this pins (HTTP is off by default because of it), then the bound that contains it.
        support.wait_until(lambda: supervisor.restarts["memory"] == 1, timeout_s=60, what="a restart for memory")
        assert process.wait(timeout=60) is not None
        assert supervisor.wait_ready(timeout_s=120) and supervisor.server is not first
        assert group_rss_bytes(supervisor.server.pid) < MEMORY_BOUND_BYTES
        assert _http_ready(supervisor.config.http_url)
