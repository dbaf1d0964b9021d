"""What ``facialattr score`` shows while it runs: a bar with a total on a terminal, plain lines elsewhere,
and what an interrupted run wrote. Real runs of the command against the real embedded Triton."""

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

import pytest

from facialattr.app.cli import main
from facialattr.errors import EXIT_INTERRUPTED, EXIT_OK

N_IMAGES = 30


@pytest.fixture(scope="module")
def folder(tmp_path_factory, make_jpegs):
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
def test_the_bar_on_a_terminal_shows_the_total_and_ends_at_100_percent(tmp_path, folder, grpc_url, rows, columns):
    status, output = score_on_a_terminal(str(folder), "--out", str(tmp_path / "r.csv"), "--url", grpc_url,
                                         rows=rows, columns=columns)
    assert status == EXIT_OK, output
    assert f"{N_IMAGES} inputs to score" in output
    final = [line for line in output.replace("\r", "\n").splitlines() if line.startswith("scoring: 100%")]
    assert final, output
    assert f" {N_IMAGES}/{N_IMAGES} [" in final[-1] and final[-1].rstrip().endswith("img/s]"), final[-1]


def test_a_resumed_run_counts_only_what_is_left(tmp_path, folder, grpc_url):
    out = tmp_path / "r.csv"
    first = sorted(folder.glob("*.jpg"))[:10]
    assert main(["score", *map(str, first), "--out", str(out), "--url", grpc_url, "--no-progress"]) == EXIT_OK
    status, output = score_on_a_terminal(str(folder), "--out", str(out), "--url", grpc_url, "--resume",
                                         rows=40, columns=120)
    assert status == EXIT_OK, output
    left = N_IMAGES - len(first)
    assert f"{left} inputs to score; {len(first)} already in {out}" in output
    assert f" {left}/{left} [" in output and f"/{N_IMAGES} [" not in output


def test_without_a_terminal_the_first_line_says_how_many_inputs_there_are(tmp_path, folder, grpc_url, caplog):
    with caplog.at_level("INFO", logger="facialattr.client.bulk"):
        assert main(["score", str(folder), "--out", str(tmp_path / "r.csv"), "--url", grpc_url]) == EXIT_OK
    messages = [r.getMessage() for r in caplog.records if r.name == "facialattr.client.bulk"]
    assert messages[0] == f"{N_IMAGES} inputs to score"


def test_no_progress_means_no_count_and_no_lines(tmp_path, folder, grpc_url, caplog):
    with caplog.at_level("INFO", logger="facialattr.client.bulk"):
        assert main(["score", str(folder), "--out", str(tmp_path / "r.csv"), "--url", grpc_url, "--no-progress"]) == EXIT_OK
    assert not [r for r in caplog.records if r.name == "facialattr.client.bulk"]


def test_an_interrupted_run_says_how_many_rows_it_wrote_and_how_to_finish(tmp_path, make_jpegs, grpc_url):
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
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and (not out.exists() or out.stat().st_size == 0):
                assert process.poll() is None, "the run ended before it could be interrupted"
                time.sleep(0.02)
            process.send_signal(signal.SIGINT)
            status = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
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
