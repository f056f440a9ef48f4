"""The report's numbers, without a browser: study -> tables for each figure."""

from __future__ import annotations

import math
import shlex
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from autocomp.report import data
from study_factory import (
    ACCURACY_FLOOR,
    BETWEEN_TRIALS_S,
    FAILED_TRIAL_S,
    LATENCY_BUDGET_MS,
    LAYERS,
    SAMPLER,
    VERSIONS,
    make_empty_study,
    make_study,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
DIRECTIONS = ["maximize", "minimize", "minimize"]


@pytest.fixture(scope="module")
def study() -> optuna.Study:
    return make_study(n_trials=40)


@pytest.fixture(scope="module")
def trials(study) -> pd.DataFrame:
    return data.trials_table(study)


def bare_study(n: int = 3, *, user_attrs: dict | None = None, **trial_attrs) -> optuna.Study:
    """A study written by an older search: no study attrs, trials with only params and values."""
    study = optuna.create_study(directions=DIRECTIONS)
    for key, value in (user_attrs or {}).items():
        study.set_user_attr(key, value)
    dists = {"prune/conv1": FloatDistribution(0.0, 0.7), "bits/conv1": CategoricalDistribution([32, 16, 8])}
    for i in range(n):
        study.add_trial(
            create_trial(
                values=[0.9 - 0.01 * i, 2.0 - 0.3 * i, 1000 + i],
                params={"prune/conv1": 0.1 * i, "bits/conv1": [32, 16, 8][i % 3]},
                distributions=dists,
                user_attrs=trial_attrs,
            )
        )
    return study


def test_pareto_mask_handles_directions_and_ties():
    points = np.array(
        [
            [0.9, 1.0, 10.0],  # front
            [0.8, 1.0, 10.0],  # dominated by the first (less accurate, same cost)
            [0.95, 2.0, 10.0],  # front: most accurate
            [0.7, 0.5, 10.0],  # front: fastest
            [0.9, 1.0, 10.0],  # duplicate of a front point: kept
            [0.6, 3.0, 20.0],  # dominated by everything
        ]
    )
    assert data.pareto_mask(points, DIRECTIONS).tolist() == [True, False, True, True, True, False]
    assert data.pareto_mask(np.zeros((0, 3)), DIRECTIONS).tolist() == []


def test_trials_table_flags_match_the_contract(study, trials):
    assert len(trials) == len(study.trials)
    assert trials["state"].value_counts().to_dict() == {"COMPLETE": 40, "FAIL": 2, "PRUNED": 2}
    done = trials[trials["state"] == "COMPLETE"]
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        row = done[done["trial"] == trial.number].iloc[0]
        assert row["accuracy_pct"] == pytest.approx(trial.values[0] * 100)
        assert row["size_mb"] == pytest.approx(trial.values[2] / 1e6)
        assert row["feasible"] == (trial.values[0] >= ACCURACY_FLOOR and trial.values[1] <= LATENCY_BUDGET_MS)
        assert bool(row["violations"]) == (not row["feasible"])
    # Our Pareto front is Optuna's own constrained front.
    assert sorted(trials.loc[trials["pareto"], "trial"]) == sorted(t.number for t in study.best_trials)
    assert not trials.loc[trials["pareto"], "feasible"].eq(False).any()
    assert trials["chosen"].sum() == 1
    chosen = trials[trials["chosen"]].iloc[0]
    assert chosen["trial"] == study.user_attrs["chosen_trial"] and chosen["pareto"]
    failed = trials[trials["state"] != "COMPLETE"]
    assert failed["accuracy_pct"].isna().all() and failed["feasible"].isna().all()
    assert failed["fail_reason"].str.len().gt(10).all()


def test_history_running_best_is_monotone_and_feasible_only(trials):
    history = data.history_table(trials)
    assert list(history["trial"]) == sorted(history["trial"])
    best = history["best_accuracy_pct"].dropna()
    assert (best.diff().dropna() >= 0).all()
    assert (history["best_latency_ms"].dropna().diff().dropna() <= 0).all()
    first_feasible = history.index[history["feasible"] == True][0]  # noqa: E712
    assert history.loc[: first_feasible - 1, "best_accuracy_pct"].isna().all()
    feasible = history[history["feasible"] == True]  # noqa: E712
    assert history["best_accuracy_pct"].iloc[-1] == feasible["accuracy_pct"].max()
    assert history.loc[first_feasible:, ["best_accuracy_pct", "best_latency_ms", "best_size_mb"]].notna().all().all()
    assert (history["best_size_bytes"].dropna().diff().dropna() <= 0).all()
    assert history["best_size_bytes"].iloc[-1] == feasible["size_bytes"].min()


def test_chosen_layers_against_baseline(study):
    layers = data.chosen_layers(study)
    assert list(layers.columns) == data.LAYER_COLUMNS
    assert list(layers["layer"]) == [name for name, *_ in LAYERS]
    assert (layers["baseline_bits"] == 32).all()
    assert (layers["channels"] <= layers["baseline_channels"]).all()
    assert list(layers["baseline_channels"]) == [channels for _, channels, *_ in LAYERS]
    row = layers.iloc[-1]
    assert row["speedup"] == pytest.approx(row["baseline_latency_ms"] / row["est_latency_ms"])
    chosen = study.trials[study.user_attrs["chosen_trial"]]
    assert list(layers["bits"]) == [chosen.params[f"bits/{name}"] for name, *_ in LAYERS]


def test_chosen_summary_compares_with_baseline(study, trials):
    meta = data.study_meta(study)
    summary = data.chosen_summary(trials, meta)
    baseline = study.user_attrs["baseline"]
    chosen = study.trials[meta.chosen_trial]
    assert summary["baseline_accuracy_pct"] == pytest.approx(baseline["accuracy"] * 100)
    assert summary["accuracy_delta_pts"] == pytest.approx((chosen.values[0] - baseline["accuracy"]) * 100)
    assert summary["speedup"] == pytest.approx(baseline["latency_ms"] / chosen.values[1])
    assert summary["size_ratio"] == pytest.approx(baseline["size_bytes"] / chosen.values[2])
    assert summary["size_bytes"] == chosen.values[2] and summary["baseline_size_bytes"] == baseline["size_bytes"]


@pytest.mark.parametrize(
    ("size_bytes", "shown"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (999, "999 B"),
        (1_000, "1 kB"),
        (4_580, "4.58 kB"),  # the bug report's 0.00458 MB
        (219_000, "219 kB"),
        (999_499, "999 kB"),
        (999_999, "1 MB"),  # the unit is picked after rounding: not "1e+03 kB"
        (1_200_000, "1.2 MB"),
        (12_345_678, "12.3 MB"),
        (2.5e9, "2.5 GB"),
        (None, "–"),
        (float("nan"), "–"),
    ],
)
def test_format_bytes_picks_the_unit_by_magnitude(size_bytes, shown):
    assert data.format_bytes(size_bytes) == shown


def test_format_duration_is_minutes_and_seconds():
    assert data.format_duration(0) == "0 min 00 s"
    assert data.format_duration(65.4) == "1 min 05 s"
    assert data.format_duration(3_600) == "60 min 00 s"
    assert data.format_duration(None) == "not recorded"


def test_run_facts_record_seed_sampler_versions_and_run_time(study):
    facts = data.run_facts(study, run_dir=Path("/runs/cifar nano"))
    assert facts.seed == 7 and facts.sampler == SAMPLER
    assert facts.versions == VERSIONS and facts.version_rows == list(VERSIONS.items())
    rows = dict(facts.rows)
    assert rows["seed"] == "7" and rows["sampler"] == SAMPLER
    assert rows["task"] == "cifar10-resnet8" and rows["device"] == "jetson-nano"
    assert rows["search space"] == "cnn-default" and rows["latency backend"] == "estimate"
    # the factory runs its trials back to back: each its own seconds, then a pause
    trials = study.trials
    expected = sum(t.user_attrs.get("seconds", FAILED_TRIAL_S) for t in trials) + BETWEEN_TRIALS_S * (len(trials) - 1)
    assert facts.run_seconds == pytest.approx(expected) and facts.n_finished == len(trials)
    assert rows["run time"] == f"{data.format_duration(expected)} (first trial start to last trial end, 44 finished trial(s))"


def test_run_time_spans_finished_trials_only():
    study = optuna.create_study(directions=DIRECTIONS)
    start = datetime(2026, 1, 2, 10, 0, 0)
    for state, begin_s, end_s in [
        (TrialState.COMPLETE, 30, 90),
        (TrialState.COMPLETE, 0, 100),  # parallel with the first: the span counts the wall time once
        (TrialState.FAIL, 100, 125),  # a failed trial still ran
        (TrialState.RUNNING, 5, None),  # unfinished: no end, not counted
    ]:
        values = [0.9, 1.0, 100] if state == TrialState.COMPLETE else None
        trial = create_trial(state=state, values=values)
        trial.datetime_start = start + timedelta(seconds=begin_s)
        trial.datetime_complete = None if end_s is None else start + timedelta(seconds=end_s)
        study.add_trial(trial)
    assert data.run_span(study) == (125.0, 3)
    assert dict(data.run_facts(study, run_dir=None).rows)["run time"].startswith("2 min 05 s (")
    nothing = optuna.create_study(directions=DIRECTIONS)
    assert data.run_span(nothing) == (None, 0)
    assert dict(data.run_facts(nothing, run_dir=None).rows)["run time"] == "not recorded"


def test_old_study_without_seed_sampler_versions_says_not_recorded():
    legacy = data.run_facts(make_study(n_trials=10, legacy=True), run_dir=Path("/runs/old"))
    assert legacy.seed is None and legacy.sampler is None and legacy.versions == {}
    rows = dict(legacy.rows)
    assert rows["seed"] == rows["sampler"] == "not recorded"
    assert rows["task"] == "cifar10-resnet8"  # the settings it did record still show
    assert legacy.version_rows == [("versions", "not recorded")]
    # older still: no settings at all, or attrs of the wrong shape, read as not recorded too
    for attrs in ({}, {"settings": "tpe", "versions": ["torch"]}, {"settings": {"seed": None, "sampler": ""}, "versions": {}}):
        facts = data.run_facts(bare_study(2, user_attrs=attrs), run_dir=None)
        assert {label: text for label, text in facts.rows if label != "run time"} == dict.fromkeys(
            ["sampler", "seed", "task", "device", "search space", "latency backend"], "not recorded"
        )
        assert facts.version_rows == [("versions", "not recorded")]
    empty = data.run_facts(make_empty_study(), run_dir=None)  # no settings attr, but the study's own task and device
    assert dict(empty.rows)["task"] == "digits-cnn" and dict(empty.rows)["device"] == "raspberry-pi-4"
    assert empty.version_rows == [("versions", "not recorded")]


def test_export_command_names_the_run_dir(study):
    run_dir = Path("/home/me/reports/cifar nano")  # a space: the command must still be one argument per path
    facts = data.run_facts(study, run_dir=run_dir)
    assert facts.export_trial == study.user_attrs["chosen_trial"]
    assert shlex.split(facts.export_command) == ["autocomp", "export", "--study", str(run_dir), "--out", str(run_dir / "export")]
    unchosen = data.run_facts(bare_study(2), run_dir=run_dir)  # no chosen trial: only the baseline can be exported
    assert unchosen.export_trial is None
    assert shlex.split(unchosen.export_command)[-4:] == ["--out", str(run_dir / "export"), "--trial", "baseline"]
    assert data.export_command(None, chosen_trial=3) == "autocomp export --study RUN_DIR --out RUN_DIR/export"


def test_device_section_says_why(study):
    meta = data.study_meta(study)
    facts = dict(data.device_facts(meta))
    assert facts["int8"].startswith("not accelerated") and facts["fp16"].startswith("accelerated")
    assert "multiples of 8" in facts["channel multiple"]
    assert "ssh:nano-01" in facts["calibration"]
    reasons = data.device_reasons(meta, data.chosen_layers(study, meta))
    assert any(r.startswith("int8 not accelerated on jetson-nano → fp16 preferred") for r in reasons)
    assert any("unstructured sparsity gives no speedup" in r for r in reasons)


def test_latency_provenance(trials, study):
    meta = data.study_meta(study)
    assert data.latency_provenance(trials, meta) == {
        "kind": "estimated",
        "sources": {"estimate:jetson-nano": 40},
        "backend": "estimate",
        "baseline_source": "estimate:jetson-nano",
        "chosen_sure": "",  # a study from before estimates said how sure they are
    }
    measured = bare_study(latency_source="ssh:nano-01")
    assert data.latency_provenance(data.trials_table(measured), data.study_meta(measured))["kind"] == "measured"
    mixed = bare_study(latency_source="local")
    mixed.add_trial(create_trial(values=[0.5, 1.0, 10], user_attrs={"latency_source": "estimate:x"}))
    assert data.latency_provenance(data.trials_table(mixed), data.study_meta(mixed))["kind"] == "mixed"


def test_the_chosen_models_estimate_says_how_sure_it_is():
    sure = "outside the calibrated range (op type <LayerNormalization> never calibrated); ±9% for 9 in 10 held-out fp32 files inside it"
    study = bare_study(2, user_attrs={"chosen_trial": 1}, latency_source="estimate:local", latency_sure=sure)
    trials, meta = data.trials_table(study), data.study_meta(study)
    provenance = data.latency_provenance(trials, meta)
    assert provenance["chosen_sure"] == sure and trials["latency_sure"].tolist() == [sure, sure]
    from autocomp.report.html import _provenance_html

    shown = _provenance_html(provenance, meta)
    assert "How sure the chosen model's estimate is: outside the calibrated range" in shown
    assert "&lt;LayerNormalization&gt;" in shown and "<LayerNormalization>" not in shown  # escaped


def test_missing_optional_attrs_are_tolerated():
    study = bare_study(4)
    meta = data.study_meta(study)
    assert meta.device is None and meta.baseline is None and meta.chosen_trial is None
    assert meta.accuracy_scale == 100.0
    trials = data.trials_table(study)
    assert trials["feasible"].tolist() == [True] * 4  # no constraints: all feasible
    assert trials["params"].isna().all() and trials["latency_p90_ms"].isna().all()
    assert data.chosen_layers(study).empty
    assert data.chosen_summary(trials, meta) is None
    assert data.device_facts(meta) == []
    assert data.baseline_point(meta) is None


def test_chosen_trial_without_layer_rows_falls_back_to_its_params():
    study = bare_study(3, user_attrs={"chosen_trial": 1})
    layers = data.chosen_layers(study)
    assert layers["layer"].tolist() == ["conv1"]
    assert layers["prune_ratio"].iloc[0] == pytest.approx(0.1) and layers["bits"].iloc[0] == 16
    assert math.isnan(layers["channels"].iloc[0]) and math.isnan(layers["speedup"].iloc[0])


def test_chosen_trial_number_out_of_range_gives_no_plan():
    assert data.chosen_layers(bare_study(2, user_attrs={"chosen_trial": 99})).empty


def test_accuracy_already_in_percent_is_not_scaled():
    assert data.accuracy_scale([0.5, 0.98, None]) == 100.0
    assert data.accuracy_scale([55.0, 98.0]) == 1.0


def test_importances_per_objective(study):
    result = data.importances(study)
    assert result.notes == []
    assert set(result.table["objective"]) == {"accuracy", "latency_ms", "size_bytes"}
    sums = result.table.groupby("objective")["importance"].sum()
    assert np.allclose(sums, 1.0)


def test_importances_negate_maximised_objectives(monkeypatch):
    study = make_study(n_trials=10, n_failed=0, n_pruned=0)
    targets = []

    def fake(study, *, params, target):
        targets.append(target)
        return {params[0]: 1.0}

    monkeypatch.setattr(optuna.importance, "get_param_importances", fake)
    data.importances(study)
    trial = study.get_trials(states=(TrialState.COMPLETE,))[0]
    assert [t(trial) for t in targets] == [-trial.values[0], trial.values[1], trial.values[2]]


def test_importances_degrade_to_notes():
    few = data.importances(bare_study(3))
    assert few.table.empty and "only 3 complete trial(s)" in few.notes[0]
    assert "only 0 complete" in data.importances(make_empty_study()).notes[0]

    fixed = optuna.create_study(directions=DIRECTIONS)
    dist = {"bits/conv1": CategoricalDistribution([8, 16, 32])}
    for i in range(10):
        fixed.add_trial(create_trial(values=[0.9, 1.0 + i, 100], params={"bits/conv1": 8}, distributions=dist))
    result = data.importances(fixed)
    assert result.table.empty and "single value" in result.notes[0]


def test_empty_study_tables():
    study = make_empty_study(n_failed=2)
    trials = data.trials_table(study)
    assert trials["state"].tolist() == ["FAIL", "FAIL"]
    assert not trials["pareto"].any()
    assert data.history_table(trials).empty
    assert data.study_meta(study).state_counts == {"FAIL": 2}


def test_removed_blocks_and_the_side_by_side_timing_are_reported(study):
    from dataclasses import replace as with_fields

    meta = data.study_meta(study)
    layers = data.chosen_layers(study, meta)
    assert layers["removed_block"].isna().all()  # a study without depth pruning says nothing of blocks
    assert not any(r.startswith("depth pruned") for r in data.device_reasons(meta, layers))
    layers["removed_block"] = layers["removed_block"].astype(object)
    layers.loc[layers.index[:2], "removed_block"] = "blocks.3"
    reasons = data.device_reasons(meta, layers)
    assert "depth pruned: 1 whole block(s) removed (blocks.3), with their 2 layers" in " ".join(reasons)
    trials = data.trials_table(study)
    assert data.chosen_summary(trials, meta)["side_by_side"] is None
    timed = with_fields(meta, confirmed_ms={"baseline": 2.0, str(meta.chosen_trial): 0.5})
    assert data.chosen_summary(trials, timed)["side_by_side"] == (0.5, 2.0)
