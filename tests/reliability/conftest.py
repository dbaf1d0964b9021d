"""Fixtures of the reliability tests: private real servers the tests may kill, slow down or overload."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _load_sibling(name: str):
    """Import ``name.py`` from this folder as ``reliability_<name>`` (importlib mode puts no folder on sys.path)."""
    module_name = f"reliability_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


support = _load_sibling("support")
corpus = _load_sibling("corpus")


@pytest.fixture(scope="module")
def own_repository(tmp_path_factory) -> Path:
    """A repository of the tiny model for servers this module starts (and may kill)."""
    return support.make_repository(tmp_path_factory.mktemp("reliability-repo"))


@pytest.fixture(scope="module")
def own_server(own_repository):
    """A real server private to one test module, so killing or overloading it harms no other test."""
    server = support.start(own_repository)
    yield server
    server.stop()
