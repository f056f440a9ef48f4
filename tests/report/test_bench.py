"""`autocomp bench`: hypervolume, the uniform plans, a small end-to-end run that resumes, and its page in Chromium."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from autocomp.anchors import uniform_grid
from autocomp.bench import hypervolume
from autocomp.record import Baseline
from test_report_html import render_in_chromium

TESTS = Path(__file__).resolve().parents[1]
BASELINE = Baseline(accuracy=0.95, latency_ms=2.0, zip_bytes=1000)


def _trial(number: int, accuracy: float, latency_ms: float, size_bytes: float) -> FrozenTrial:
    return FrozenTrial(
        number=number, state=TrialState.COMPLETE, value=None, values=[accuracy, latency_ms, size_bytes],
        datetime_start=None, datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
        intermediate_values={}, trial_id=number,
    )  # fmt: skip


def test_hypervolume_is_the_box_fraction_dominated_past_the_reference():
    # floor 0.90: error 0.05 of a 0.10 span -> 0.5; half the latency; half the size -> box 0.5^3
    half = _trial(0, 0.95, 1.0, 500.0)
    assert hypervolume([half], baseline=BASELINE, floor=0.90) == pytest.approx(0.125)
    # a point no better than the baseline's latency, or below the floor, adds nothing
    slow, poor = _trial(1, 0.99, 2.5, 10.0), _trial(2, 0.85, 0.1, 10.0)
    assert hypervolume([half, slow, poor], baseline=BASELINE, floor=0.90) == pytest.approx(0.125)
    assert hypervolume([], baseline=BASELINE, floor=0.90) == 0.0
    # a second, non-dominated point adds exactly its own slab
    fast = _trial(3, 0.91, 0.5, 500.0)  # error 0.9, latency 0.25, size 0.5
    assert hypervolume([half, fast], baseline=BASELINE, floor=0.90) == pytest.approx(0.125 + 0.1 * 0.25 * 0.5)


def test_uniform_plans_are_one_ratio_and_one_precision_everywhere():
    distributions = {
        "distill/width": CategoricalDistribution([0.5, 1.0]),
        "prune/a": FloatDistribution(0.0, 0.5, step=0.25),
        "prune/b": FloatDistribution(0.0, 0.5, step=0.25),
        "bits/a": CategoricalDistribution([32, 8]),
        "bits/b": CategoricalDistribution([32, 16, 8]),
    }
    plans = uniform_grid(distributions, supported_bits=(32, 16, 8))
    for plan in plans:
        assert plan["distill/width"] == 1.0
        assert plan["prune/a"] == plan["prune/b"] and plan["bits/a"] == plan["bits/b"]
    # 16 is not a choice of every layer; 0.75 is clipped to the space's 0.5; the baseline itself is left out
    assert sorted((p["prune/a"], p["bits/a"]) for p in plans) == [(0.0, 8), (0.25, 8), (0.25, 32), (0.5, 8), (0.5, 32)]


def test_bench_compares_samplers_and_uniform_plans_and_resumes(tmp_path):
    from test_search import SPACE, cli

    space = tmp_path / "space.yaml"
    space.write_text(SPACE + "proposals: 1\n")  # the searches' sensitivity pass reads the baseline the grid wrote
    out = tmp_path / "bench"
    args = [
        "bench", "--task", f"{TESTS / 'search_tasks.py'}:shapes", "--space", str(space), "--trials", "3",
        "--seeds", "2", "--samplers", "tpe,random", "--rounds", "1", "--out", str(out),
    ]  # fmt: skip
    code, stdout, stderr = cli(*args)
    assert code == 0, stderr
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["method"], r["seed"]) for r in rows] == [("tpe", "0"), ("tpe", "1"), ("random", "0"), ("random", "1"), ("uniform", "")]
    for row in rows:
        assert 0.0 <= float(row["hypervolume"]) <= 1.0
        if row["chosen_trial"]:
            assert float(row["measured_ms"]) > 0 and float(row["baseline_measured_ms"]) > 0
    assert int(rows[-1]["trials"]) == 5  # the uniform grid of this space
    from autocomp.study import load_existing_study

    assert load_existing_study(f"sqlite:///{out / 'bench.db'}", "uniform").user_attrs["bench_wall_s"] > 0  # the searches' budget
    for row in rows[:-1]:  # every search had the grid's wall time (and --trials 3 at the most)
        study = load_existing_study(f"sqlite:///{out / 'bench.db'}", f"{row['method']}-seed{row['seed']}")
        assert int(row["trials"]) <= 3 and study.user_attrs["bench_wall_s"] > 0
        if row["chosen_trial"]:
            assert float(row["shipped_accuracy"]) == float(row["chosen_accuracy"])  # this space has no final fine-tune
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"tpe", "random", "uniform"}
    assert summary["overhead_s"]["wall"] > summary["overhead_s"]["finetune"] > 0
    assert "tool's own overhead" in stdout and "median hypervolume" in stdout

    # the same command again finds every study complete: nothing is re-run, the figures stay
    code, _, stderr = cli(*args, "--no-measure")
    assert code == 0, stderr
    again = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["method"], r["trials"], r["hypervolume"]) for r in again] == [(r["method"], r["trials"], r["hypervolume"]) for r in rows]

    probe = render_in_chromium(out / "bench.html", tmp_path)
    assert probe["errors"] == []
    assert probe["plots"]["fig-fronts"]["svg"] and probe["plots"]["fig-fronts"]["traces"] > 0
