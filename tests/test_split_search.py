"""A search that chooses where to cut the model: the ``split`` knob's plans are scored on the marked file (which
computes what the two parts do) and priced end to end across the link; a slow link keeps the model on the
device, a fast one sends the input to the server, and ``autocomp export`` writes the parts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import autocomp
from autocomp.errors import ConfigError
from autocomp.record import TrialRecord
from autocomp.runtime import onnx_predictor

TESTS = Path(__file__).parent
TASK = f"{TESTS / 'search_tasks.py'}:shapes"
SPACE = """
schema_version: 1
finetune: {steps: 4, final_steps: 0, early_stop: {after_steps: 0}}
split:
  after: [device, server, Relu_3]
  wire: [fp32, int8]
"""
FAST = """schema_version: 1
name: rack
description: one rack
bandwidth_mbps: 1000
rtt_ms: 0.01
error_pct: 20
source: 'assumption: a test link'
"""


def _search(tmp_path: Path, link: str, name: str):
    space = tmp_path / "split.yaml"
    space.write_text(SPACE)
    return autocomp.search(
        device="jetson-nano", task=TASK, space=str(space), trials=8, out=tmp_path / name, study_name=name,
        sampler="random", seed=3, min_accuracy="0.0", server="local", link=link, report=False,
    )


def test_the_link_decides_where_the_model_runs_and_export_writes_the_parts(tmp_path):
    fast = tmp_path / "rack.yaml"
    fast.write_text(FAST)
    slow, quick = _search(tmp_path, "lte-5mbps", "slow"), _search(tmp_path, str(fast), "fast")
    for result in (slow, quick):
        cuts = {t.params["split/after"] for t in result.study.trials}
        assert {"device", "server", "Relu_3"} <= cuts, cuts  # every way was tried
        for trial in result.study.trials:
            record = TrialRecord.of(trial)
            if trial.params["split/after"] != "device":
                assert record.bytes_sent > 0 and record.split_ms["transfer"] > 0 and record.latency_source.startswith("estimate:split jetson-nano > ")
            # the size objective is what the device stores: nothing when all runs on the server, the edge part at a cut
            if trial.params["split/after"] == "server":
                assert trial.values[2] == 0
            elif trial.params["split/after"] == "Relu_3":
                assert 0 < trial.values[2] < result.baseline.zip_bytes
    # over LTE every cut pays 50 ms of round trip: nothing beats the baseline, which runs on the device
    assert slow.chosen is None or slow.chosen.params["split/after"] == "device"
    # a fast link to a faster server: the input goes there
    assert quick.chosen is not None and quick.chosen.params["split/after"] == "server"

    # the report re-prices the same trials for every link, without re-training, and says why each runs where it does
    from autocomp.report import data, write_report

    for result in (slow, quick):
        rows = data.split_view(result.study).repriced.set_index("link")
        assert rows.loc["lte-5mbps", "cut"] == "device" and rows.loc["rack" if result is quick else "lte-5mbps", "total_ms"] > 0
        assert rows.loc["lte-5mbps", "reason"].startswith("all on jetson-nano: ")
    cuts = data.split_view(quick.study).cuts.set_index("name")  # the uncompressed model's ways, priced once per study
    assert list(cuts.index[:2]) == ["device", "server"] and "Relu_3" in cuts.index
    assert cuts.loc["server", "total_ms"] < cuts.loc["device", "total_ms"] and cuts.loc["device", "bytes_fp32"] == 0
    fast_rows = data.split_view(quick.study).repriced.set_index("link")
    assert fast_rows.loc["rack", "cut"] == "server" and "ms to send" in fast_rows.loc["rack", "reason"]
    report = write_report(quick.study, tmp_path / "report.html")
    page = report.read_text()
    assert '<section id="split">' in page and 'id="fig-cuts"' in page and "all on the server" in page
    sys.path.insert(0, str(TESTS / "report"))
    from test_report_html import render_in_chromium  # the page in a real headless Chromium: the chart draws

    probe = render_in_chromium(report, tmp_path)
    assert probe["errors"] == [] and probe["plots"]["fig-cuts"]["svg"]

    cut = next(t for t in quick.study.trials if t.params["split/after"] == "Relu_3" and t.state.name == "COMPLETE")
    from autocomp.ship import export_trial

    files = export_trial(quick.study, quick.out_dir, tmp_path / "export", trial=str(cut.number))
    names = {path.name for path in files}
    assert {"model.onnx", "edge.onnx", "server.onnx", "split.json"} <= names
    manifest = json.loads((tmp_path / "export" / "split.json").read_text())
    assert manifest["after"] == "Relu_3" and manifest["wire"] == cut.params["split/wire"]
    x = np.random.default_rng(0).standard_normal((4, 1, 16, 16)).astype(np.float32)
    whole = onnx_predictor(tmp_path / "export" / "model.onnx")(x)
    parts = onnx_predictor(tmp_path / "export" / "server.onnx")(onnx_predictor(tmp_path / "export" / "edge.onnx")(x))
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-5)
    # the chosen plan runs all on the server: the device stores nothing, and the files say so
    files = export_trial(quick.study, quick.out_dir, tmp_path / "export-server")
    assert "edge.onnx" not in {path.name for path in files}
    assert json.loads((tmp_path / "export-server" / "split.json").read_text())["after"] == "server"
    metrics = json.loads((tmp_path / "export-server" / "metrics.json").read_text())
    assert metrics["model"]["zip_bytes"] == 0 and metrics["size_ratio"] is None


@pytest.mark.parametrize("kwargs, message", [
    ({}, "give the server and the link: --server NAME --link NAME"),
    ({"server": "local"}, "give --server and --link together"),
])
def test_a_split_space_needs_its_server_and_link(tmp_path, kwargs, message):
    space = tmp_path / "split.yaml"
    space.write_text(SPACE)
    with pytest.raises(ConfigError, match=message):
        autocomp.search(device="jetson-nano", task=TASK, space=str(space), trials=1, out=tmp_path / "run", **kwargs)


def test_a_link_without_a_split_space_is_refused(tmp_path):
    from test_search import SPACE as PLAIN

    space = tmp_path / "plain.yaml"
    space.write_text(PLAIN)
    with pytest.raises(ConfigError, match="the space searches none; add a split: section"):
        autocomp.search(device="jetson-nano", task=TASK, space=str(space), trials=1, out=tmp_path / "run", server="local", link="lte-5mbps")
