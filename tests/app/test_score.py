"""``facialattr score`` end to end against the real embedded Triton: formats, errors, exit codes, resume,
the progress it shows while it runs, and what an interrupted run wrote."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import numpy as np
import pytest
from testsupport import free_ports, signal_when

from facialattr import defaults
from facialattr.app.cli import main
from facialattr.client import rows as result_rows
from facialattr.contract import CELEBA_ATTRIBUTES
from facialattr.decoding import DEFAULT_MAX_DECODE_BYTES, DEFAULT_MAX_FILE_BYTES
from facialattr.errors import (
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_NO_INPUTS,
    EXIT_OK,
    EXIT_SOME_INPUTS_FAILED,
    EXIT_USAGE,
)

N_IMAGES = 30


def read_rows(out) -> list[dict]:
    return list(result_rows.read_rows(out))


def probabilities_of(row) -> np.ndarray:
    return np.array([float(row[n]) for n in CELEBA_ATTRIBUTES], np.float32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, make_jpegs):
    root = tmp_path_factory.mktemp("faces")
    make_jpegs(root, 12)
    make_jpegs(root / "sub", 5, seed=1, prefix="deep")
    return root


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_each_output_format_holds_one_row_per_image_equal_to_onnx_runtime(tmp_path, folder, grpc_url, reference, suffix):
    out = tmp_path / f"results{suffix}"
    assert main(["score", str(folder), "--recursive", "--out", str(out), "--url", grpc_url, "--no-progress"]) == EXIT_OK
    rows = read_rows(out)
    expected = reference(sorted(folder.rglob("*.jpg")))
    assert sorted(r["path"] for r in rows) == sorted(expected)
    for row in rows:
        assert row["status"] == "ok" and not row["error"]
        probs = probabilities_of(row)
        np.testing.assert_allclose(probs, expected[row["path"]], rtol=0, atol=1e-6)
        present = [row[f"{n}_present"] in (True, "1") for n in CELEBA_ATTRIBUTES]
        assert present == list(probs >= 0.5)  # the tiny repository ships thresholds of 0.5
        top = row["top10"].split(";") if isinstance(row["top10"], str) else list(row["top10"])
        assert len(top) == 10 and set(top) <= set(CELEBA_ATTRIBUTES)
    assert not list(tmp_path.glob(".*journal*"))  # parquet's journal is gone once the file is written


def test_corrupt_jpeg_becomes_error_row_and_run_continues(tmp_path, make_jpegs, grpc_url):
    good = make_jpegs(tmp_path / "in", 6)
    (tmp_path / "in" / "img00002.jpg").write_bytes(good[2].read_bytes()[:300])  # truncated mid-scan
    (tmp_path / "in" / "notes.jpg").write_text("not a picture")
    out = tmp_path / "r.csv"
    code = main(["score", str(tmp_path / "in"), "--out", str(out), "--url", grpc_url, "--no-progress"])
    assert code == EXIT_SOME_INPUTS_FAILED
    rows = {os.path.basename(r["path"]): r for r in read_rows(out)}
    assert len(rows) == 7
    assert rows["img00002.jpg"]["status"] == "error" and rows["img00002.jpg"]["error_kind"] == "corrupt"
    assert "img00002.jpg" in rows["img00002.jpg"]["error"]
    assert rows["notes.jpg"]["error_kind"] == "unsupported_format"
    assert [n for n, r in rows.items() if r["status"] == "ok"] == [f"img0000{i}.jpg" for i in (0, 1, 3, 4, 5)]


def test_links_leading_outside_the_folder_are_error_rows_unless_followed(tmp_path, make_jpegs, grpc_url):
    (outside,) = make_jpegs(tmp_path / "elsewhere", 1)
    make_jpegs(tmp_path / "in", 1)
    (tmp_path / "in" / "link.jpg").symlink_to(outside)
    out = tmp_path / "r.jsonl"
    base = ["score", str(tmp_path / "in"), "--out", str(out), "--url", grpc_url, "--no-progress", "--overwrite"]
    assert main(base) == EXIT_SOME_INPUTS_FAILED
    rows = {os.path.basename(r["path"]): r for r in read_rows(out)}
    assert rows["link.jpg"]["error_kind"] == "outside_roots" and rows["img00000.jpg"]["status"] == "ok"
    assert main([*base, "--follow-symlinks"]) == EXIT_OK
    assert [r["status"] for r in read_rows(out)] == ["ok", "ok"]


def test_unreachable_server_is_a_fatal_error(tmp_path, make_jpegs):
    make_jpegs(tmp_path / "in", 1)
    url = f"127.0.0.1:{free_ports(1)[0]}"
    code = main(["score", str(tmp_path / "in"), "--out", str(tmp_path / "r.csv"), "--url", url, "--connect-timeout", "0.5"])
    assert code == EXIT_FATAL
    assert not (tmp_path / "r.csv").exists()


def test_with_no_server_the_command_ends_within_seconds_with_one_plain_message(tmp_path, make_jpegs):
    make_jpegs(tmp_path / "in", 1)
    url = f"127.0.0.1:{free_ports(1)[0]}"
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "facialattr.app.cli", "score", str(tmp_path / "in"), "--out",
                          str(tmp_path / "r.csv"), "--url", url], capture_output=True, text=True, timeout=120)
    elapsed_s = time.monotonic() - started
    assert run.returncode == EXIT_FATAL
    assert elapsed_s < 25, f"took {elapsed_s:.1f} s (default --connect-timeout is 10 s)"
    assert url in run.stderr and "nothing is listening there" in run.stderr and "facialattr serve" in run.stderr
    assert run.stderr.count("WARNING") <= 1, run.stderr  # warnings about one endpoint are rate-limited


def test_a_refused_connection_fails_at_once_naming_the_url_and_how_to_start_a_server(tmp_path, make_jpegs, caplog):
    make_jpegs(tmp_path / "in", 1)
    url = f"127.0.0.1:{free_ports(1)[0]}"
    started = time.monotonic()
    code = main(["score", str(tmp_path / "in"), "--out", str(tmp_path / "r.csv"), "--url", url])
    elapsed_s = time.monotonic() - started
    assert code == EXIT_FATAL
    assert elapsed_s < 3, f"took {elapsed_s:.1f} s: nothing listens there, so there is nothing to wait for"
    assert f"{url}: nothing is listening there (connection refused)" in caplog.text
    assert "facialattr serve" in caplog.text and "--url" in caplog.text and "--connect-timeout" in caplog.text


def test_a_model_name_the_server_does_not_serve_fails_within_seconds_naming_it(tmp_path, make_jpegs, grpc_url,
                                                                              caplog):
    make_jpegs(tmp_path / "in", 1)
    started = time.monotonic()
    code = main(["score", str(tmp_path / "in"), "--out", str(tmp_path / "r.csv"), "--url", grpc_url,
                 "--model-name", "no_such_model", "--connect-timeout", "3"])
    elapsed_s = time.monotonic() - started
    assert code == EXIT_FATAL
    assert elapsed_s < 20, f"took {elapsed_s:.1f} s: NOT_FOUND must not get the long wait of a server restarting"
    assert f"{grpc_url} answered but serves no model 'no_such_model' (NOT_FOUND)" in caplog.text
    assert "--model-name" in caplog.text
    assert not (tmp_path / "r.csv").exists()


def test_failed_inputs_are_named_with_their_reason_in_the_summary(tmp_path, make_jpegs, grpc_url, capsys):
    make_jpegs(tmp_path / "in", 2)
    missing = [tmp_path / f"does-not-exist-{i}.jpg" for i in range(7)]
    out = tmp_path / "r.csv"
    code = main(["score", str(tmp_path / "in"), *map(str, missing), "--out", str(out), "--url", grpc_url, "--no-progress"])
    assert code == EXIT_SOME_INPUTS_FAILED
    err = capsys.readouterr().err
    assert "first 5 of 7 failed inputs" in err and str(out) in err
    assert all(f"{str(p)!r}: no such file" in err for p in missing[:5])
    assert str(missing[5]) not in err


def test_a_folder_without_images_is_a_warning_and_its_own_exit_status(tmp_path, grpc_url, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no pictures here")
    code = main(["score", str(tmp_path / "empty"), "--out", str(tmp_path / "r.csv"), "--url", grpc_url, "--no-progress"])
    assert code == EXIT_NO_INPUTS != EXIT_OK
    assert f"warning: no images found under {tmp_path / 'empty'}" in capsys.readouterr().err


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(tmp_path, make_jpegs, grpc_url, monkeypatch, caplog):
    from facialattr.client import bulk

    make_jpegs(tmp_path / "in", 5)
    monkeypatch.setattr(bulk, "PLAIN_PROGRESS_EVERY_S", 0.0)  # a line per image instead of one per 10 s
    with caplog.at_level("INFO", logger="facialattr.client.bulk"):
        assert main(["score", str(tmp_path / "in"), "--out", str(tmp_path / "r.csv"), "--url", grpc_url]) == EXIT_OK
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("scoring: ")]
    assert len(lines) == 5 and not any("\r" in line for line in lines)
    assert lines[0].startswith("scoring: 1/5 inputs (20%) in ") and "/s, ETA 0:00:" in lines[0]
    assert lines[-1].startswith("scoring: 5/5 inputs (100%) in ") and lines[-1].endswith(", 0 failed")


def test_score_help_states_each_default(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in (f"(default: {defaults.GRPC_URL}, or ${defaults.ENV_GRPC_URL})",
                     f"--connect-timeout SECONDS give up this soon when no server has answered at all (wrong --url, no "
                     f"server) (default: {defaults.CONNECT_TIMEOUT_S}, or {defaults.REFUSED_GRACE_S} when the connection is refused",
                     f"unreachable this long (default: {defaults.GIVE_UP_AFTER_S})",
                     f"refused before reading (default: {DEFAULT_MAX_FILE_BYTES})",
                     f"refused from the header before decoding (default: {DEFAULT_MAX_DECODE_BYTES})",
                     f"--workers WORKERS decode threads (default: {defaults.DECODE_WORKERS})",
                     f"concurrent requests (default: {defaults.MAX_IN_FLIGHT})",
                     f"deadline of one inference request (default: {defaults.REQUEST_TIMEOUT_S})"):
        assert expected in text


@pytest.mark.parametrize("flag", ["--workers", "--batch-size", "--max-in-flight", "--max-file-bytes",
                                  "--max-decode-bytes", "--shard-size", "--ray-actors"])
def test_a_count_below_one_is_a_usage_error_naming_the_flag_before_anything_starts(tmp_path, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["score", str(tmp_path), "--out", str(tmp_path / "r.csv"), "--url", "127.0.0.1:1", flag, "0"])
    assert exit_.value.code == EXIT_USAGE
    assert f"argument {flag}" in capsys.readouterr().err and not (tmp_path / "r.csv").exists()


def test_existing_output_is_neither_overwritten_nor_appended_without_a_flag(tmp_path, make_jpegs, grpc_url):
    make_jpegs(tmp_path / "in", 2)
    out = tmp_path / "r.jsonl"
    out.write_text("precious\n")
    args = ["score", str(tmp_path / "in"), "--out", str(out), "--url", grpc_url, "--no-progress"]
    assert main(args) == EXIT_FATAL
    assert out.read_text() == "precious\n"
    assert main([*args, "--overwrite"]) == EXIT_OK
    assert len(read_rows(out)) == 2


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_resume_scores_only_the_missing_inputs_and_drops_a_torn_line(tmp_path, make_jpegs, grpc_url, suffix):
    paths = make_jpegs(tmp_path / "in", 8)
    out = tmp_path / f"r{suffix}"
    base = ["score", "--out", str(out), "--url", grpc_url, "--no-progress"]
    assert main([*base, *map(str, paths[:5])]) == EXIT_OK
    if suffix != ".parquet":
        with open(out, "a") as f:
            f.write(f"{paths[5]},ok,,,0.1")  # a crash in the middle of writing the sixth row
    assert main([*base, "--resume", *map(str, paths)]) == EXIT_OK
    rows = read_rows(out)
    assert sorted(r["path"] for r in rows) == sorted(map(str, paths))


def test_resume_after_the_scoring_process_is_killed_mid_run(tmp_path, make_jpegs, grpc_url, reference):
    paths = make_jpegs(tmp_path / "in", 1500, size_hw=(60, 50))
    out = tmp_path / "r.jsonl"
    command = [sys.executable, "-m", "facialattr.app.cli", "score", str(tmp_path / "in"), "--out", str(out),
               "--url", grpc_url, "--workers", "1", "--max-in-flight", "1", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    signal_when(process, lambda: out.exists() and out.stat().st_size >= 20_000, signal.SIGKILL,
                what="20 kB of rows")
    written_before = out.read_bytes().count(b"\n")
    assert 0 < written_before < len(paths)
    assert main(["score", str(tmp_path / "in"), "--out", str(out), "--url", grpc_url, "--resume", "--no-progress"]) == EXIT_OK
    rows = read_rows(out)
    assert len(rows) == len(paths)
    assert sorted(r["path"] for r in rows) == sorted(map(str, paths))
    expected = reference(paths[:50] + paths[-50:])
    by_path = {r["path"]: r for r in rows}
    for path, probs in expected.items():
        np.testing.assert_allclose(probabilities_of(by_path[path]), probs, rtol=0, atol=1e-6)


def test_model_name_chooses_which_served_model_scores_the_images(tmp_path, folder):
    """A repository serving the model and a variant (as with facial_attributes_int8): --model-name picks one."""
    from testsupport import make_tiny_repository, start_server

    from facialattr import MODEL_NAME, repository
    from facialattr.client import serverstats
    from facialattr.contract import ModelContract, Preprocessing
    from facialattr.export.tiny_model import build_tiny_onnx
    from facialattr.triton_config import ModelConfig

    variant = f"{MODEL_NAME}_variant"
    repo = make_tiny_repository(tmp_path / "models")
    repository.write_model(repo, build_tiny_onnx(tmp_path / "variant.onnx", size_hw=(64, 64)),
                           ModelContract(preprocessing=Preprocessing(size_hw=(64, 64))),
                           model_config=ModelConfig(name=variant, max_batch_size=16))
    with start_server(repo) as server:
        url = server.config.grpc_url
        out = tmp_path / "variant.jsonl"
        assert main(["score", str(folder), "--out", str(out), "--url", url, "--model-name", variant,
                     "--no-progress"]) == EXIT_OK
        scored = len(read_rows(out))
        assert scored == 12
        assert serverstats.read(url, variant).inference_count == scored
        assert serverstats.read(url, MODEL_NAME).inference_count == 0


@pytest.fixture(scope="module")
def progress_folder(tmp_path_factory, make_jpegs):
    """A folder of N_IMAGES images."""
    root = tmp_path_factory.mktemp("progress")
    make_jpegs(root, N_IMAGES)
    return root


def score_on_a_terminal(*args: str, rows: int, columns: int, timeout_s: float = 120.0) -> tuple[int, str]:
    """``facialattr score ARGS`` with a pseudo-terminal of ``rows`` x ``columns`` as stdout and stderr; (status, output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "facialattr.app.cli", "score", *args],
                               stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1.0)[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not chunk:
                break
            output += chunk
        else:
            process.kill()
            pytest.fail(f"score did not end within {timeout_s:.0f} s:\n{output.decode(errors='replace')}")
        return process.wait(timeout=30), output.decode(errors="replace")
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(("rows", "columns"), [
    (40, 120),  # a sized terminal
    (0, 0),     # a pseudo-terminal nobody sized: tqdm would draw nothing at all
    (24, 0),    # `stty cols 0`: tqdm would cut the end off every line
])
def test_the_bar_on_a_terminal_shows_the_total_and_ends_at_100_percent(tmp_path, progress_folder, grpc_url, rows, columns):
    status, output = score_on_a_terminal(str(progress_folder), "--out", str(tmp_path / "r.csv"), "--url", grpc_url,
                                         rows=rows, columns=columns)
    assert status == EXIT_OK, output
    assert f"{N_IMAGES} inputs to score" in output
    final = [line for line in output.replace("\r", "\n").splitlines() if line.startswith("scoring: 100%")]
    assert final, output
    assert f" {N_IMAGES}/{N_IMAGES} [" in final[-1] and final[-1].rstrip().endswith("img/s]"), final[-1]


def test_a_resumed_run_counts_only_what_is_left(tmp_path, progress_folder, grpc_url):
    out = tmp_path / "r.csv"
    first = sorted(progress_folder.glob("*.jpg"))[:10]
    assert main(["score", *map(str, first), "--out", str(out), "--url", grpc_url, "--no-progress"]) == EXIT_OK
    status, output = score_on_a_terminal(str(progress_folder), "--out", str(out), "--url", grpc_url, "--resume",
                                         rows=40, columns=120)
    assert status == EXIT_OK, output
    left = N_IMAGES - len(first)
    assert f"{left} inputs to score; {len(first)} already in {out}" in output
    assert f" {left}/{left} [" in output and f"/{N_IMAGES} [" not in output


def test_without_a_terminal_the_first_line_says_how_many_inputs_there_are(tmp_path, progress_folder, grpc_url, caplog):
    with caplog.at_level("INFO", logger="facialattr.client.bulk"):
        assert main(["score", str(progress_folder), "--out", str(tmp_path / "r.csv"), "--url", grpc_url]) == EXIT_OK
    messages = [r.getMessage() for r in caplog.records if r.name == "facialattr.client.bulk"]
    assert messages[0] == f"{N_IMAGES} inputs to score"


def test_no_progress_means_no_count_and_no_lines(tmp_path, progress_folder, grpc_url, caplog):
    with caplog.at_level("INFO", logger="facialattr.client.bulk"):
        assert main(["score", str(progress_folder), "--out", str(tmp_path / "r.csv"), "--url", grpc_url, "--no-progress"]) == EXIT_OK
    assert not [r for r in caplog.records if r.name == "facialattr.client.bulk"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_says_how_many_rows_it_wrote_and_how_to_finish(tmp_path, make_jpegs, grpc_url, signum):
    # Enough images, one at a time, that the run is still going when its first rows reach the disk.
    paths = make_jpegs(tmp_path / "in", 1500, size_hw=(60, 50))
    out = tmp_path / "r.jsonl"
    command = [sys.executable, "-m", "facialattr.app.cli", "score", str(tmp_path / "in"), "--out", str(out),
               "--url", grpc_url, "--workers", "1", "--max-in-flight", "1", "--batch-size", "1"]
    with open(tmp_path / "stderr.log", "w") as log:  # a file, not a pipe nobody reads while waiting
        # As from a terminal: a test run started in the background (`cmd &`, nohup) inherits an ignored
        # SIGINT, which Python then keeps ignoring, so Ctrl-C's default is given back to the command.
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        status = signal_when(process, lambda: out.exists() and out.stat().st_size > 0, signum, what="a first row")
    stderr = (tmp_path / "stderr.log").read_text()
    assert status == EXIT_INTERRUPTED, stderr
    assert f"{len(paths)} inputs to score" in stderr
    written = sum(1 for line in out.read_text().splitlines() if json.loads(line))
    assert 0 < written < len(paths)
    stated = [line for line in stderr.splitlines() if "interrupted after writing" in line]
    assert len(stated) == 1, stderr
    rows_said = int(stated[0].split("interrupted after writing ")[1].split()[0])
    # The signal can land between writing a row and counting it: the file may hold one row more.
    assert written - rows_said in (0, 1), (written, stated[0])
    assert f"of the {len(paths)} it set out to score to {out}; they are kept. Rerun with --resume" in stated[0]
    assert f"{rows_said} inputs this run in " in stderr  # the usual summary, up to the interruption
