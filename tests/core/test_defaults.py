"""Every shared default is written once, in facialattr/defaults.py, and read from there (issue 23's grep, as a test)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from facialattr import defaults

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("facialattr", "client", "serving", "export", "training", "benchmarks")
HOME = ROOT / "facialattr" / "defaults.py"

# The literal as code would write it -> the name in defaults.py that is its one home.
SHARED = {
    defaults.HTTP_PORT: "HTTP_PORT",
    defaults.GRPC_PORT: "GRPC_PORT",
    defaults.METRICS_PORT: "METRICS_PORT",
    defaults.SUPERVISOR_PORT: "SUPERVISOR_PORT",
    defaults.GRPC_URL: "GRPC_URL",
    defaults.ENV_GRPC_URL: "ENV_GRPC_URL",
    defaults.ENV_MODEL_REPOSITORY: "ENV_MODEL_REPOSITORY",
}
# Not scanned: MODEL_REPOSITORY ("model_repository"), which is also Triton's key in a model's args and a
# flag's dest. Places where the same literal is another fact:
NOT_THE_DEFAULT = {("benchmarks/run_all.py", defaults.HTTP_PORT): "a queue delay of 8,000 microseconds"}


def _literals(path: Path) -> list[tuple[int, object]]:
    """(line, value) of each number and string literal in the code, docstrings and comments excluded."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and id(node) not in docstrings and isinstance(node.value, int | str)
            and not isinstance(node.value, bool)]


def _sources() -> list[Path]:
    return sorted(p for part in PARTS for p in (ROOT / part).rglob("*.py") if p != HOME)


def test_the_scan_reads_the_parts_and_would_see_a_port_written_again(tmp_path):
    assert len(_sources()) > 100
    probe = tmp_path / "probe.py"
    probe.write_text('"""Port 8001 in a docstring is prose."""\nport = 8001  # a second home\n')
    assert _literals(probe) == [(2, defaults.GRPC_PORT)]


@pytest.mark.parametrize(("value", "name"), SHARED.items(), ids=SHARED.values())
def test_a_shared_default_is_written_only_in_defaults_py(value, name):
    found = [f"{path.relative_to(ROOT)}:{line}" for path in _sources() for line, literal in _literals(path)
             if literal == value and (str(path.relative_to(ROOT)), value) not in NOT_THE_DEFAULT]
    assert not found, f"{value!r} is defaults.{name}: import it instead of writing it at {', '.join(found)}"


def test_the_environment_replaces_the_url_and_repository_defaults_and_an_empty_value_does_not(monkeypatch):
    monkeypatch.setenv(defaults.ENV_GRPC_URL, "10.0.0.9:9001")
    monkeypatch.setenv(defaults.ENV_MODEL_REPOSITORY, "/srv/models")
    assert (defaults.grpc_url(), defaults.model_repository()) == ("10.0.0.9:9001", Path("/srv/models"))
    monkeypatch.setenv(defaults.ENV_GRPC_URL, "")
    monkeypatch.delenv(defaults.ENV_MODEL_REPOSITORY)
    assert (defaults.grpc_url(), defaults.model_repository()) == (defaults.GRPC_URL, Path(defaults.MODEL_REPOSITORY))
