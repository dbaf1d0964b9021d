"""Secure defaults: loopback only, no model control, no files outside the scored roots, no face images kept."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import urllib.error
import urllib.request

import pytest
import reliability_support as support
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from facialattr import MODEL_NAME


def _server_ports(config) -> set[int]:
    return {config.http_port, config.grpc_port, config.metrics_port}


def test_embedded_server_listens_on_loopback_only(own_server):
    listening = support.listening_addresses(own_server.pid)
    assert {port for _, port in listening} >= _server_ports(own_server.config)
    assert {address for address, _ in listening} == {"127.0.0.1"}


def test_host_setting_is_what_the_server_binds(own_repository):
    """The detector above can fail: another loopback address shows up as itself (nothing is exposed)."""
    server = support.start(own_repository, support.Ports.pick(), host="127.0.0.2")
    try:
        listening = support.listening_addresses(server.pid)
        assert {address for address, port in listening if port in _server_ports(server.config)} == {"127.0.0.2"}
    finally:
        server.stop()


def test_serve_command_binds_loopback_by_default(own_repository):
    ports = support.Ports.pick()
    serve = subprocess.Popen(
        support.facialattr_command("serve", "--model-repository", own_repository, "--http-port", str(ports.http),
                                   "--grpc-port", str(ports.grpc), "--metrics-port", str(ports.metrics)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        support.wait_until(lambda: _ready(ports) or serve.poll() is not None, timeout_s=120, what="facialattr serve ready")
        assert serve.poll() is None, serve.stdout.read()
        (triton_pid,) = support.child_pids(serve.pid)
        listening = support.listening_addresses(triton_pid)
        assert {port for _, port in listening} >= {ports.http, ports.grpc, ports.metrics}
        assert {address for address, _ in listening} == {"127.0.0.1"}
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0


def _ready(ports) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports.http}/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.parametrize("action", ["load_model", "unload_model"])
def test_model_load_and_unload_over_grpc_are_refused_even_with_the_admin_key(action, own_server):
    with grpcclient.InferenceServerClient(own_server.config.grpc_url) as client:
        with pytest.raises(InferenceServerException) as caught:
            getattr(client, action)(MODEL_NAME)
        assert "restricted" in caught.value.message()
        with pytest.raises(InferenceServerException) as caught:
            getattr(client, action)(MODEL_NAME, headers=own_server.grpc_admin_headers)
        assert caught.value.status() == "StatusCode.UNAVAILABLE"
        assert "load / unload is not allowed" in caught.value.message()
        assert client.is_model_ready(MODEL_NAME)


@pytest.mark.parametrize("action", ["load", "unload"])
@pytest.mark.parametrize(("with_key", "refusal"), [(False, "restricted"), (True, "load / unload is not allowed")])
def test_model_load_and_unload_over_http_are_refused_even_with_the_admin_key(action, with_key, refusal, own_server):
    request = urllib.request.Request(
        f"{own_server.config.http_url}/v2/repository/models/{MODEL_NAME}/{action}", data=b"{}", method="POST",
        headers=own_server.http_admin_headers if with_key else {},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert refusal in json.loads(caught.value.read())["error"]
    with grpcclient.InferenceServerClient(own_server.config.grpc_url) as client:
        assert client.is_model_ready(MODEL_NAME)


def _score(folder, out, server, *extra):
    return support.run_facialattr("score", folder, "--out", out, "--no-progress", "--url", server.config.grpc_url, *extra)


def _rows(out) -> dict[str, dict]:
    return {row["path"]: row for row in map(json.loads, out.read_text().splitlines())}


@pytest.fixture
def folder_with_links(tmp_path):
    """A scored folder holding a face, a link to a file outside it, and a link to /dev/zero."""
    import reliability_corpus as corpus

    scored, outside = tmp_path / "scored", tmp_path / "private"
    scored.mkdir()
    outside.mkdir()
    jpeg = corpus.encode(corpus.picture(), "JPEG")
    (scored / "face.jpg").write_bytes(jpeg)
    (outside / "secret.jpg").write_bytes(jpeg)
    (scored / "secret.jpg").symlink_to(outside / "secret.jpg")
    (scored / "zero.jpg").symlink_to("/dev/zero")
    return scored


def test_links_leading_outside_the_scored_folder_are_not_read_by_default(folder_with_links, own_server, tmp_path):
    out = tmp_path / "default.jsonl"
    run = _score(folder_with_links, out, own_server)
    rows = _rows(out)
    assert rows[str(folder_with_links / "face.jpg")]["status"] == "ok"
    for name in ("secret.jpg", "zero.jpg"):
        row = rows.get(str(folder_with_links / name))
        assert row is None or row["status"] == "error", f"{name} was read through a link leading outside the folder"
    assert "not followed" in run.stderr or run.returncode == 3, run.stderr


def test_follow_symlinks_reads_outside_files_but_never_a_device(folder_with_links, own_server, tmp_path):
    out = tmp_path / "followed.jsonl"
    run = _score(folder_with_links, out, own_server, "--follow-symlinks")
    assert run.returncode == 3, run.stderr  # some inputs failed: the device
    rows = _rows(out)
    assert rows[str(folder_with_links / "secret.jpg")]["status"] == "ok"
    zero = rows[str(folder_with_links / "zero.jpg")]
    assert zero["status"] == "error" and "not a regular file" in zero["error"]


def test_shared_memory_api_is_restricted_by_default_and_opens_only_with_the_per_start_key(own_server):
    """Without the key a local client cannot make the server map a /dev/shm region it names."""
    with grpcclient.InferenceServerClient(own_server.config.grpc_url) as client:
        with pytest.raises(InferenceServerException) as caught:
            client.register_system_shared_memory("probe", "/facialattr_no_such_region", 64)
        assert "restricted" in caught.value.message()
        with pytest.raises(InferenceServerException) as caught:
            client.register_system_shared_memory("probe", "/facialattr_no_such_region", 64,
                                                 headers=own_server.grpc_admin_headers)
        assert "Unable to open shared memory region" in caught.value.message()


@pytest.fixture
def certificate(tmp_path):
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    key, cert = tmp_path / "server.key", tmp_path / "server.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return key, cert


def test_the_exposure_flags_in_security_md_work_on_the_bundled_server(certificate, own_repository):
    """TLS on gRPC and a header key on the admin protocols, exactly as SECURITY.md tells operators."""
    import numpy as np
    from facialattr.serving import embedded

    key, cert = certificate
    flags = ("--grpc-use-ssl=true", f"--grpc-server-cert={cert}", f"--grpc-server-key={key}")
    config = dataclasses.replace(support.Ports.pick().server_config(own_repository), extra_args=flags)
    server = embedded.EmbeddedTriton(config).start()
    url = f"localhost:{server.config.grpc_port}"
    try:
        with grpcclient.InferenceServerClient(url) as plain:
            with pytest.raises(InferenceServerException):
                plain.is_server_live(client_timeout=10)
        with grpcclient.InferenceServerClient(url, ssl=True, root_certificates=str(cert)) as tls:
            images = grpcclient.InferInput("images", [1, *support.SIZE_HW, 3], "UINT8")
            images.set_data_from_numpy(np.zeros((1, *support.SIZE_HW, 3), np.uint8))
            assert tls.infer(MODEL_NAME, [images]).as_numpy("probabilities").shape == (1, 40)
            with pytest.raises(InferenceServerException) as caught:
                tls.register_system_shared_memory("probe", "/facialattr_no_such_region", 64)
            assert "restricted" in caught.value.message()
    finally:
        server.stop()
