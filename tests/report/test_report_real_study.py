"""The report read from a study the real search wrote (``autocomp.search`` on a small task), not from the
synthetic factory: the writer puts only record fields into the study, and every table the report draws
shows what the record holds."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from optuna.trial import TrialState

import autocomp
from autocomp.record import StudyRecord, TrialRecord
from autocomp.report import data, write_report
from autocomp.storage import STALE_PREFIX
from test_search import SPACE as BASE_SPACE

TESTS = Path(__file__).parent.parent
SPACE = BASE_SPACE + """cluster:
  - layers: ["block2_conv1"]
    choices: [4]  # always shared: the column must show
"""


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    out = tmp_path_factory.mktemp("real")
    space = out / "space.yaml"
    space.write_text(SPACE)
    return autocomp.search(
        device="local", task=f"{TESTS / 'search_tasks.py'}:shapes", space=str(space), trials=4, out=out / "run",
        study_name="real", seed=3, min_accuracy="0.0",
    )


def test_the_search_writes_only_record_fields(searched):
    study = searched.study
    study_fields = set(StudyRecord.__dataclass_fields__)
    assert set(study.user_attrs) - study_fields <= {k for k in study.user_attrs if k.startswith(STALE_PREFIX)}
    assert set(study.user_attrs["baseline"]) <= set(type(StudyRecord.of(study).baseline).__dataclass_fields__)
    for trial in study.trials:
        assert set(trial.user_attrs) <= set(TrialRecord.__dataclass_fields__), trial.number
    record = StudyRecord.of(study)
    assert record.settings["seed"] == 3 and record.objectives == ["accuracy", "latency_ms", "zip_bytes"]
    assert record.baseline.accuracy == searched.baseline.accuracy and record.baseline.layers


def test_the_report_tables_show_what_the_trials_recorded(searched):
    study = searched.study
    meta = data.study_meta(study)
    assert (meta.task, meta.device, meta.backend) == (StudyRecord.of(study).task, "local", StudyRecord.of(study).backend)
    assert meta.size_key == "zip_bytes" and meta.accuracy_floor == 0.0
    table = data.trials_table(study).set_index("trial")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete
    for trial in complete:
        record, row = TrialRecord.of(trial), table.loc[trial.number]
        assert row["accuracy_pct"] == pytest.approx(100 * trial.values[0]) and row["size_bytes"] == trial.values[2]
        assert row["params"] == record.params > 0 and row["latency_source"] == record.latency_source != ""
        assert row["seconds"] == pytest.approx(record.seconds) and not math.isnan(row["latency_p90_ms"])
        assert record.artifact and Path(record.artifact).is_file() and record.timings_s and record.layers
    point = data.baseline_point(meta)
    assert point["size_bytes"] == StudyRecord.of(study).baseline.zip_bytes


def test_the_chosen_plan_reads_its_layer_rows_and_the_knob_columns(searched, tmp_path):
    study = searched.study
    meta = data.study_meta(study)
    if meta.chosen_trial is None:  # the search kept the baseline: read the layer table of a complete trial
        meta = replace(meta, chosen_trial=next(t.number for t in study.trials if t.state == TrialState.COMPLETE))
    layers = data.chosen_layers(study, meta).set_index("layer")
    trial = study.trials[meta.chosen_trial]
    assert set(layers.index) == {r["layer"] for r in TrialRecord.of(trial).layers}
    assert layers["baseline_channels"].notna().all() and layers["est_latency_ms"].notna().all()
    # the cluster knob's own column reaches the table without the report naming it
    assert "shared_values" in data.knob_columns(layers.reset_index())
    assert layers.loc["block2_conv1", "shared_values"] == 2 ** trial.params["cluster/block2_conv1"] == 16
    # and the device section says what sharing buys on this device: size, not speed
    assert f"weights shared in 1 of {len(layers)} layers" in " ".join(data.device_reasons(meta, layers.reset_index()))
    assert dict(data.device_facts(meta))["weight sharing"].startswith("size only, no speedup (onnxruntime keeps one float")
    page = write_report(study, tmp_path / "report.html", run_dir=searched.out_dir)
    assert "chosen plan vs baseline" in page.read_text() or StudyRecord.of(study).chosen_trial is None
