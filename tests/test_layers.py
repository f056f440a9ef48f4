"""The module picture the code promises: the latency layer prices and times ONNX files and knows
nothing of how they were made; profiles load without the ONNX analysis; leaves stay leaves.

Read from the source (every import, also those inside functions), so a lazy import cannot hide an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "autocomp"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("autocomp")}


def _reaches(imported: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(name for name in imported if any(name == b or name.startswith(b + ".") for b in banned))


@pytest.mark.parametrize("path", sorted((PACKAGE / "latency").glob("*.py")), ids=lambda p: p.name)
def test_the_latency_layer_imports_nothing_that_makes_models(path):
    banned = ("autocomp.compress", "autocomp.tasks", "autocomp.export", "autocomp.pipeline", "autocomp.calibration",
              "autocomp.objective", "autocomp.study")
    assert _reaches(_imports(path), banned) == []


def test_profiles_load_without_the_latency_layer():
    assert _reaches(_imports(PACKAGE / "profiles.py"), ("autocomp.latency",)) == []


@pytest.mark.parametrize("leaf", ["cost_model.py", "onnx_meta.py"])
def test_leaves_import_only_the_errors(leaf):
    assert _imports(PACKAGE / leaf) <= {"autocomp.errors", "autocomp.errors.ConfigError"}


def test_targets_is_a_leaf():
    assert _imports(PACKAGE / "targets.py") <= {
        "autocomp.errors", "autocomp.errors.PlanError", "autocomp.precision", "autocomp.precision.SUPPORTED_BITS",
        "autocomp.precision.precision",
    }


@pytest.mark.parametrize("path", sorted((PACKAGE / "compress").glob("*.py")), ids=lambda p: p.name)
def test_compressors_know_nothing_of_plans_knobs_or_searches(path):
    """A compressor takes a model and its own arguments; the knobs translate a plan into those calls."""
    banned = ("autocomp.plan", "autocomp.knobs", "autocomp.search_space", "autocomp.pipeline", "autocomp.objective", "autocomp.study")
    assert _reaches(_imports(path), banned) == []


@pytest.mark.parametrize("path", sorted((PACKAGE / "knobs").glob("*.py")), ids=lambda p: p.name)
def test_knobs_sit_below_the_plan_the_space_and_the_pipeline(path):
    banned = ("autocomp.plan", "autocomp.search_space", "autocomp.pipeline", "autocomp.objective", "autocomp.study",
              "autocomp.report", "autocomp.cli")
    assert _reaches(_imports(path), banned) == []


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_edges(path: Path, modules: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports when it runs (``if TYPE_CHECKING:`` blocks left out);
    ``from package import submodule`` is an edge to the submodule."""
    edges: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            return
        if isinstance(node, ast.Import):
            edges.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("autocomp"):
            subs = {f"{node.module}.{alias.name}" for alias in node.names} & modules
            edges.update(subs)
            if len(subs) < len(node.names) and node.module in modules:
                edges.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return edges - {_module_name(path)}


def test_the_module_picture_has_no_circle():
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: _runtime_edges(path, set(paths)) for name, path in paths.items()}
    circles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(name: str) -> None:
        state[name] = 1
        path.append(name)
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                walk(nxt)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)
    assert circles == []
