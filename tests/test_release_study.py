"""A study written by an earlier release (``tests/data/release-study``, see its README) still reports,
exports and resumes with today's code: its stored parameter names and records are a promise to users."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from autocomp.runtime import onnx_predictor
from test_search import cli

TESTS = Path(__file__).parent
RELEASE = TESTS / "data" / "release-study"
REPO = TESTS.parent


@pytest.fixture
def old_run(tmp_path, monkeypatch):
    """A copy of the release's run folder, in another place than it was written (its paths moved with it)."""
    run = tmp_path / "moved" / "run"
    run.mkdir(parents=True)
    for name in ("study.db", "baseline", "trials"):
        source = RELEASE / name
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, run / name)
    monkeypatch.chdir(REPO)  # the study recorded its task and space relative to the repository root
    return run


def _trials(run: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="release", storage=f"sqlite:///{run / 'study.db'}").get_trials()


def test_an_old_study_reports(old_run):
    code, _, stderr = cli("report", "--study", str(old_run))
    assert code == 0, stderr
    page = (old_run / "report.html").read_text()
    for trial in _trials(old_run):
        assert f'"number": {trial.number}' in page or f"trial {trial.number}" in page


@pytest.mark.parametrize("number", [2, 3])  # width 0.5 with pruning; pruning with unstructured sparsity
def test_an_old_study_exports_its_trials(old_run, tmp_path, number):
    out = tmp_path / "export"
    code, _, stderr = cli("export", "--study", str(old_run), "--trial", str(number), "--out", str(out))
    assert code == 0, stderr
    trial = _trials(old_run)[number]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trial"] == number and metrics["model"]["accuracy"] == trial.values[0]
    assert json.loads((out / "plan.json").read_text()) == trial.params
    # the rebuilt PyTorch model is the one that was scored: the export checked model.pt2 against the record
    assert metrics["model"]["pt2_accuracy"] == pytest.approx(trial.user_attrs["torch_accuracy"], abs=1e-6)
    import torch

    example = torch.rand(3, 1, 16, 16)
    ours = onnx_predictor(out / "model.onnx")(example.numpy())
    program = torch.export.load(out / "model.pt2").module()
    assert np.asarray(ours).shape == tuple(program(example).shape)


def test_an_old_study_resumes_with_its_trials_kept(old_run):
    before = {t.number: (t.params, t.values) for t in _trials(old_run)}
    code, _, stderr = cli(
        "search", "--device", "local", "--threads", "1", "--task", "tests/search_tasks.py:frozen_shapes",
        "--space", "tests/data/release-study/space.yaml", "--trials", "6", "--backend", "estimate",
        "--out", str(old_run), "--study-name", "release", "--seed", "1",
    )
    assert code == 0, stderr
    after = _trials(old_run)
    assert [t.number for t in after] == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in after)
    assert {t.number: (t.params, t.values) for t in after if t.number in before} == before
    # the new trials name their parameters as the old ones did
    assert all(set(t.params) == set(after[0].params) for t in after)
