"""The embedded Triton is the real tritonserver: these tests talk gRPC to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from testsupport import listening_port, make_tiny_repository, start_serve_command, start_server, wait_until

from facialattr import MODEL_NAME, repository
from facialattr.contract import ModelContract
from facialattr.errors import ModelRepositoryError, PortInUseError, ServerError, UnsupportedPlatformError
from facialattr.serving import process
from facialattr.serving.embedded import EmbeddedTriton, ServerConfig


def _infer(url: str, batch: np.ndarray) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    inp = grpcclient.InferInput("images", list(batch.shape), "UINT8")
    inp.set_data_from_numpy(batch)
    return client.infer(MODEL_NAME, [inp], outputs=[grpcclient.InferRequestedOutput("probabilities")]).as_numpy("probabilities")


def test_model_is_ready_and_metadata_names_tensors_shapes_and_dtypes(triton_server):
    client = grpcclient.InferenceServerClient(triton_server.config.grpc_url)
    assert client.is_model_ready(MODEL_NAME)
    meta = client.get_model_metadata(MODEL_NAME)
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("images", "UINT8", [-1, 64, 64, 3])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("probabilities", "FP32", [-1, 40])]


def test_contract_read_from_server_equals_contract_on_disk(triton_server, tiny_repository):

    client = grpcclient.InferenceServerClient(triton_server.config.grpc_url)
    served = ModelContract.from_model_config(client.get_model_config(MODEL_NAME).config)
    assert served == repository.load_model(tiny_repository).contract


def test_inference_returns_forty_probabilities_equal_to_onnxruntime(triton_server, tiny_repository):
    from facialattr.onnx_runtime import cpu_session

    batch = np.random.default_rng(3).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    onnx_path = tiny_repository / MODEL_NAME / "1" / "model.onnx"
    expected = cpu_session(onnx_path).run(None, {"images": batch})[0]
    got = _infer(triton_server.config.grpc_url, batch)
    assert got.shape == (5, 40) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_concurrent_single_image_requests_are_merged_by_the_dynamic_batcher(tmp_path):
    # A fresh server so the statistics count only this test's requests.
    with start_server(make_tiny_repository(tmp_path)) as server:
        url = server.config.grpc_url
        images = np.random.default_rng(0).integers(0, 256, (64, 1, 64, 64, 3), dtype=np.uint8)
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda x: _infer(url, x), images))
        assert all(r.shape == (1, 40) for r in results)
        client = grpcclient.InferenceServerClient(url)

        def stats():
            return client.get_inference_statistics(MODEL_NAME).model_stats[0]

        # The Python backend records statistics after the responses are sent: a reply can arrive first.
        wait_until(lambda: stats().inference_count == 64, timeout_s=10, what="64 inferences in the statistics")
        stats = stats()
        batch_sizes = {b.batch_size: b.compute_infer.count for b in stats.batch_stats}
        assert max(batch_sizes) > 1, f"no merged batches: {batch_sizes}"
        assert stats.execution_count < 64


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_stop_leaves_no_process_and_no_shared_memory_behind(tmp_path):
    server = start_server(make_tiny_repository(tmp_path))
    pid, prefix = server.pid, server.shm_prefix
    assert list(Path("/dev/shm").glob(f"{prefix}*")), "the Python backend should use its own shm regions"
    server.stop()
    assert not _group_alive(pid)
    assert not list(Path("/dev/shm").glob(f"{prefix}*"))


def test_taken_port_is_a_clear_error(tmp_path, triton_server):
    config = ServerConfig(tmp_path, grpc_port=triton_server.config.grpc_port)
    with pytest.raises(PortInUseError, match=str(triton_server.config.grpc_port)):
        process.check_port_free(config.host, config.grpc_port, chosen_with="--grpc-port")
    repo = make_tiny_repository(tmp_path)
    with pytest.raises(PortInUseError):
        EmbeddedTriton(ServerConfig(repo, http_port=0, grpc_port=triton_server.config.grpc_port, metrics_port=0)).start()


def test_negative_grpc_allocation_pool_size_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(ServerError, match="grpc_infer_allocation_pool_size must be 0 or more, got -1"):
        ServerConfig(tmp_path, grpc_infer_allocation_pool_size=-1)


@pytest.fixture
def listener():
    """A port another process holds (a listening socket), as when it takes a port between probe and bind."""
    with listening_port() as port:
        yield port


def test_automatic_ports_taken_before_tritonserver_binds_them_are_replaced_and_reported(
        tmp_path, listener, monkeypatch):
    picks = []
    real_pick = process.pick_free_ports

    def first_pick_loses_the_race(host, n):
        picks.append(real_pick(host, n))
        if len(picks) == 1:
            picks[0][0] = listener  # what another process took meanwhile
        return picks[-1]

    monkeypatch.setattr(process, "pick_free_ports", first_pick_loses_the_race)
    with start_server(make_tiny_repository(tmp_path)) as server:
        assert len(picks) == 2, "the start was not retried with fresh ports"
        assert listener not in (server.config.grpc_port, server.config.metrics_port)
        assert {server.config.grpc_port, server.config.metrics_port} == set(picks[1])
        assert grpcclient.InferenceServerClient(server.config.grpc_url).is_model_ready(MODEL_NAME)


def test_port_given_by_number_and_taken_at_bind_time_is_an_error_never_another_port(tmp_path, listener, monkeypatch):
    # The pre-check passes (the port was free then); tritonserver then meets it taken.
    monkeypatch.setattr(process, "check_port_free", lambda host, port, *, chosen_with: None)
    server = EmbeddedTriton(ServerConfig(make_tiny_repository(tmp_path), grpc_port=listener, metrics_port=0))
    with pytest.raises(PortInUseError, match="already in use"):
        server.start()
    assert server.config.grpc_port == listener and not server.is_running()


def test_work_folders_of_dead_launchers_are_removed_with_their_shared_memory(tmp_path):
    from facialattr.serving import workdirs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    shm_prefix = f"facialattr_test_{os.getpid()}_"
    region = Path("/dev/shm") / f"{shm_prefix}region"
    region.write_bytes(b"\0" * 64)
    stale, live = tmp_path / f"{workdirs.PREFIX}dead", tmp_path / f"{workdirs.PREFIX}live"
    for folder, pid in ((stale, dead.pid), (live, os.getpid())):
        folder.mkdir()
        (folder / workdirs._OWNER_FILE).write_text(f"{pid} {workdirs._start_time(os.getpid())} {shm_prefix}\n")
    try:
        assert workdirs.remove_stale(root=tmp_path) == [stale]
        assert not stale.exists() and not region.exists()
        assert live.exists()
    finally:
        region.unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no_repository", "model repository not found"),
        ("no_config", "no config.pbtxt"),
        ("garbage_config", "not a valid Triton model config"),
        ("no_version", "no numbered version folder"),
        ("no_onnx", "have no model.onnx"),
        ("wrong_labels", "disagrees with the attribute_names"),
    ],
)
def test_broken_model_repository_is_refused_with_a_clear_error(tmp_path, breakage, message):
    repo = make_tiny_repository(tmp_path)
    model = repo / MODEL_NAME
    if breakage == "no_repository":
        repo = tmp_path / "missing"
    elif breakage == "no_config":
        (model / "config.pbtxt").unlink()
    elif breakage == "garbage_config":
        (model / "config.pbtxt").write_text("max_batch_size: {{ nonsense")
    elif breakage == "no_version":
        (model / "1" / "model.onnx").unlink()
        (model / "1").rmdir()
    elif breakage == "no_onnx":
        (model / "1" / "model.onnx").unlink()
    elif breakage == "wrong_labels":
        (model / "labels.txt").write_text("Bald\n")
    with pytest.raises(ModelRepositoryError, match=message):
        EmbeddedTriton(ServerConfig(repo)).start()


def test_unsupported_platform_points_to_docker_compose(monkeypatch):
    monkeypatch.setattr(process.platform, "machine", lambda: "aarch64")
    with pytest.raises(UnsupportedPlatformError, match="docker-compose"):
        process.bundled_server()


def _assert_server_gone(grpc_port: int, *, timeout_s: float = 60.0) -> None:
    """Within ``timeout_s`` (tritonserver's own graceful exit allows 30 s) nothing of it is left."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (_listening(grpc_port) or _server_processes(grpc_port)):
        time.sleep(0.2)
    assert not _listening(grpc_port)
    assert _server_processes(grpc_port) == ""


def _server_processes(grpc_port: int) -> str:
    return subprocess.run(["pgrep", "-f", f"grpc-port={grpc_port}"], capture_output=True, text=True).stdout.strip()


def test_serve_command_stops_cleanly_on_sigterm(tmp_path):
    proc, grpc = start_serve_command(make_tiny_repository(tmp_path))
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    _assert_server_gone(grpc)


def test_server_dies_with_its_launcher_even_when_the_launcher_is_killed_and_the_next_start_tidies_up(tmp_path):
    repo = make_tiny_repository(tmp_path)
    proc, grpc = start_serve_command(repo)
    (triton_pid,) = [int(pid) for pid in _server_processes(grpc).split()]
    workdir = Path(_model_repository_argument(triton_pid)).parent
    proc.kill()  # SIGKILL: no finally block runs in the launcher
    proc.wait(timeout=10)
    _assert_server_gone(grpc)
    assert workdir.exists(), "nothing should have cleaned up after a SIGKILL"
    with start_server(repo):
        assert not workdir.exists(), "the next start must remove the dead server's work folder"


def _model_repository_argument(pid: int) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return next(a.split("=", 1)[1] for a in args if a.startswith("--model-repository="))


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_python_backend_stub_runs_with_this_environments_numpy(triton_server):
    """The stub must not pick up the base interpreter's numpy: built for 1.x, it corrupts outputs under 2.x."""
    children = subprocess.run(["pgrep", "-g", str(triton_server.pid), "-f", "triton_python_backend_stub"],
                              capture_output=True, text=True).stdout.split()
    assert children, "no Python-backend stub found in the server's process group"
    numpy_dir = str(Path(np.__file__).resolve().parent)  # /proc/PID/maps names real paths, not a symlinked venv
    for pid in children:
        mapped = {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
                  if "_multiarray_umath" in line}
        assert mapped and all(path.startswith(numpy_dir) for path in mapped), mapped


def test_every_model_folder_in_the_repository_is_served(tmp_path):
    """A second model (e.g. the INT8 variant export publishes) is served beside facial_attributes."""
    from facialattr import triton_config
    from facialattr.export.tiny_model import build_tiny_onnx

    repo = make_tiny_repository(tmp_path)
    contract = repository.load_model(repo).contract
    onnx_path = build_tiny_onnx(tmp_path / "second.onnx", size_hw=(64, 64), seed=1)
    repository.write_model(repo, onnx_path, contract,
                           model_config=triton_config.ModelConfig(name="facial_attributes_int8", max_batch_size=16))
    with start_server(repo) as server:
        client = grpcclient.InferenceServerClient(server.config.grpc_url)
        assert client.is_model_ready(MODEL_NAME) and client.is_model_ready("facial_attributes_int8")
