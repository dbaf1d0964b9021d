"""Processes killed mid-run: the server (client waits, retries or fails over; the supervisor of
``facialattr serve`` restarts it) and the client (--resume).

Every run scores the same folder of 1,000 small JPEGs with the real ``facialattr
score`` process against real servers whose model sleeps a little per batch, so
a run lasts a few seconds and can be interrupted in its middle. The outcome is
compared row by row with an undisturbed run of the same command.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import reliability_support as support

from facialattr.contract import CELEBA_ATTRIBUTES
from facialattr.serving.supervisor import Supervisor, stub_processes

N_IMAGES = 1000
DELAY_S = 0.05  # per batch of 16: a run takes about 3 s, long enough to kill it in the middle
EXIT_OK = 0


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    import simplejpeg

    folder = tmp_path_factory.mktemp("thousand")
    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 1, 64)[:, None, None]
    for i in range(N_IMAGES):
        top, bottom = rng.uniform(0, 255, size=(2, 1, 1, 3))
        pixels = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (64, 64, 3))
        (folder / f"img{i:04d}.jpg").write_bytes(simplejpeg.encode_jpeg(np.ascontiguousarray(pixels, np.uint8), quality=90))
    return folder


def start_scoring(folder: Path, out: Path, urls: list[str], *extra: str) -> subprocess.Popen:
    # --connect-timeout: one test starts the server after the client, and a server can take 10 s to come up.
    args = ["score", folder, "--out", out, "--no-progress", "--give-up-after", "120", "--connect-timeout", "120"]
    for url in urls:
        args += ["--url", url]
    # A file, not a pipe: a chatty child never blocks on a full pipe nobody reads.
    with open(out.with_name(out.name + ".log"), "w") as log:
        return subprocess.Popen(support.facialattr_command(*args, *extra), stdout=log, stderr=subprocess.STDOUT)


def log_of(out: Path) -> str:
    return out.with_name(out.name + ".log").read_text()


def probabilities(rows: list[dict]) -> dict[str, np.ndarray]:
    return {r["path"]: np.array([float(r[n]) for n in CELEBA_ATTRIBUTES], np.float32) for r in rows}


def assert_every_image_once_as_undisturbed(out: Path, images: Path, undisturbed: dict[str, np.ndarray]) -> None:
    rows = support.read_rows(out)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == N_IMAGES, f"{len(paths)} rows, {len(set(paths))} distinct"
    assert set(paths) == {str(p) for p in images.iterdir()}
    assert {r["status"] for r in rows} == {"ok"}
    got = probabilities(rows)
    for path, expected in undisturbed.items():
        np.testing.assert_allclose(got[path], expected, rtol=0, atol=1e-6, err_msg=path)


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory, images, own_server) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("undisturbed") / "scores.csv"
    client = start_scoring(images, out, [own_server.config.grpc_url])
    assert client.wait(timeout=300) == EXIT_OK, log_of(out)
    rows = support.read_rows(out)
    assert len(rows) == N_IMAGES
    return probabilities(rows)


@pytest.fixture
def cleanup():
    """Processes and servers a test started: stopped whatever happens."""
    started: list = []
    yield started
    for thing in reversed(started):
        if isinstance(thing, subprocess.Popen):
            if thing.poll() is None:
                thing.kill()
            thing.wait()
        else:
            thing.stop()


def kill_server(server) -> None:
    """SIGKILL tritonserver's whole process group (server and Python-backend stubs), then tidy up."""
    os.killpg(server.pid, signal.SIGKILL)
    server.stop()


def wait_for_progress(urls: list[str], client: subprocess.Popen, *, at_least: int) -> None:
    support.wait_until(lambda: client.poll() is not None or sum(support.success_count(u) for u in urls) >= at_least,
                       timeout_s=120, what=f"{at_least} images scored")
    assert client.poll() is None, "the run finished before it could be interrupted"


