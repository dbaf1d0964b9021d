"""facialattr.benchmarks imports only with the bench extra, and says how to install it when a part is missing."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest

from facialattr.errors import MissingExtraError

INSTALL_LINE = '.venv/bin/pip install -c constraints.txt -e ".[bench]"'


@pytest.mark.parametrize("missing", ["locust", "matplotlib", "psutil", "skimage"])
@pytest.mark.parametrize("module", ["facialattr.benchmarks", "facialattr.benchmarks.sweep"])
def test_importing_the_benchmarks_without_a_module_of_the_bench_extra_names_it_and_the_install_line(
        module, missing, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args, **kwargs: None if name == missing else real_find_spec(name, *args, **kwargs))
    # A fresh import: the package and its submodule as if never loaded (restored after the test).
    for loaded in ("facialattr.benchmarks", module):
        monkeypatch.delitem(sys.modules, loaded, raising=False)
    with pytest.raises(MissingExtraError) as raised:
        importlib.import_module(module)
    assert f"facialattr.benchmarks needs the 'bench' extra (missing: {missing})" in str(raised.value)
    assert INSTALL_LINE in str(raised.value)


def test_with_the_bench_extra_installed_the_benchmarks_import(monkeypatch):
    monkeypatch.delitem(sys.modules, "facialattr.benchmarks", raising=False)
    assert importlib.import_module("facialattr.benchmarks").__name__ == "facialattr.benchmarks"
