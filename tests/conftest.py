from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import ShapesTask, TextTask  # noqa: E402


TEST_CALIBRATION = Path(__file__).parent / "data" / "local-calibration.yaml"


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path_factory, monkeypatch):
    """Calibrations written by one test never leak into another or into the user's config; every test
    prices `local` with the same frozen calibration (tests/data/local-calibration.yaml, 1 thread), so
    recalibrating the shipped profile does not change what the tests' searches choose."""
    config = tmp_path_factory.mktemp("config")
    (config / "calibrations").mkdir()
    shutil.copy(TEST_CALIBRATION, config / "calibrations" / "local.yaml")
    monkeypatch.setenv("AUTOCOMP_CONFIG_DIR", str(config))
    monkeypatch.delenv("AUTOCOMP_STORAGE", raising=False)  # a developer's shared database is no test's storage
    # the test tasks import the test helpers: so must the worker processes a search starts (--jobs)
    tests = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p))


@pytest.fixture(scope="session")
def shapes_task() -> ShapesTask:
    return ShapesTask()


@pytest.fixture(scope="session")
def text_task() -> TextTask:
    return TextTask()


@pytest.fixture(scope="session")
def pg():
    """A real PostgreSQL server (tests/postgres.py) for the shared-study and board-pool tests."""
    import tempfile

    from postgres import PostgresServer, postgres_available

    reason = postgres_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the shared-study tests need a real PostgreSQL: {reason}")
        pytest.skip(reason)
    # not under pytest's temp root: that is private to root, and the server runs as the postgres user
    root = Path(tempfile.mkdtemp(prefix="autocomp-pg-"))
    server = PostgresServer(root).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
