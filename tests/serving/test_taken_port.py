"""A taken port stops ``serve`` or ``demo`` at once, naming the flag (and the make variable) that picks another."""

from __future__ import annotations

import subprocess
import sys

import pytest
from testsupport import listening_port

from facialattr.errors import EXIT_FATAL

_AUTOMATIC = ["--grpc-port", "0", "--metrics-port", "0", "--http-port", "0"]

CASES = [
    # (command, options before the taken port, the flag given the taken port, how the message says to pick another)
    ("serve", ["--supervisor-port", "0"], "--grpc-port", "--grpc-port (make quickstart GRPC_PORT=...)"),
    ("serve", ["--supervisor-port", "0"], "--metrics-port", "--metrics-port (make quickstart METRICS_PORT=...)"),
    ("serve", ["--supervisor-port", "0", "--http"], "--http-port", "--http-port"),
    ("serve", [], "--supervisor-port", "--supervisor-port"),
    ("demo", ["{images}", "--out", "{out}"], "--grpc-port", "--grpc-port (make quickstart GRPC_PORT=...)"),
]


@pytest.fixture
def taken_port():
    """A port another process listens on."""
    with listening_port() as port:
        yield port


@pytest.mark.parametrize("command,options,flag,advice", CASES, ids=[f"{c[0]} {c[2]}" for c in CASES])
def test_taken_port_fails_at_once_naming_the_flag_that_picks_another(
        tmp_path, tiny_repository, taken_port, command, options, flag, advice):
    images = tmp_path / "images"
    images.mkdir()
    args = [a.format(images=images, out=tmp_path / "out.csv") for a in options]
    run = subprocess.run(
        [sys.executable, "-m", "facialattr.app.cli", command, "--model-repository", str(tiny_repository),
         *_AUTOMATIC, *args, flag, str(taken_port)],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == EXIT_FATAL, run.stderr
    assert f"port {taken_port} on 127.0.0.1 is already taken" in run.stderr
    assert f"pick another with {advice}" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "out.csv").exists()
