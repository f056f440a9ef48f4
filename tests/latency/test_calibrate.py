"""Calibration round trip: measure a small varied set, fit, write the profile, and it is in force."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from autocomp.cli import app
from autocomp.calibration import _CONV_PROBES, _PROBES, _SUM_PROBES, build_probes
from autocomp.latency.calibrate import Sample, Variant, fit_coefficients, fit_quality
from autocomp.latency.estimate import coefficients_for, estimate_ms
from autocomp.cost_model import feature_names
from autocomp.profiles import calibration_dir, load_profile


def test_fit_recovers_known_coefficients():
    names = feature_names()
    truth = {n: 0.0 for n in names}
    truth.update(call=0.05, nodes_mac=0.01, gmacs_conv_fp32=40.0, mbytes_fp32=0.2)
    samples = []
    for i in range(30):
        f = dict.fromkeys(names, 0.0)
        f.update(call=1.0, nodes_mac=5 + i % 7, gmacs_conv_fp32=0.002 * (1 + i), mbytes_fp32=0.3 * (1 + i % 5))
        ms = sum(truth[n] * f[n] for n in names)
        samples.append(Sample(Variant(path=None, family="x", base=str(i), precision="fp32", batch_size=1), ms, f))
    prior = coefficients_for(load_profile("local", calibrated=False))
    fitted, unfitted = fit_coefficients(samples, prior=prior, ridge=0.0)
    assert "gmacs_dwconv_int8" in unfitted and fitted["gmacs_dwconv_int8"] == prior["gmacs_dwconv_int8"]
    assert fit_quality(samples, fitted)["within_10pct"] == 1.0


def test_calibrate_round_trip(tmp_path):
    runner = CliRunner()
    (calibration_dir() / "local.yaml").unlink()  # the tests' frozen calibration (conftest.py): start from the shipped file
    before = load_profile("local")
    assert before.path.parent != calibration_dir()  # the shipped file, until a calibration exists
    from autocomp.calibration import calibrate_device

    import torch

    from autocomp.calibration import _export

    mine = tmp_path / "mine"  # the user's own model family (--models DIR)
    mine.mkdir()
    torch.manual_seed(0)
    _export(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 4)).eval(),
            (1, 3, 16, 16), mine / "mynet.onnx")
    # a benchmark's test file, timed in the same passes but kept out of the fit
    test_file = _export(torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU()).eval(), (1, 1, 16, 16), tmp_path / "test.onnx")
    report = calibrate_device(
        "local", variants=6, held_out=0.34, precisions=("fp32", "int8", "ort-int8"), prune=False, work_dir=tmp_path / "v",
        passes=1, settle_pct=None, rounds=3, models=mine, also_time=[Variant(test_file, "test", "test", "fp32", 1)],
    )
    timed_too = [row for row in report.rows if row.get("also_timed")]
    assert [row["file"] for row in timed_too] == ["test.onnx"] and timed_too[0]["measured_ms"] > 0
    assert not timed_too[0]["held_out"]
    assert report.path == calibration_dir() / "local.yaml" and report.path.is_file()
    probes = [row for row in report.rows if row["family"] == "probe"]
    # element-wise probes, conv probes in the calibration's precisions (fp32, int8), and sums after an activation
    assert len(probes) == (len(_PROBES) + 2 * len(_CONV_PROBES) + len(_SUM_PROBES)) * len(before.runtime.calibration_batch_sizes)
    assert {row["precision"] for row in probes if row["file"].startswith("probe-conv")} == {"fp32", "int8"}
    # 6 base models in fp32 and int8, the 3 random ones also quantized by onnxruntime's quantizer, and the user's file in 3
    user = [row for row in report.rows if row["family"] == "user"]
    assert sorted(row["precision"] for row in user) == ["fp32", "int8", "ort-int8"]
    assert sum(row["precision"] == "ort-int8" and row["family"] == "zoo" for row in report.rows) == 3
    assert report.samples + report.held_out == 12 + 3 + 3 + len(probes) and report.held_out >= 2  # the test file is in neither
    assert not any(row["held_out"] for row in probes)  # the held-out figure is about networks only
    assert len(list((tmp_path / "v").glob("*.onnx"))) == 12 + 3 + len(_PROBES) + 2 * len(_CONV_PROBES) + len(_SUM_PROBES)
    # how sure it is: the held-out error per precision class, and what the training files covered
    assert report.error_by_class["all"]["files"] == sum(row["held_out"] for row in report.rows)

    after = load_profile("local")  # the calibration is now in force
    assert after.is_calibrated and after.path == report.path
    assert after.cost_model["kind"] == "linear" and after.calibration["backend"] == "local"
    assert set(after.calibration["fit"]) >= {"median_abs_error_pct", "within_10pct", "n"}
    assert {"Conv", "QuantizeLinear"} <= set(after.calibration["coverage"]["op_types"])
    assert after.calibration["coverage"]["features_max"]["gmacs_conv_fp32"] > 0
    assert after.calibration["error_by_class"] == report.error_by_class
    assert after.fingerprint() != before.fingerprint()
    onnx_file = next((tmp_path / "v").glob("*-fp32.onnx"))
    assert estimate_ms(onnx_file, after).calibrated and estimate_ms(onnx_file, after).median_ms > 0

    shown = runner.invoke(app, ["profiles", "show", "local"])
    assert shown.exit_code == 0, shown.output
    assert "your calibration" in shown.output and "held-out" in shown.output
    data = json.loads(runner.invoke(app, ["profiles", "show", "local", "--json"]).output)
    assert data["calibrated"] and data["user_calibration"] and data["in_force"] == str(report.path)
    listed = json.loads(runner.invoke(app, ["profiles", "list", "--json"]).output)
    assert {row["name"]: row["calibrated"] for row in listed}["local"] is True
    assert load_profile("local", calibrated=False).path == before.path


def test_calibrate_refuses_the_estimate_backend():
    from autocomp.errors import LatencyError
    from autocomp.calibration import calibrate_device

    with pytest.raises(LatencyError, match="real backend"):
        calibrate_device("local", backend="estimate", variants=8)


def test_rounds_are_refused_where_files_are_timed_one_by_one():
    from autocomp.errors import ConfigError
    from autocomp.calibration import calibrate_device

    with pytest.raises(ConfigError, match="--rounds is for the local backend"):
        calibrate_device("raspberry-pi-4", backend="ssh", variants=8, rounds=5)


def test_noisy_variants_are_timed_again_until_two_times_agree(tmp_path):
    """A shared host's slow spell can cover every pass of one file: that file is timed again, the others are not."""
    import onnx
    from onnx import TensorProto, helper

    from autocomp.latency.base import LatencyResult
    from autocomp.latency.calibrate import measure_variants

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    scripted = {  # the times a host would give each file, pass after pass
        "steady": [1.0, 1.02],
        "slow-then-steady": [1.5, 1.3, 1.0, 1.04],
        "always-noisy": [2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
    }
    variants = []
    for name in scripted:
        onnx.save(model, tmp_path / f"{name}.onnx")
        variants.append(Variant(tmp_path / f"{name}.onnx", "x", name, "fp32", 1))

    class ScriptedBackend:
        name = "scripted"

        def __init__(self):
            self.calls = []

        def measure(self, onnx_path, profile):
            self.calls.append(onnx_path.stem)
            ms = scripted[onnx_path.stem][self.calls.count(onnx_path.stem) - 1]
            return LatencyResult(median_ms=ms, p90_ms=ms, runs=1, source="scripted")

    backend, progress = ScriptedBackend(), []
    samples = measure_variants(
        variants, profile=load_profile("local"), backend=backend, passes=2, settle_pct=5.0, max_passes=5,
        progress=lambda done, total: progress.append((done, total)),
    )
    by_name = {s.variant.base: s for s in samples}
    assert by_name["steady"].passes_ms == (1.0, 1.02) and by_name["steady"].measured_ms == 1.0
    assert by_name["slow-then-steady"].passes_ms == (1.5, 1.3, 1.0, 1.04) and by_name["slow-then-steady"].measured_ms == 1.0
    assert by_name["always-noisy"].passes_ms == (2.0, 3.0, 4.0, 5.0, 6.0)  # capped at max_passes
    assert len(backend.calls) == 2 + 4 + 5
    assert progress[-1][0] == progress[-1][1] == len(backend.calls)  # the total grew with each settling pass
    assert by_name["steady"].features["nodes"] == 1.0  # features still come from the file

    backend = ScriptedBackend()  # without settle_pct: exactly the fixed passes
    samples = measure_variants(variants, profile=load_profile("local"), backend=backend, passes=2)
    assert [s.passes_ms for s in samples] == [(1.0, 1.02), (1.5, 1.3), (2.0, 3.0)]


def test_probes_are_kernels_onnxruntime_runs_as_written(tmp_path):
    """A probe measures stand-alone element-wise kernels only if onnxruntime neither fuses nor drops them."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from autocomp.latency.estimate import analyze_for, precision_map
    from autocomp.latency.kernels import runtime_kernels, simulated_kernels
    from autocomp.profiles import with_overrides

    profile = load_profile("local", calibrated=False)
    variants = build_probes(tmp_path, profile=profile)
    batches = profile.runtime.calibration_batch_sizes
    assert [(v.base, v.batch_size) for v in variants] == [
        (f"probe-{op.lower()}-{c}x{h}x{w}-{n}", b) for op, c, h, w, n in _PROBES for b in batches
    ]
    for variant, (op, channels, height, width, length) in zip(variants, [p for p in _PROBES for _ in batches]):
        onnx.checker.check_model(onnx.load(variant.path), full_check=True)
        x = np.random.default_rng(0).standard_normal((variant.batch_size, channels, height, width)).astype(np.float32)
        (y,) = ort.InferenceSession(str(variant.path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        expected = x.copy()
        for _ in range(length):
            expected = np.maximum(expected, 0) if op == "Relu" else expected + x
        np.testing.assert_allclose(y, expected, rtol=1e-5)
        graph = analyze_for(variant.path, with_overrides(profile, batch_size=variant.batch_size))
        assert simulated_kernels(graph) == runtime_kernels(variant.path) == {op: length}
        features = graph.features(precision_map(profile))
        assert features["nodes"] == length and features["nodes_mac"] == 0
        # element-wise work counts the values read and written, per 2: an Add reads two tensors (3 per output)
        per_output = 1.5 if op == "Add" else 1.0
        assert features["melems_fp32"] == pytest.approx(per_output * length * variant.batch_size * channels * height * width / 1e6)
