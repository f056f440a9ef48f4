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
