"""Every command the docs show still parses as written, and the cheap ones run against a real server.

The commands come from the fenced code blocks of README.md, docs/*.md, benchmarks/README.md and
training/README.md, so a renamed flag or a missing required argument breaks this test, not a reader.
Commands of other tools (docker, curl, locust, pip) are not checked here; tests/deploy covers compose.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", ROOT / "benchmarks" / "README.md", ROOT / "training" / "README.md",
               *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^```[\w-]*\s*$")
# An inline code span that is one of our commands (tables and prose cite commands this way).
INLINE = re.compile(r"`((?:\.venv/bin/)?(?:facialattr |python3? -m facialattr\.|python3? benchmarks/|make )[^`]*)`")
# Parses the arguments with the script's own parser, then stops before it does any work.
_PARSE_ONLY = ("import argparse, runpy, sys\n"
               "parse = argparse.ArgumentParser.parse_args\n"
               "def parse_then_stop(self, *a, **k):\n"
               "    parse(self, *a, **k)\n"
               "    raise SystemExit(0)\n"
               "argparse.ArgumentParser.parse_args = parse_then_stop\n"
               "sys.argv = sys.argv[1:]\n"
               "runpy.run_path(sys.argv[0], run_name='__main__') if sys.argv[0].endswith('.py') else "
               "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n")


@dataclass(frozen=True)
class Documented:
    doc: str
    line: int
    argv: tuple[str, ...]
    inline: bool = False  # a code span in prose or a table: may name a command and a flag without its arguments

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {shlex.join(self.argv)}"


def documented_commands() -> list[Documented]:
    """Each shell command in the docs' code blocks: prompts, comments and continuations removed."""
    found = []
    for doc in DOCS:
        in_block, pending, start = False, "", 0
        for number, raw in enumerate(doc.read_text().splitlines(), 1):
            if FENCE.match(raw.strip()):
                in_block, pending = not in_block, ""
                continue
            if not in_block:
                found += [Documented(str(doc.relative_to(ROOT)), number, tuple(command), inline=True)
                          for span in INLINE.findall(raw) for command in _split_commands(span)]
                continue
            line = raw.strip().removeprefix("$ ")
            start = start if pending else number
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            text, pending = pending + line, ""
            for command in _split_commands(text):
                found.append(Documented(str(doc.relative_to(ROOT)), start, tuple(command)))
    return found


def _split_commands(text: str) -> list[list[str]]:
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:  # not shell (program output in a block)
        return []
    commands, current = [], []
    for token in [*tokens, "&&"]:
        if token in ("&&", ";", "|", "||", "&"):
            if current:
                commands.append(current)
            current = []
            if token == "|":  # what reads a pipe (head, grep) is not ours
                tokens = []
                break
        else:
            current.append(token)
    return commands


def ours(command: Documented) -> list[str] | None:
    """The argv to parse-check, for a facialattr or project-script command; None for other tools."""
    argv = list(command.argv)
    while argv and (argv[0] in ("nice", "env") or re.fullmatch(r"[A-Z_]+=\S*", argv[0])):
        argv.pop(0)
    if not argv:
        return None
    program = argv[0].removeprefix(".venv/bin/")
    if program == "facialattr":
        return ["facialattr.app.cli", *argv[1:]]
    if program in ("python", "python3") and argv[1:3] in (["-m", "facialattr.app"], ["-m", "facialattr.app.cli"]):
        return ["facialattr.app.cli", *argv[3:]]
    if program in ("python", "python3") and len(argv) > 1:
        if argv[1] == "-m":
            return argv[2:]
        if argv[1].endswith(".py"):
            return [str(ROOT / argv[1]), *argv[2:]]
    return None


def is_synopsis(argv: list[str]) -> bool:
    """A usage line (``PATH... [--url HOST:PORT]``, ``a|b``) rather than a command to run."""
    return any(t.startswith("[") or t.endswith("]") or "|" in t or t.endswith("...") for t in argv)


COMMANDS = documented_commands()
OURS = [(c, argv) for c in COMMANDS if (argv := ours(c)) and not is_synopsis(argv)]


