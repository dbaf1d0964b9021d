"""``facialattr score --engine ray`` against real parts.

A Ray head started as its own process (``ray start --head``), two embedded Triton servers,
N_IMAGES test-made JPEGs plus broken files; every run is the real command in a subprocess.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from testsupport import free_ports, start_server

from facialattr.contract import CELEBA_ATTRIBUTES
from facialattr.errors import EXIT_FATAL, EXIT_SOME_INPUTS_FAILED

pytest.importorskip("ray", reason="the Ray engine needs the 'ray' extra")

# The issue asks for 2,000 images; CI runs them on a quiet machine.
N_IMAGES = 2000
SHARD_SIZE = 50
BROKEN = {"truncated.jpg": "corrupt", "notes.jpg": "unsupported_format", "empty.jpg": "empty"}
N_INPUTS = N_IMAGES + len(BROKEN)
RUN_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def ray_address():
    """A Ray head of its own (2 CPUs, no dashboard), stopped by its process group at the end."""
    from facialattr.client.ray_cluster import start_ray_head, stop_ray_head

    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay short
    head, address = start_ray_head(temp_dir, num_cpus=2)
    yield address
    stop_ray_head(head)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server_b(tiny_repository):
    server = start_server(tiny_repository)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, make_jpegs) -> Path:
    folder = tmp_path_factory.mktemp("ray-inputs")
    paths = make_jpegs(folder, N_IMAGES)
    (folder / "truncated.jpg").write_bytes(paths[0].read_bytes()[:300])
    (folder / "notes.jpg").write_text("not a picture")
    (folder / "empty.jpg").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def single_process_rows(inputs, grpc_url, tmp_path_factory) -> dict[str, dict]:
    """What the single-process ``facialattr score`` writes for the same inputs (Parquet)."""
    out = tmp_path_factory.mktemp("single") / "single.parquet"
    done = _score(inputs, out, [grpc_url], "--engine", "local")
    assert done.returncode == EXIT_SOME_INPUTS_FAILED, done.stderr
    return _rows(out)


def _command(folder: Path, out: Path, urls: list[str], *extra: str) -> list[str]:
    urls_args = [a for url in urls for a in ("--url", url)]
    return [sys.executable, "-m", "facialattr.app.cli", "score", str(folder), "--out", str(out), *urls_args,
            "--no-progress", *extra]


def _score(folder: Path, out: Path, urls: list[str], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(folder, out, urls, *extra), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def _ray_args(address: str, *extra: str) -> list[str]:
    return ["--engine", "ray", "--ray-address", address, "--shard-size", str(SHARD_SIZE), *extra]


def _rows(out: Path) -> dict[str, dict]:
    """path -> row; fails when any input has more than one row."""
    import pyarrow.parquet as pq

    rows = pq.read_table(out).to_pylist()
    by_path = {row["path"]: row for row in rows}
    assert len(by_path) == len(rows), "an input has more than one row"
    return by_path


def _shards(out: Path) -> list[Path]:
    return sorted(out.glob("part-*.parquet"))


def _wait_for_shards(proc: subprocess.Popen, out: Path, n: int) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while len(_shards(out)) < n:
        assert proc.poll() is None, f"the run ended before writing {n} shards: {proc.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.2)


def assert_same_rows(ray_rows: dict[str, dict], single_rows: dict[str, dict]) -> None:
    assert sorted(ray_rows) == sorted(single_rows)
    assert len(ray_rows) == N_INPUTS
    for path, expected in single_rows.items():
        got = ray_rows[path]
        assert (got["status"], got["error_kind"], got["error"]) == (expected["status"], expected["error_kind"],
                                                                     expected["error"]), path
        assert got["path_bytes"] == expected["path_bytes"] and got["top10"] == expected["top10"], path
        if expected["status"] == "ok":
            np.testing.assert_allclose([got[n] for n in CELEBA_ATTRIBUTES], [expected[n] for n in CELEBA_ATTRIBUTES],
                                       rtol=0, atol=1e-6)
    kinds = {os.path.basename(p): r["error_kind"] for p, r in ray_rows.items() if r["status"] == "error"}
    assert kinds == BROKEN


def test_rows_equal_the_single_process_scorer_including_error_rows(inputs, ray_address, grpc_url, server_b,
                                                                   single_process_rows, tmp_path):
    out = tmp_path / "scores"
    done = _score(inputs, out, [grpc_url, server_b.config.grpc_url], *_ray_args(ray_address))
    assert done.returncode == EXIT_SOME_INPUTS_FAILED, done.stderr[-3000:]
    assert_same_rows(_rows(out), single_process_rows)
    assert len(_shards(out)) == -(-N_INPUTS // SHARD_SIZE)
    assert f"{N_INPUTS} inputs this run" in done.stderr and f"{N_IMAGES} scored, {len(BROKEN)} failed" in done.stderr
    assert ", 2 actors;" in done.stderr  # one actor per CPU of the head
    # Ray Data's actor pool logged this at error level on every run; the engine's own actors take small arguments.
    assert "constructor arguments in the object store" not in done.stderr


def test_one_triton_killed_mid_run_the_run_completes_on_the_other_with_each_image_once(
        inputs, ray_address, tiny_repository, server_b, single_process_rows, tmp_path):
    doomed = start_server(tiny_repository)
    out = tmp_path / "scores"
    try:
        run = subprocess.Popen(_command(inputs, out, [doomed.config.grpc_url, server_b.config.grpc_url],
                                        *_ray_args(ray_address)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for_shards(run, out, 3)
        os.killpg(doomed.pid, signal.SIGKILL)  # the server and its Python-backend stubs, mid-run
        killed_at = len(_shards(out))
        _, stderr = run.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        doomed.stop()
    assert killed_at < -(-N_INPUTS // SHARD_SIZE), "the server died after the run had finished"
    assert run.returncode == EXIT_SOME_INPUTS_FAILED, stderr[-3000:]
    assert_same_rows(_rows(out), single_process_rows)


def test_driver_killed_mid_run_then_resume_completes_with_each_image_once(
        inputs, ray_address, server_b, single_process_rows, tmp_path):
    out = tmp_path / "scores"
    command = _command(inputs, out, [server_b.config.grpc_url], *_ray_args(ray_address))
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_shards(driver, out, 3)
    driver.kill()
    driver.wait()
    before = {shard.name: shard.stat().st_ino for shard in _shards(out)}
    assert len(before) < -(-N_INPUTS // SHARD_SIZE), "the driver died after the run had finished"

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert resumed.returncode == EXIT_SOME_INPUTS_FAILED, resumed.stderr[-3000:]
    assert_same_rows(_rows(out), single_process_rows)
    already = int(re.search(r"(\d+) already in", resumed.stderr)[1])
    assert already >= 3 * SHARD_SIZE - len(BROKEN)  # the shards finished before the kill were not scored again
    kept = {name for name, inode in before.items() if (out / name).stat().st_ino == inode}
    assert len(kept) >= len(before) - 2  # at most the units in flight at the kill were rewritten


def test_a_bad_ray_address_fails_fast_with_a_clear_error_and_leaves_no_output(inputs, grpc_url, tmp_path):
    (dead_port,) = free_ports(1)
    started = time.monotonic()
    done = _score(inputs, tmp_path / "scores", [grpc_url], *_ray_args(f"127.0.0.1:{dead_port}"))
    assert done.returncode == EXIT_FATAL
    assert f"no Ray cluster at 127.0.0.1:{dead_port}" in done.stderr
    assert time.monotonic() - started < 60  # the process start included; Ray's own retries take minutes
    assert list(tmp_path.iterdir()) == [], "a failed start left something behind: the retry would be refused"


def test_no_live_triton_fails_before_ray_and_leaves_no_output(inputs, ray_address, tmp_path):
    (dead_port,) = free_ports(1)
    done = _score(inputs, tmp_path / "scores", [f"127.0.0.1:{dead_port}"], *_ray_args(ray_address))
    assert done.returncode == EXIT_FATAL, done.stderr[-3000:]
    assert f"127.0.0.1:{dead_port}" in done.stderr and "ray engine: start" not in done.stderr
    assert list(tmp_path.iterdir()) == [], "a failed start left something behind: the retry would be refused"


@pytest.mark.parametrize("actors,actor_cpus,cluster_cpus,expected", [
    (None, 1.0, 2.0, 2),  # one actor per CPU
    (None, 1.0, 16.0, 16),
    (None, 2.0, 16.0, 8),
    (None, 1.0, 0.5, 1),  # at least one
    (None, 0.0, 4.0, 4),  # actors that reserve nothing: still one per CPU
    (3, 1.0, 16.0, 3),  # asked for
])
def test_the_actor_pool_is_sized_to_the_clusters_cpus_unless_asked(actors, actor_cpus, cluster_cpus, expected):
    from facialattr.client.ray_engine import RayOptions, actor_count

    assert actor_count(RayOptions(actors=actors, actor_cpus=actor_cpus), cluster_cpus) == expected


@pytest.mark.parametrize("units,actors", [(1, 2), (16, 2), (17, 2), (1000, 2), (5, 16)])
def test_every_unit_is_in_exactly_one_call_in_order(units, actors):
    from facialattr.client.ray_engine import MAX_UNITS_PER_CALL, unit_calls

    calls = unit_calls(list(range(units)), actors)
    assert [u for call in calls for u in call] == list(range(units))
    assert all(1 <= len(call) <= MAX_UNITS_PER_CALL for call in calls)
    assert len(calls) >= min(units, actors)  # no actor left idle for want of a call


def test_an_existing_output_is_refused_without_resume_or_overwrite(inputs, grpc_url, tmp_path):
    out = tmp_path / "scores"
    (out / "_manifest").mkdir(parents=True)
    (out / "part-000000.parquet").write_bytes(b"")
    done = _score(inputs, out, [grpc_url], "--engine", "ray")
    assert done.returncode == EXIT_FATAL and "pass --resume to continue it or --overwrite" in done.stderr


def test_without_a_ray_address_a_private_ray_instance_scores_the_run(make_jpegs, grpc_url, tmp_path):
    paths = make_jpegs(tmp_path / "in", 30)
    out = tmp_path / "scores"
    done = _score(tmp_path / "in", out, [grpc_url], "--engine", "ray", "--shard-size", "8")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(_rows(out)) == sorted(map(str, paths))
    assert len(_shards(out)) == 4