def test_server_killed_mid_run_the_client_waits_and_finishes_every_image_once_when_it_is_back(
        tmp_path, own_repository, images, undisturbed, cleanup):
    server = support.start(own_repository, delay_s=DELAY_S)
    ports = support.Ports.of(server)
    cleanup.append(server)
    out = tmp_path / "scores.csv"
    client = start_scoring(images, out, [ports.grpc_url])
    cleanup.append(client)
    wait_for_progress([ports.grpc_url], client, at_least=N_IMAGES // 4)
    kill_server(server)
    # The client meets the outage for a while; it must keep waiting rather than finish or give up.
    time.sleep(2.0)
    assert client.poll() is None, f"the client stopped while the server was down:\n{log_of(out)}"
    cleanup.append(support.start(own_repository, ports))  # back on the same ports
    assert client.wait(timeout=180) == EXIT_OK, log_of(out)
    assert_every_image_once_as_undisturbed(out, images, undisturbed)


def test_server_killed_mid_run_the_client_fails_over_to_the_second_endpoint(
        tmp_path, own_repository, images, undisturbed, cleanup):
    first, second = (support.start(own_repository, delay_s=DELAY_S) for _ in range(2))
    cleanup += [first, second]
    urls = [first.config.grpc_url, second.config.grpc_url]
    out = tmp_path / "scores.jsonl"
    client = start_scoring(images, out, urls)
    cleanup.append(client)
    wait_for_progress(urls, client, at_least=N_IMAGES // 4)
    kill_server(first)
    assert client.wait(timeout=180) == EXIT_OK, log_of(out)
    assert_every_image_once_as_undisturbed(out, images, undisturbed)
    assert support.success_count(second.config.grpc_url) > N_IMAGES // 2


@pytest.fixture(scope="module")
def slow_server(own_repository):
    server = support.start(own_repository, delay_s=DELAY_S)
    yield server
    server.stop()


def complete_lines(path: Path) -> list[bytes]:
    """The lines a crash cannot have torn: everything up to the last newline."""
    data = path.read_bytes() if path.exists() else b""
    return data[: data.rfind(b"\n") + 1].splitlines()


def written_paths(out: Path) -> list[str]:
    """Rows on disk after a crash, each checked to be a whole, well-formed row."""
    if out.suffix == ".csv":
        lines = complete_lines(out)
        header, rows = next(csv.reader([lines[0].decode()])), list(csv.reader(line.decode() for line in lines[1:]))
        assert all(len(row) == len(header) for row in rows), "a complete CSV line is not a whole row"
        return [row[0] for row in rows]
    journal = out if out.suffix == ".jsonl" else out.with_name(f".{out.name}.journal.jsonl")
    if out.suffix == ".parquet":
        assert not out.exists(), "an unfinished run must not leave a Parquet file that looks complete"
    rows = [json.loads(line) for line in complete_lines(journal)]
    assert all(set(CELEBA_ATTRIBUTES) <= set(row) for row in rows), "a complete JSONL line is not a whole row"
    return [row["path"] for row in rows]


def wait_until_server_idle(url: str) -> int:
    """The server's success count once the dead client's requests have drained (stable for 1 s)."""
    counts = [support.success_count(url)]
    while True:
        time.sleep(1.0)
        counts.append(support.success_count(url))
        if counts[-1] == counts[-2]:
            return counts[-1]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_client_killed_mid_run_leaves_whole_rows_and_resume_scores_only_the_rest(
        suffix, tmp_path, images, undisturbed, slow_server, cleanup):
    url = slow_server.config.grpc_url
    out = tmp_path / f"scores{suffix}"
    start_count = support.success_count(url)
    client = start_scoring(images, out, [url])
    cleanup.append(client)
    wait_for_progress([url], client, at_least=start_count + N_IMAGES // 3)
    client.send_signal(signal.SIGKILL)
    client.wait()
    done = written_paths(out)
    assert 0 < len(done) < N_IMAGES and len(set(done)) == len(done)
    before_resume = wait_until_server_idle(url)
    resumed = start_scoring(images, out, [url], "--resume")
    cleanup.append(resumed)
    assert resumed.wait(timeout=180) == EXIT_OK, log_of(out)
    # The server's own count: the resumed run sent exactly the images that were not on disk.
    assert support.success_count(url) - before_resume == N_IMAGES - len(done)
    assert_every_image_once_as_undisturbed(out, images, undisturbed)


def test_server_not_yet_up_when_the_run_starts_the_client_waits_for_it(
        tmp_path, own_repository, images, undisturbed, cleanup):
    ports = support.Ports.pick()
    out = tmp_path / "scores.csv"
    client = start_scoring(images, out, [ports.grpc_url])
    cleanup.append(client)
    time.sleep(2.0)  # nothing listens on the port yet
    assert client.poll() is None, f"the client did not wait for the server:\n{log_of(out)}"
    cleanup.append(support.start(own_repository, ports))
    assert client.wait(timeout=180) == EXIT_OK, log_of(out)
    assert_every_image_once_as_undisturbed(out, images, undisturbed)


def start_supervised(repo: Path) -> Supervisor:
    """The slow server under the supervisor ``facialattr serve`` uses, in a thread of its own; stop() ends it."""
    supervisor = Supervisor(support.AUTOMATIC.server_config(repo),
                            server_factory=lambda config: support.SlowEmbeddedTriton(config, delay_s=DELAY_S))
    return supervisor.__enter__()


@pytest.mark.parametrize(("victim", "reason"), [("tritonserver", "exited"), ("stub", "stub")])
def test_server_process_killed_mid_run_the_supervisor_restarts_it_and_the_run_finishes_every_image_once(
        victim, reason, tmp_path, own_repository, images, undisturbed, cleanup):
    """kill -9 of tritonserver alone, or of its Python-backend stub (which Triton never replaces)."""
    supervisor = start_supervised(own_repository)
    cleanup.append(supervisor)
    url = supervisor.config.grpc_url
    out = tmp_path / "scores.csv"
    client = start_scoring(images, out, [url])
    cleanup.append(client)
    wait_for_progress([url], client, at_least=N_IMAGES // 4)
    pid = supervisor.server.pid
    os.kill(pid if victim == "tritonserver" else stub_processes(pid)[0][0], signal.SIGKILL)
    assert client.wait(timeout=180) == EXIT_OK, log_of(out)
    assert_every_image_once_as_undisturbed(out, images, undisturbed)
    assert supervisor.restarts == {"exited": 0, "stub": 0, "probe": 0, "memory": 0} | {reason: 1}


def test_server_hung_mid_run_requests_time_out_are_retried_and_every_image_is_written_once(
        tmp_path, own_repository, images, undisturbed, cleanup):
    """SIGSTOP: the server holds its connections but answers nothing (a stalled host, a stuck process).

    After SIGCONT tritonserver 2.51 often aborts (docs/RELIABILITY.md); the supervisor brings it back.
    """
    supervisor = start_supervised(own_repository)
    cleanup.append(supervisor)
    url = supervisor.config.grpc_url
    out = tmp_path / "scores.jsonl"
    # A 3 s deadline, not 1 s: abandoned requests stay in Triton's queue, and on a loaded CI machine
    # 1 s retries were re-sent faster than the slowed model drained them, so the run never caught up.
    client = start_scoring(images, out, [url], "--timeout", "3")
    cleanup.append(client)
    wait_for_progress([url], client, at_least=N_IMAGES // 4)
    pgid = supervisor.server.pid
    os.killpg(pgid, signal.SIGSTOP)
    try:
        time.sleep(7.0)  # two request deadlines pass
        assert client.poll() is None, f"the client stopped while the server was hung:\n{log_of(out)}"
    finally:
        with contextlib.suppress(ProcessLookupError):  # already replaced by the supervisor
            os.killpg(pgid, signal.SIGCONT)
    assert client.wait(timeout=180) == EXIT_OK, log_of(out)
    assert_every_image_once_as_undisturbed(out, images, undisturbed)


def test_deadline_cancelled_requests_alone_do_not_crash_the_server(own_repository, cleanup):
    """1,000 requests that give up (gRPC deadline) while queued or executing, without any SIGSTOP."""
    import queue

    import tritonclient.grpc as grpcclient

    server = support.start(own_repository, delay_s=DELAY_S)
    cleanup.append(server)
    client = grpcclient.InferenceServerClient(server.config.grpc_url)
    image = grpcclient.InferInput("images", [1, *support.SIZE_HW, 3], "UINT8")
    image.set_data_from_numpy(support.random_uint8((1, *support.SIZE_HW, 3)))
    statuses: queue.Queue = queue.Queue()
    seen: list[str] = []
    for _wave in range(5):  # waves of 200 stay under the queue bound (512): cancelled, not rejected
        for _ in range(200):
            client.async_infer("facial_attributes", [image], lambda result, error: statuses.put(
                error.status() if error else "ok"), client_timeout=0.05)
        seen += [statuses.get(timeout=60) for _ in range(200)]
        time.sleep(0.5)
    cancelled = seen.count("StatusCode.DEADLINE_EXCEEDED")
    assert cancelled >= 500, f"only {cancelled} of 1,000 requests ran past their deadline: {set(seen)}"
    time.sleep(3.0)  # the server drains what the clients abandoned
    assert server.is_running(), server.log_tail()
    assert client.infer("facial_attributes", [image], client_timeout=30).as_numpy("probabilities").shape == (1, 40)
