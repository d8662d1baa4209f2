"""The package's layers: imports point one way, no cycle (lazy imports included), small modules.

    rank  layer           may import
    0     errors, report, quiet_import, version   nothing of graphfix
    1     cudnn/          numpy core: rank 0 only (and imports without TensorFlow:
                          tests/cudnn/test_layout.py)
    2     keras           graphfix.keras: the numpy core's Keras weight helpers, re-exported
    2     graph/          bodies, folding, saved values, detached consts, traced functions
    3     rewrite/        find, read, replace; handed a Target, never imports one
    4     io/             model files in and out
    5     targets/        cpu, tflite: build on the rewrite and io
    6     tools/          inspect, verify, extract
    7     api             convert, convert_graph_def
    8     cli
    9     __init__, __main__

A module may import modules of a lower rank, and modules of its own folder. Every import
counts, also one inside a function, since a lazy import that closes a cycle still means a
layer boundary is in the wrong place.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "graphfix"
RANK = {"errors": 0, "report": 0, "quiet_import": 0, "version": 0, "cudnn": 1, "keras": 2, "graph": 2, "rewrite": 3,
        "io": 4, "targets": 5, "tools": 6, "api": 7, "cli": 8, "__init__": 9, "__main__": 9}
MAX_LINES = 450
FOLDERS = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}


def _modules() -> dict[str, Path]:
    """Dotted name ("graphfix.rewrite.convert") -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, known: set[str]) -> set[str]:
    """The graphfix modules `path` imports anywhere in its body (function bodies included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from graphfix.targets import cpu" imports graphfix.targets.cpu
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, known) - {name} for name, path in modules.items()}


def test_every_module_has_a_layer():
    assert {_layer(m) for m in _modules()} <= set(RANK), sorted({_layer(m) for m in _modules()} - set(RANK))


def test_imports_point_down():
    wrong = []
    for module, imported in _import_graph().items():
        for target in imported:
            same_folder = _layer(module) == _layer(target) and _layer(module) in FOLDERS
            if not same_folder and RANK[_layer(target)] >= RANK[_layer(module)]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycle():
    graph = _import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module, path):
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_rewrite_imports_no_target():
    assert not [f"{m} imports {t}" for m, ts in _import_graph().items() if _layer(m) == "rewrite"
                for t in ts if _layer(t) == "targets"]


def test_modules_are_small():
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert not {name: n for name, n in sizes.items() if n > MAX_LINES}


def test_the_checks_see_imports_inside_functions(tmp_path):
    """The walker must count a lazy import (the kind that used to hide cycles)."""
    path = tmp_path / "lazy.py"
    path.write_text("def f():\n    from graphfix.targets import cpu\n    import graphfix.rewrite\n")
    assert _imports(path, {"graphfix.targets.cpu", "graphfix.rewrite", "graphfix.targets"}) == {
        "graphfix.targets.cpu", "graphfix.rewrite"}
