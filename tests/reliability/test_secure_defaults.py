"""Secure defaults: loopback only, no model control, no files outside the scored roots, no face images kept."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import reliability_support as support
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from facialattr import MODEL_NAME


def _server_ports(config) -> set[int]:
    return {config.grpc_port, config.metrics_port} | ({config.http_port} if config.allow_http else set())


def test_embedded_server_listens_on_loopback_only_and_serves_no_http_by_default(own_server):
    listening = support.listening_addresses(own_server.pid)
    assert {port for _, port in listening} == {own_server.config.grpc_port, own_server.config.metrics_port}
    assert {address for address, _ in listening} == {"127.0.0.1"}


def test_host_setting_is_what_the_server_binds(own_repository):
    """The detector above can fail: another loopback address shows up as itself (nothing is exposed)."""
    server = support.start(own_repository, host="127.0.0.2", allow_http=True)
    try:
        listening = support.listening_addresses(server.pid)
        assert {port for _, port in listening} >= _server_ports(server.config)
        assert {address for address, port in listening if port in _server_ports(server.config)} == {"127.0.0.2"}
    finally:
        server.stop()


def test_serve_command_binds_loopback_by_default(own_repository):
    from testsupport import start_serve_command

    serve, grpc_port = start_serve_command(own_repository)
    try:
        (triton_pid,) = support.child_pids(serve.pid)
        listening = support.listening_addresses(triton_pid)
        assert grpc_port in {port for _, port in listening}
        assert {address for address, _ in listening} == {"127.0.0.1"}
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0


@pytest.fixture(scope="module")
def http_server(own_repository):
    """A server with HTTP turned on (``--http``), for the HTTP API's own checks."""
    server = support.start(own_repository, allow_http=True)
    yield server
    server.stop()


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
def test_model_load_and_unload_over_http_are_refused_even_with_the_admin_key(action, with_key, refusal, http_server):
    request = urllib.request.Request(
        f"{http_server.config.http_url}/v2/repository/models/{MODEL_NAME}/{action}", data=b"{}", method="POST",
        headers=http_server.http_admin_headers if with_key else {},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert refusal in json.loads(caught.value.read())["error"]
    with grpcclient.InferenceServerClient(http_server.config.grpc_url) as client:
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
    config = dataclasses.replace(support.AUTOMATIC.server_config(own_repository), extra_args=flags)
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


# Another local user: 'nobody', as an unprivileged account on the same host would be.
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="acting as another user needs root and setpriv")


def _as_nobody(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([*NOBODY, *command], capture_output=True, timeout=30, check=False)


def _server_and_stub_pids(server) -> list[int]:
    return [server.pid, *support.child_pids(server.pid)]


def test_admin_key_is_on_no_command_line_and_still_opens_the_admin_apis(http_server):
    key = http_server.admin_key.encode()
    pids = _server_and_stub_pids(http_server)
    assert len(pids) >= 2, "expected tritonserver and at least one Python-backend stub"
    for pid in pids:
        assert key not in Path(f"/proc/{pid}/cmdline").read_bytes()
    with grpcclient.InferenceServerClient(http_server.config.grpc_url) as client:
        assert client.get_log_settings(headers=http_server.grpc_admin_headers)
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_log_settings()
    request = urllib.request.Request(f"{http_server.config.http_url}/v2/logging", headers=http_server.http_admin_headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@needs_root
def test_another_local_user_cannot_read_the_admin_key(http_server):
    key = http_server.admin_key.encode()
    listing = _as_nobody("ps", "-eww", "-o", "args")
    assert listing.returncode == 0 and b"tritonserver" in listing.stdout
    assert key not in listing.stdout
    for pid in _server_and_stub_pids(http_server):
        cmdline = _as_nobody("cat", f"/proc/{pid}/cmdline")
        assert cmdline.returncode == 0 and key not in cmdline.stdout
        environ = _as_nobody("cat", f"/proc/{pid}/environ")
        assert environ.returncode != 0 and b"Permission denied" in environ.stderr
    # The server's own environment no longer holds it either (only its user could read that).
    for pid in _server_and_stub_pids(http_server):
        assert key not in Path(f"/proc/{pid}/environ").read_bytes()


def _shm_regions(server) -> list[Path]:
    regions = sorted(Path("/dev/shm").glob(f"{server.shm_prefix}*"))
    assert regions, "the Python backend should hold shared-memory regions"
    return regions


def test_shared_memory_regions_holding_face_crops_are_private_to_the_server_user(own_server):
    import numpy as np

    with grpcclient.InferenceServerClient(own_server.config.grpc_url) as client:
        images = grpcclient.InferInput("images", [2, *support.SIZE_HW, 3], "UINT8")
        images.set_data_from_numpy(support.random_uint8((2, *support.SIZE_HW, 3)))
        assert np.all(client.infer(MODEL_NAME, [images]).as_numpy("probabilities") > 0)
    for region in _shm_regions(own_server):
        assert region.stat().st_mode & 0o777 == 0o600, f"{region} is {oct(region.stat().st_mode & 0o777)}"


@needs_root
def test_another_local_user_cannot_open_the_shared_memory_regions(own_server):
    for region in _shm_regions(own_server):
        read = _as_nobody("cat", str(region))
        assert read.returncode != 0 and b"Permission denied" in read.stderr, region


def test_without_a_c_compiler_the_server_starts_and_warns_that_key_and_crops_are_readable(
        own_repository, monkeypatch, caplog):
    """What SECURITY.md says does not hold without ``cc``: the warning names it, and it is true."""
    from facialattr.serving import preload

    monkeypatch.setattr(preload, "compiler", lambda: None)
    with caplog.at_level("WARNING", logger="facialattr.serving.embedded"):
        server = support.start(own_repository)
    try:
        assert "admin key is on tritonserver's command line" in caplog.text
        assert server.admin_key.encode() in Path(f"/proc/{server.pid}/cmdline").read_bytes()
        with grpcclient.InferenceServerClient(server.config.grpc_url) as client:
            assert client.get_log_settings(headers=server.grpc_admin_headers)
    finally:
        server.stop()
