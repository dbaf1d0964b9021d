"""The project's image and docker-compose.yml's `cpu` profile, run by the real Docker engine.

Without an engine these tests skip with the reason; FACIALATTR_REQUIRE_DOCKER=1 (CI, after
docker/install-engine.sh) turns the skip into a failure. The image is built by docker/build-image.sh,
the same script `make docker-quickstart` runs (its layer cache makes a rebuild of an unchanged tree quick).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from testsupport import free_ports, start_server, wait_until

from facialattr import MODEL_NAME
from facialattr.client.bulk import score_paths
from facialattr.client.settings import ScorerSettings
from facialattr.serving.endpoint import answers_ready

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "facialattr:latest"
CONTAINER_UID = 10001  # the image's user (Dockerfile)
N_IMAGES = 240
COMPOSE_CLIS = {"v2": ["docker", "compose"], "v1": ["docker-compose"]}

pytestmark = pytest.mark.slow


def _engine_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker engine answers `docker info` (docker/install-engine.sh starts one)"
    for name, cli in COMPOSE_CLIS.items():
        if shutil.which(cli[0]) is None or subprocess.run([*cli, "version"], capture_output=True).returncode != 0:
            return f"no compose {name} CLI ({' '.join(cli)})"
    return None


@pytest.fixture(scope="module")
def image() -> str:
    problem = _engine_problem()
    if problem:
        if os.environ.get("FACIALATTR_REQUIRE_DOCKER") == "1":
            pytest.fail(f"FACIALATTR_REQUIRE_DOCKER=1 but {problem}")
        pytest.skip(problem)
    build = subprocess.run([str(ROOT / "docker" / "build-image.sh")], env={**os.environ, "IMAGE": IMAGE},
                           capture_output=True, text=True, timeout=1200)
    assert build.returncode == 0, build.stderr
    return IMAGE


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """Real JPEGs of varied size and quality cut from scikit-image's photos, and one truncated file."""
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("faces")
    photos = [data.astronaut(), data.chelsea(), data.coffee(), np.stack([data.camera()] * 3, axis=-1)]
    rng = np.random.default_rng(7)
    for i in range(N_IMAGES):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = rng.integers(h // 3, h), rng.integers(w // 3, w)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = Image.fromarray(photo[y:y + ch, x:x + cw]).resize((178, 218))
        crop.save(folder / f"face{i:03d}.jpg", quality=int(rng.integers(60, 96)))
    (folder / "truncated.jpg").write_bytes((folder / "face000.jpg").read_bytes()[:600])
    # The container's user reads them through the bind mount (pytest's folders are 0700).
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


class Stack:
    """One compose project of the `cpu` profile on free host ports; `down` on close."""

    def __init__(self, cli: list[str], name: str, *, images: Path, results: Path, uid: int) -> None:
        self.cli, self.name = cli, name
        grpc, metrics, supervisor = free_ports(3)
        self.grpc_url, self.ready_url = f"127.0.0.1:{grpc}", f"http://127.0.0.1:{supervisor}/ready"
        self.metrics_url = f"http://127.0.0.1:{supervisor}/metrics"
        self.env = {**os.environ, "FACIALATTR_IMAGE": IMAGE, "FACIALATTR_IMAGES": str(images),
                    "FACIALATTR_RESULTS": str(results), "FACIALATTR_OUT": "results.csv",
                    "FACIALATTR_UID": str(uid), "FACIALATTR_GID": str(uid), "FACIALATTR_GRPC_PORT": str(grpc),
                    "FACIALATTR_METRICS_PORT": str(metrics), "FACIALATTR_SUPERVISOR_PORT": str(supervisor)}

    def compose(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([*self.cli, "-f", str(ROOT / "docker-compose.yml"), "-p", self.name, "--profile", "cpu",
                               *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)

    def container(self, service: str = "triton-cpu") -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans")


def _results_folder(tmp_path: Path, uid: int) -> Path:
    results = tmp_path / "results"
    results.mkdir()
    os.chown(results, uid, uid)
    return results


def _probabilities_by_name(out: Path) -> dict[str, list[float] | None]:
    import csv

    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    names = [c for c in rows[0] if c.endswith("_present")]
    return {Path(r["path"]).name: ([float(r[n[: -len("_present")]]) for n in names] if r["status"] == "ok" else None)
            for r in rows}


@pytest.fixture(scope="module")
def embedded_rows(faces, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("embedded") / "results.csv"
    server = start_server(ROOT / "model_repository")
    try:
        score_paths([faces], out=out, settings=ScorerSettings(urls=server.config.grpc_url), recursive=True, progress=False)
    finally:
        server.stop()
    return _probabilities_by_name(out)


@pytest.mark.parametrize("cli", sorted(COMPOSE_CLIS))
def test_one_shot_score_service_scores_a_folder_like_the_embedded_server_and_exits_with_the_scorers_code(
        cli, image, faces, embedded_rows, tmp_path):
    uid = os.getuid() if os.getuid() != 0 else CONTAINER_UID
    results = _results_folder(tmp_path, uid)
    stack = Stack(COMPOSE_CLIS[cli], f"facialattr-test-{cli}-{os.getpid()}", images=faces, results=results, uid=uid)
    try:
        run = stack.compose("up", "--exit-code-from", "score", timeout_s=600)
    finally:
        stack.down()
    # One truncated file: the scorer's "some inputs failed" code, through compose.
    assert run.returncode == 3, run.stdout[-3000:] + run.stderr[-3000:]
    container_rows = _probabilities_by_name(results / "results.csv")
    assert container_rows.keys() == embedded_rows.keys() and len(container_rows) == N_IMAGES + 1
    assert container_rows["truncated.jpg"] is None and embedded_rows["truncated.jpg"] is None
    diff = max(float(np.max(np.abs(np.subtract(container_rows[k], embedded_rows[k]))))
               for k in container_rows if container_rows[k] is not None)
    assert diff <= 1e-5
    info = (results / "results.csv").stat()
    assert (info.st_uid, info.st_mode & 0o777) == (uid, 0o600)


@pytest.fixture(scope="module")
def server_stack(image, tmp_path_factory, faces):
    results = _results_folder(tmp_path_factory.mktemp("stack"), CONTAINER_UID)
    stack = Stack(COMPOSE_CLIS["v2"], f"facialattr-test-server-{os.getpid()}", images=faces, results=results,
                  uid=CONTAINER_UID)
    started = stack.compose("up", "-d", "triton-cpu")
    assert started.returncode == 0, started.stderr
    try:
        wait_until(lambda: answers_ready(stack.ready_url), timeout_s=120, what="the container's /ready")
        yield stack
    finally:
        stack.down()


def _infer_once(url: str) -> np.ndarray:
    with grpcclient.InferenceServerClient(url) as client:
        images = grpcclient.InferInput("images", [1, 128, 128, 3], "UINT8")
        images.set_data_from_numpy(np.full((1, 128, 128, 3), 128, dtype=np.uint8))
        return client.infer(MODEL_NAME, [images], client_timeout=10).as_numpy("probabilities")


def test_container_is_healthy_and_runs_as_its_non_root_user(server_stack):
    container = server_stack.container()
    wait_until(lambda: _inspect(container, "{{.State.Health.Status}}") == "healthy", timeout_s=60, what="healthy")
    assert _exec(server_stack, "id", "-u").stdout.strip() == str(CONTAINER_UID)
    assert _inspect(container, "{{.Config.User}}") == f"{CONTAINER_UID}:{CONTAINER_UID}"
    assert _infer_once(server_stack.grpc_url).shape == (1, 40)


def test_prebuilt_preload_keeps_the_admin_key_off_tritonservers_command_line_in_the_image(server_stack):
    from facialattr.serving.preload import PLACEHOLDER

    cmdline = _exec(server_stack, "python3", "-c",
                    "import os\n"
                    "for p in filter(str.isdigit, os.listdir('/proc')):\n"
                    "    if open(f'/proc/{p}/comm').read().strip() == 'tritonserver':\n"
                    "        print(open(f'/proc/{p}/cmdline').read().replace(chr(0), ' '))")
    restricted = [arg for arg in cmdline.stdout.split() if arg.startswith("--grpc-restricted-protocol=")]
    assert restricted and restricted[0].endswith(f"={PLACEHOLDER}"), cmdline.stdout


@pytest.mark.parametrize(("path", "writable"), [
    ("/tmp/probe", True), ("/dev/shm/probe", True),
    ("/probe", False), ("/opt/facialattr/probe", False), ("/etc/probe", False), ("/models/probe", False),
    ("/models/facial_attributes/config.pbtxt", False), ("/results/probe", False),  # /results: a volume of score only
])
def test_server_container_writes_only_tmp_and_shared_memory(server_stack, path, writable):
    probe = _exec(server_stack, "python3", "-c", f"open({path!r}, 'a').close()")
    assert (probe.returncode == 0) is writable, probe.stderr


def test_tritonserver_killed_inside_the_container_is_restarted_by_the_supervisor_within_30_s(server_stack):
    container = server_stack.container()
    restarts_before = _inspect(container, "{{.RestartCount}}")
    kill = _exec(server_stack, "python3", "-c",
                 "import os, signal\n"
                 "pids = [int(p) for p in os.listdir('/proc') if p.isdigit()\n"
                 "        and open(f'/proc/{p}/comm').read().strip() == 'tritonserver']\n"
                 "assert pids, 'no tritonserver'\n"
                 "[os.kill(p, signal.SIGKILL) for p in pids]")
    assert kill.returncode == 0, kill.stderr
    killed = time.monotonic()
    wait_until(lambda: not answers_ready(server_stack.ready_url), timeout_s=10, interval_s=0.05, what="/ready to drop")
    wait_until(lambda: answers_ready(server_stack.ready_url), timeout_s=30, what="/ready again")
    assert _infer_once(server_stack.grpc_url).shape == (1, 40)
    assert time.monotonic() - killed <= 30
    # The container never restarted: serve's supervisor brought tritonserver back and counted it.
    assert _inspect(container, "{{.RestartCount}}") == restarts_before
    with urllib.request.urlopen(server_stack.metrics_url, timeout=5) as answer:
        metrics = answer.read().decode()
    assert 'facialattr_triton_restarts_total{reason="exited"} 1' in metrics, metrics


def test_down_leaves_no_container_or_network_of_the_project(image, faces, tmp_path):
    results = _results_folder(tmp_path, CONTAINER_UID)
    stack = Stack(COMPOSE_CLIS["v2"], f"facialattr-test-down-{os.getpid()}", images=faces, results=results,
                  uid=CONTAINER_UID)
    assert stack.compose("up", "-d", "triton-cpu").returncode == 0
    stack.down()
    label = f"label=com.docker.compose.project={stack.name}"
    containers = subprocess.run(["docker", "ps", "-a", "-q", "--filter", label], capture_output=True, text=True)
    networks = subprocess.run(["docker", "network", "ls", "-q", "--filter", label], capture_output=True, text=True)
    assert (containers.stdout.strip(), networks.stdout.strip()) == ("", "")


def _exec(stack: Stack, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "exec", stack.container(), *argv], capture_output=True, text=True, timeout=60)


def _inspect(container: str, template: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", template, container], capture_output=True, text=True).stdout.strip()


def test_image_stays_within_its_size_budget(image):
    size_bytes = int(json.loads(subprocess.run(["docker", "image", "inspect", image], capture_output=True,
                                               text=True).stdout)[0]["Size"])
    assert size_bytes <= 900_000_000
