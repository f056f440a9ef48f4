"""An estimate says how sure it is: the held-out error of files like it, and when a file is outside what was calibrated."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from autocomp.cli import app
from autocomp.latency.confidence import assess, coverage, error_by_class, precision_class
from autocomp.latency.estimate import analyze_for, estimate_ms, precision_map
from autocomp.profiles import load_profile, with_overrides


def _export(model: nn.Module, shape: tuple[int, ...], path) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(*shape),), str(path), input_names=["x"], output_names=["y"], dynamo=False)
    return path


def _convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("confidence")
    small = _export(_convnet(), (1, 3, 16, 16), folder / "small.onnx")
    large = _export(_convnet(), (1, 3, 64, 64), folder / "large.onnx")  # 16x the conv work of the calibrated one
    torch.manual_seed(1)
    normed = _export(nn.Sequential(nn.Linear(32, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 8)), (1, 32), folder / "normed.onnx")
    return {"small": small, "large": large, "normed": normed}


def _calibration(profile, files, *, errors_pct):
    """A calibration record as ``calibrate_device`` writes it, from the small net alone."""
    graph = analyze_for(files["small"], profile)
    features = graph.features(precision_map(profile))
    return {
        **dict(profile.calibration or {}),
        "coverage": coverage([graph], [features]),
        "error_by_class": error_by_class(["fp32"] * len(errors_pct) + ["int8"], [*errors_pct, 40.0]),
    }


def test_a_file_like_the_calibrated_ones_is_inside_and_carries_its_class_error(files):
    profile = load_profile("local")
    calibrated = dataclasses.replace(profile, calibration=_calibration(profile, files, errors_pct=[2.0, -4.0, 6.0, 3.0]))
    result = estimate_ms(files["small"], calibrated)
    assert result.outside == () and result.range_known
    assert result.error_class == "fp32"
    assert result.error_pct == pytest.approx(error_by_class(["fp32"] * 4, [2.0, -4.0, 6.0, 3.0])["fp32"]["p90_abs_error_pct"])
    assert result.error_pct < 10  # not the int8 file's 40%, nor the set's average
    assert "for 9 in 10 held-out fp32 files" in result.confidence.text()


def test_larger_shapes_and_unknown_op_types_are_outside_the_calibrated_range(files):
    profile = load_profile("local")
    calibrated = dataclasses.replace(profile, calibration=_calibration(profile, files, errors_pct=[2.0, 3.0, 4.0]))
    large = estimate_ms(files["large"], calibrated)
    assert any("gmacs_conv_fp32" in why and "largest calibrated" in why for why in large.outside), large.outside
    normed = estimate_ms(files["normed"], calibrated)
    assert any("LayerNormalization" in why and "never calibrated" in why for why in normed.outside), normed.outside
    assert normed.confidence.text().startswith("outside the calibrated range (")


def test_a_class_with_too_few_held_out_files_states_the_sets_error(files):
    profile = load_profile("local")
    calibration = _calibration(profile, files, errors_pct=[2.0, 3.0])  # 2 fp32 files held out: too few
    sure = assess(analyze_for(files["small"], profile), {}, calibration)
    assert sure.error_class.startswith("fp32 (too few") and sure.error_pct == calibration["error_by_class"]["all"]["p90_abs_error_pct"]


def test_an_old_calibration_says_its_range_was_not_checked(files):
    profile = load_profile("local")
    old = {k: v for k, v in (profile.calibration or {"date": "x", "backend": "local"}).items() if k != "coverage"}
    result = estimate_ms(files["large"], dataclasses.replace(profile, calibration=old))
    assert result.outside == () and not result.range_known
    assert "calibrated range not recorded" in result.confidence.text()
    uncalibrated = estimate_ms(files["small"], load_profile("raspberry-pi-4"))
    assert uncalibrated.error_pct is None and "no calibration" in uncalibrated.confidence.text()


def test_precision_class_reads_the_multiply_add_ops(files):
    graph = analyze_for(files["small"], with_overrides(load_profile("local"), batch_size=1))
    assert precision_class(graph.ops) == "fp32"
    convs = [i for i, op in enumerate(graph.ops) if op.kind == "conv"]
    one_int8 = [dataclasses.replace(op, precision="int8") if i == convs[0] else op for i, op in enumerate(graph.ops)]
    assert precision_class(one_int8) == "int8"  # int8 layers among fp32 ones: an int8 file
    both = [dataclasses.replace(op, precision="fp16") if i == convs[1] else op for i, op in enumerate(one_int8)]
    assert precision_class(both) == "mixed"
    assert precision_class([dataclasses.replace(op, precision="fp16") for op in graph.ops]) == "fp16"


def test_measure_prints_how_sure_the_estimate_is(files):
    result = CliRunner().invoke(app, ["measure", str(files["normed"]), "--device", "local"])
    assert result.exit_code == 0, result.output
    assert "sure:" in result.output or "outside:" in result.output
    assert "held-out" in result.output