def test_the_docs_show_commands_of_every_kind_this_test_checks():
    programs = {Path(argv[0]).name for _, argv in OURS}
    assert "facialattr.app.cli" in programs and any(p.endswith(".py") for p in programs), programs
    assert len(OURS) >= 20, [str(c) for c, _ in OURS]


WHOLE = [(c, argv) for c, argv in OURS if not (c.inline and argv[0] == "facialattr.app.cli")]
MENTIONED = [(c, argv) for c, argv in OURS if c.inline and argv[0] == "facialattr.app.cli"]


@pytest.mark.parametrize("command,argv", WHOLE, ids=[f"{c.doc}:{c.line}" for c, _ in WHOLE])
def test_documented_command_parses_as_written(command, argv):
    run = subprocess.run([sys.executable, "-c", _PARSE_ONLY, *argv], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert run.returncode == 0, f"{command}\n{run.stderr[-2000:]}"


@pytest.mark.parametrize("command,argv", MENTIONED, ids=[f"{c.doc}:{c.line}" for c, _ in MENTIONED])
def test_command_named_in_prose_exists_with_the_flags_it_names(command, argv):
    from facialattr.app.cli import build_parser

    words = argv[1:]
    if words in ([], ["--help"]):  # the command itself
        return
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert words[0] in commands, f"{command}: no subcommand {words[0]!r}"
    options = {o for action in commands[words[0]]._actions for o in action.option_strings}
    named = {w.split("=")[0] for w in words[1:] if w.startswith("--")}
    assert named <= options, f"{command}: {words[0]} has no {sorted(named - options)}"


MAKE_TARGETS = sorted({(c.doc, c.line, c.argv) for c in COMMANDS if c.argv[0] == "make"})


@pytest.mark.parametrize("doc,line,argv", MAKE_TARGETS, ids=[f"{d}:{n}" for d, n, _ in MAKE_TARGETS])
def test_documented_make_target_exists(doc, line, argv):
    run = subprocess.run(["make", "-n", *argv[1:]], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 0, f"{doc}:{line}: {shlex.join(argv)}\n{run.stderr}"


# The README's "Using it" commands that talk to a server, run for real on the shipped model, in a
# folder laid out as the README assumes: sample photos in photos/ and where `make quickstart` puts them.
RUNNABLE = [(c, list(c.argv)) for c in COMMANDS
            if c.doc == "README.md" and (a := ours(c)) and a[:2] in (["facialattr.app.cli", "predict"],
                                                                    ["facialattr.app.cli", "score"])
            and not is_synopsis(a)]


@pytest.fixture(scope="module")
def shipped_server():
    from testsupport import start_server

    server = start_server(ROOT / "model_repository")
    yield server
    server.stop()


@pytest.fixture
def readme_folder(tmp_path):
    from facialattr.app.samples import make_sample_folder

    folder = tmp_path
    photos = make_sample_folder(folder / ".cache" / "quickstart-images")
    (folder / "photos").mkdir()
    for photo in photos:
        if photo.name != "broken_download.jpg":  # a user's photos/ in the README scores cleanly
            (folder / "photos" / photo.name).write_bytes(photo.read_bytes())
    (folder / "photo.jpg").write_bytes((folder / "photos" / "astronaut_face.jpg").read_bytes())
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("command,argv", RUNNABLE, ids=[f"{c.doc}:{c.line}" for c, _ in RUNNABLE])
def test_readme_scoring_command_runs_against_the_shipped_model(command, argv, shipped_server, readme_folder):
    url = shipped_server.config.grpc_url
    argv = [url if a == "127.0.0.1:8001" else a for a in argv[1:]]
    if "--url" not in argv:
        argv += ["--url", url]
    run = subprocess.run([str(Path(sys.executable).parent / "facialattr"), *argv], capture_output=True,
                         text=True, timeout=300, cwd=readme_folder, env={**os.environ, "NO_COLOR": "1"})
    assert run.returncode == 0, f"{command}\n{run.stdout[-1000:]}\n{run.stderr[-2000:]}"
