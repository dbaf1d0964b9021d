"""A command whose pip extra is missing says which extra and how to install it, and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from facialattr.errors import EXIT_FATAL

# The real command in a real process, with the extra's modules blocked the way Python blocks imports
# (sys.modules[name] = None: importing raises ModuleNotFoundError, find_spec returns None).
_RUN_WITHOUT = "import sys; [sys.modules.__setitem__(m, None) for m in sys.argv[1].split(',')]; " \
               "from facialattr.app.cli import main; sys.exit(main(sys.argv[2:]))"

CASES = [
    # (command, its arguments, modules blocked, extra named)
    ("analyze", ["{data}", "--out", "{out}"], "matplotlib", "train"),
    ("train", ["{data}", "--out", "{out}"], "tensorflow,keras", "train"),
    ("evaluate", ["{data}", "{data}", "--out", "{out}"], "tensorflow,keras", "train"),
    ("bench", ["--url", "127.0.0.1:1", "--out", "{out}"], "matplotlib", "bench"),
]


@pytest.mark.parametrize("command,arguments,blocked,extra", CASES, ids=[c[0] for c in CASES])
def test_missing_extra_is_named_with_its_install_command_and_nothing_is_created(tmp_path, command, arguments, blocked, extra):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    args = [a.format(data=data, out=out) for a in arguments]
    run = subprocess.run([sys.executable, "-c", _RUN_WITHOUT, blocked, command, *args],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == EXIT_FATAL, run.stderr
    assert f"facialattr {command} needs the '{extra}' extra" in run.stderr
    assert f'pip install -c constraints.txt -e ".[{extra}]"' in run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "the command left something behind"


def test_an_installed_extra_lets_the_command_run():
    from facialattr.extras import check_extra

    for command in ("analyze", "bench", "score", "serve"):
        check_extra(command)  # this environment has every extra: nothing is raised
