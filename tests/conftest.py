from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import ShapesTask, TextTask  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path_factory, monkeypatch):
    """Calibrations written by one test never leak into another or into the user's config."""
    monkeypatch.setenv("AUTOCOMP_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))


@pytest.fixture(scope="session")
def shapes_task() -> ShapesTask:
    return ShapesTask()


@pytest.fixture(scope="session")
def text_task() -> TextTask:
    return TextTask()
