"""The table of optional dependencies: every need names a real extra, and each command run gets the needs its options bring."""

from __future__ import annotations

import importlib.util
import tomllib
from argparse import Namespace
from pathlib import Path

import pytest

from facialattr.errors import MissingExtraError
from facialattr.extras import COMMAND_EXTRAS, DETECTOR_NEEDS, NEEDS, command_needs, require_extra

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def pretend_missing(monkeypatch, *modules: str) -> None:
    """find_spec answers None for ``modules``, as it does when they are not installed."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a))


@pytest.mark.parametrize("need", NEEDS)
def test_a_missing_module_names_its_extra_and_the_command_that_installs_it(need, monkeypatch):
    extra, modules = NEEDS[need]
    pretend_missing(monkeypatch, modules[-1])
    with pytest.raises(MissingExtraError) as raised:
        require_extra(need, what="this feature", instead="do without it")
    assert str(raised.value) == (
        f"this feature needs the '{extra}' extra (missing: {modules[-1]}); install it with: "
        f""".venv/bin/pip install -c constraints.txt -e ".[{extra}]"   (from a wheel: pip install 'facialattr[{extra}]')"""
        ", or do without it")


def test_every_need_names_an_extra_that_pyproject_defines():
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    assert {extra for extra, _ in NEEDS.values()} <= set(extras)


def test_every_module_of_every_need_is_installed_where_every_extra_is():
    for need in NEEDS:
        require_extra(need, what=need)  # this environment has every extra: a misspelt module name raises


def test_every_need_a_command_or_detector_names_is_in_the_table():
    assert {n for n in [*COMMAND_EXTRAS.values(), *DETECTOR_NEEDS.values()] if n} <= set(NEEDS)


# (command, its parsed options that matter, the needs that run has)
CASES = [
    ("serve", {}, ["server"]),
    ("score", {"engine": "local"}, []),
    ("score", {"engine": "ray"}, ["ray"]),
    ("predict", {}, []),
    ("watch", {"detector": "mtcnn", "client_metrics_port": None}, ["mtcnn"]),
    ("watch", {"detector": "haar", "client_metrics_port": None}, []),
    ("watch", {"detector": "skimage-lbp", "client_metrics_port": None}, ["lbp-detector"]),
    ("watch", {"detector": "haar", "client_metrics_port": 0}, ["client-metrics"]),  # 0: a free port, still served
    ("analyze", {}, ["analysis"]),
    ("train", {}, ["training"]),
    ("compare", {}, ["training"]),
    ("evaluate", {"scores": None}, ["training"]),
    ("evaluate", {"scores": Path("scores.jsonl")}, []),
    ("export", {"parity_images": None}, ["export", "parity-photos"]),
    ("export", {"parity_images": Path("faces")}, ["export"]),
    ("bench", {"urls": ["host:9001"]}, ["bench"]),
    ("bench", {"urls": None}, ["bench", "server"]),
    ("demo", {"urls": None, "images": Path("faces")}, ["server"]),
    ("demo", {"urls": None, "images": None}, ["server", "demo-samples"]),
    ("demo", {"urls": ["host:9001"], "images": Path("faces")}, []),
    ("demo", {"urls": ["host:9001"], "images": None}, ["demo-samples"]),
]


@pytest.mark.parametrize(("command", "options", "needs"), CASES,
                         ids=[f"{c}-{'-'.join(map(str, o.values())) or 'defaults'}" for c, o, _ in CASES])
def test_a_command_run_needs_what_its_options_bring(command, options, needs):
    assert [r.need for r in command_needs(command, Namespace(**options))] == needs


def test_every_command_is_in_the_cases_and_its_default_need_is_its_table_entry():
    assert {c for c, _, _ in CASES} == set(COMMAND_EXTRAS)
    for command, base in COMMAND_EXTRAS.items():
        assert [r.need for r in command_needs(command)] == ([base] if base else [])


def test_an_option_s_need_says_which_option_and_the_way_around_it():
    (samples,) = [r for r in command_needs("demo", Namespace(urls=["host:9001"], images=None))]
    assert (samples.what, samples.instead) == ("facialattr demo without a folder (its sample photos)",
                                               "give it a folder of face photos")
    (detector,) = command_needs("watch", Namespace(detector="mtcnn"))
    assert "--detector mtcnn" in detector.what and "--detector haar" in detector.instead
