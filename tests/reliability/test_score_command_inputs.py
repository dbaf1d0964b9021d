"""The bad-input corpus through the real ``facialattr score`` process, in each output format.

The run must finish with exit status 3 (some inputs failed), and the result file
must hold one row per corpus file with the status the table expects, including
the file whose name is not UTF-8, written so that its path reads back byte for byte.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import reliability_corpus as corpus
import reliability_support as support

from facialattr import MODEL_NAME
from facialattr.client import rows as result_rows
from facialattr.errors import EXIT_OK, EXIT_SOME_INPUTS_FAILED

# Rows the CLI cannot exercise: nothing deletes a file between its listing and its reading.
NOT_FOR_THE_CLI = {row.kind for row in corpus.TABLE if row.deleted_after_listing}
# The CLI reports an unlistable over-long folder as one error row for the folder, not for the file
# inside it (test_bad_inputs.py checks that row through the library).
NOT_FOR_THE_CLI.add("path longer than PATH_MAX")


def read_rows(out: Path) -> list[dict]:
    """Rows with ``path`` as bytes, the way the file system knows it (a CSV that is not UTF-8 fails to read)."""
    rows = list(result_rows.read_rows(out))
    for row in rows:
        if out.suffix == ".csv":  # CSV cells escape what a spreadsheet or a UTF-8 reader would get wrong
            row["path"] = os.fsencode(result_rows.path_from_csv(row["path"]))
        elif out.suffix == ".parquet":  # Parquet strings are UTF-8: the exact name is in path_bytes
            row["path"] = row.pop("path_bytes")
        else:
            row["path"] = os.fsencode(row["path"])
    return rows


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("cli-corpus")
    corpus.build(base / "scored", outside=base / "outside")
    return base / "scored"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_score_command_writes_one_row_per_bad_input_and_exits_3(suffix, corpus_root, own_server, tmp_path):
    out = tmp_path / f"corpus{suffix}"
    fifos = [os.path.join(os.fsencode(corpus_root), row.name) for row in corpus.TABLE if row.kind.startswith("FIFO")]
    with support.FifoWatchdog(fifos) as watchdog:
        run = support.run_facialattr("score", corpus_root, "--recursive", "--out", out, "--no-progress",
                                     "--url", own_server.config.grpc_url, timeout_s=120)
    assert not watchdog.opened, "the score command opened a FIFO for reading"
    assert run.returncode == EXIT_SOME_INPUTS_FAILED, run.stderr
    rows = {row["path"]: row for row in read_rows(out)}
    root = os.fsencode(corpus_root)
    mismatches = []
    for row in corpus.TABLE:
        if row.kind in NOT_FOR_THE_CLI or corpus.skip_reason(row):
            continue
        got = rows.get(os.path.join(root, row.name))
        status = got["status"] if got else "missing"
        if status != row.status or (row.status == corpus.ERROR and row.reason.lower() not in got["error"].lower()):
            mismatches.append(f"{row.kind}: expected {row.status} {row.reason!r}, got {status} {got and got['error']!r}")
    assert not mismatches, "\n".join(mismatches)



# Runs a command and prints the peak resident memory of its process tree (getrusage of the waited child).
_PEAK_RSS = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
             "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")
PEAK_RSS_LIMIT = int(1.5 * 2**30)


def test_the_hostile_folder_becomes_too_large_rows_in_bounded_client_memory(tmp_path, own_server):
    """A 3 GB sparse x.jpg and eight 381 KB 16-bit RGBA PNGs of 49 MP: 6 GB of client memory before the limits."""
    folder = tmp_path / "hostile"
    folder.mkdir()
    with open(folder / "x.jpg", "wb") as f:
        f.truncate(3 * 2**30)
    corpus.write_png16_rgba(folder / "big0.png", 7000, 7000)
    for i in range(1, 8):
        shutil.copyfile(folder / "big0.png", folder / f"big{i}.png")
    out = tmp_path / "hostile.csv"
    command = support.facialattr_command("score", folder, "--out", out, "--url", own_server.config.grpc_url, "--no-progress")
    run = subprocess.run([sys.executable, "-c", _PEAK_RSS, *command], capture_output=True, text=True, timeout=300)
    assert run.returncode == EXIT_SOME_INPUTS_FAILED, run.stderr
    peak = int(run.stdout.split("peak_rss_kib")[1]) * 1024
    print(f"peak client RSS on the hostile folder: {peak / 2**20:.0f} MiB")
    assert peak < PEAK_RSS_LIMIT, f"the client peaked at {peak / 2**30:.2f} GiB"
    rows = read_rows(out)
    assert sorted(os.path.basename(r["path"]) for r in rows) == sorted([b"x.jpg"] + [f"big{i}.png".encode() for i in range(8)])
    assert all(r["status"] == "error" and r["error_kind"] == "too_large" for r in rows)


IMAGES = 2000


def _send_negative_batch_poison(url: str, stop: threading.Event, outcomes: list) -> None:
    """Another local client: requests declaring a batch of -2**62 images, carrying one image's bytes."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    h, w = support.SIZE_HW
    with grpc.insecure_channel(url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        while not stop.is_set():
            request = service_pb2.ModelInferRequest(model_name=MODEL_NAME)
            request.inputs.add(name="images", datatype="UINT8", shape=[-2**62, h, w, 3])
            request.raw_input_contents.append(bytes(h * w * 3))
            try:
                stub.ModelInfer(request, timeout=10)
                outcomes.append("accepted")
            except grpc.RpcError as exc:
                outcomes.append(exc.code())
            stop.wait(0.01)


@pytest.fixture
def unguarded_server(own_repository, monkeypatch):
    """A server without the batch guard (serving/batch_guard.py), as one started without a C compiler, or the
    official container: there a malformed request still poisons the batch it is merged into."""
    from facialattr.serving import preload

    monkeypatch.setattr(preload, "compiler", lambda: None)
    server = support.start(own_repository)
    yield server
    server.stop()


def test_a_hostile_clients_poisoned_batches_cost_retries_never_rows(tmp_path, unguarded_server):
    """Good images merged into a batch that someone else's negative-batch request poisoned are retried and scored."""
    import grpc

    own_server = unguarded_server
    (tmp_path / "in").mkdir()
    for i in range(IMAGES):
        (tmp_path / "in" / f"img{i:04d}.jpg").write_bytes(corpus.encode(corpus.picture(60, 50, seed=i), "JPEG"))
    out = tmp_path / "r.jsonl"
    url = own_server.config.grpc_url
    stop, outcomes = threading.Event(), []
    hostile = threading.Thread(target=_send_negative_batch_poison, args=(url, stop, outcomes), daemon=True)
    hostile.start()
    try:
        # Small batches: many requests for the poison to be merged with.
        run = support.run_facialattr("score", tmp_path / "in", "--out", out, "--url", url, "--batch-size", "4",
                                     "--no-progress", timeout_s=600)
    finally:
        stop.set()
        hostile.join(timeout=30)
    print(run.stderr[-3000:])
    assert len(outcomes) > 20, "the hostile client hardly ran; the test proved nothing"
    assert run.returncode == EXIT_OK, run.stderr
    rows = list(result_rows.read_rows(out))
    assert len(rows) == IMAGES and all(r["status"] == "ok" for r in rows)
    if grpc.StatusCode.INTERNAL in outcomes:  # the server let the poison into batches (tritonserver 2.51 does)
        assert "INTERNAL" in run.stderr.split("inputs this run")[1], "no poisoned batch met the run: it proved nothing"
    resumed = support.run_facialattr("score", tmp_path / "in", "--out", out, "--url", url, "--resume", "--no-progress")
    assert resumed.returncode == EXIT_OK, resumed.stderr
    assert "0 inputs this run" in resumed.stderr and f"{IMAGES} already in" in resumed.stderr
    assert len(out.read_text().splitlines()) == IMAGES
