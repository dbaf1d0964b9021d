"""The layers of docs/ARCHITECTURE.md, enforced: core <- parts <- apps, and no module cycle.

Every ``import`` in the installed source tree (module level and inside functions alike) is
read with ``ast`` and checked against one table: which layer may import which. A new
upward import (the core reaching into a part, a part into the CLI) fails here, naming the
file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Source folder -> the package it installs as (pyproject.toml's package-dir).
PACKAGES = {
    "facialattr": "facialattr",
    "client": "facialattr.client",
    "serving": "facialattr.serving",
    "export": "facialattr.export",
    "training": "facialattr.training",
    "benchmarks": "facialattr.benchmarks",
}

# Package prefix -> layer; the longest matching prefix wins, so facialattr.app is not core.
LAYER_OF_PREFIX = {
    "facialattr": "core",
    "facialattr.client": "client",
    "facialattr.serving": "serving",
    "facialattr.export": "export",
    "facialattr.training": "training",
    "facialattr.app": "app",
    "facialattr.benchmarks": "app",
}

# Which layers each layer may import (itself included). The core imports no part; a part
# imports the core and only the parts named here; the apps sit on top of everything.
MAY_IMPORT = {
    "core": {"core"},
    "client": {"core", "client"},
    "serving": {"core", "serving"},
    "training": {"core", "training"},
    # Export converts what training made (CelebA val for the INT8 gate, its metrics) and feeds the
    # parity gate through the client's own decode and preprocessing, so both are below it.
    "export": {"core", "export", "training", "client"},
    "app": {"core", "client", "serving", "export", "training", "app"},
}


def module_name(path: Path) -> str:
    """The dotted name ``path`` installs as, e.g. client/cctv/track.py -> facialattr.client.cctv.track."""
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [p for p in rest if p != "__init__"]
    return ".".join([PACKAGES[folder], *parts])


def layer_of(module: str) -> str:
    """The layer of a dotted facialattr module name."""
    prefix = max((p for p in LAYER_OF_PREFIX if module == p or module.startswith(p + ".")), key=len)
    return LAYER_OF_PREFIX[prefix]


def source_files() -> list[Path]:
    """Every Python file that installs as part of the facialattr package."""
    return sorted(p for folder in PACKAGES for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(tree: ast.AST) -> list[tuple[str, int]]:
    """(facialattr module named, line) for each import in ``tree``: ``from a import b`` names a.b when b is a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return [(name, line) for name, line in found if name == "facialattr" or name.startswith("facialattr.")]


def import_graph() -> dict[str, dict[str, int]]:
    """Module -> {facialattr module it imports: first line}, only modules that exist in the tree."""
    files = {module_name(p): p for p in source_files()}
    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        targets: dict[str, int] = {}
        for name, line in imported_modules(ast.parse(path.read_text(), filename=str(path))):
            if name in files and name != module:
                targets.setdefault(name, line)
        graph[module] = targets
    return graph


def violations(graph: dict[str, dict[str, int]]) -> list[str]:
    """Each import that the MAY_IMPORT table forbids, as 'module (layer) line N imports target (layer)'."""
    out = []
    for module, targets in sorted(graph.items()):
        for target, line in sorted(targets.items()):
            if layer_of(target) not in MAY_IMPORT[layer_of(module)]:
                out.append(f"{module} ({layer_of(module)}) line {line} imports {target} ({layer_of(target)})")
    return out


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Module import cycles (a package importing its own submodule aside), one path per cycle found."""
    found, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in graph.get(module, {}):
            if target.startswith(module + "."):  # a package's __init__ importing its submodule
                continue
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("facialattr", "core"), ("facialattr.contract", "core"), ("facialattr.app.cli", "app"),
        ("facialattr.client.cctv.track", "client"), ("facialattr.benchmarks.sweep", "app"),
    ],
)
def test_each_module_sits_in_its_layer(module, layer):
    assert layer_of(module) == layer


@pytest.mark.parametrize(
    ("source", "allowed"),
    [
        ("from facialattr.errors import EXIT_OK", True),
        ("from facialattr import repository", True),
        ("from facialattr.client.bulk import score_paths", False),
        ("import facialattr.app.cli", False),
        ("def f():\n    from facialattr.serving.embedded import EmbeddedTriton", False),  # lazy imports count too
    ],
)
def test_the_checker_sees_an_upward_import_from_the_core(source, allowed):
    modules = set(import_graph())
    names = {name for name, _ in imported_modules(ast.parse(source))}
    assert (not violations({"facialattr.contract": {name: 1 for name in names if name in modules}})) == allowed


def test_no_module_imports_a_layer_above_its_own():
    assert violations(import_graph()) == []


def test_no_module_import_cycles():
    assert cycles(import_graph()) == []


def test_the_core_does_not_reach_the_parts_even_through_the_cli():
    graph = import_graph()
    core = [m for m in graph if layer_of(m) == "core"]
    assert "facialattr.app.cli" in graph and "facialattr.cli" not in graph
    assert all(layer_of(t) == "core" for m in core for t in graph[m])
