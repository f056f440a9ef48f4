"""Quantization-aware fine-tuning (the ``qat`` knob): it fake-quantizes by onnxruntime's own rules, and the
exported QDQ file carries the ranges it trained with, so onnxruntime computes what PyTorch trained."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

from autocomp.compress.distill import DistillConfig
from autocomp.errors import PlanError
from autocomp.knobs.cluster import share_weights
from autocomp.knobs.qat import RANGE, _FakeQuantWeight, fake_quantize
from autocomp.pipeline import build_artifact, compress_model
from autocomp.plan import CompressionPlan
from autocomp.profiles import Int8Recipe, load_profile
from autocomp.runtime import onnx_predictor
from tiny_models import ShapesTask

LAYERS = ["block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2"]


@pytest.fixture(scope="module")
def task():
    return ShapesTask(train_epochs=2)


def test_the_weight_scales_are_onnxruntimes():
    qmin, qmax = get_qmin_qmax_for_qType(TensorProto.INT8, reduce_range=True, symmetric=True)
    weight = torch.randn(6, 3, 3, 3)
    quantized = _FakeQuantWeight(int(qmin), int(qmax))(weight)
    for channel in range(6):
        w = weight[channel].numpy()
        zero, scale = compute_scale_zp(np.float32(w.min()), np.float32(w.max()), qmin, qmax, symmetric=True)
        expected = (np.clip(np.round(w / scale) + zero, qmin, qmax) - zero) * scale
        np.testing.assert_allclose(quantized[channel].numpy(), expected, rtol=1e-6, atol=1e-7)


def test_the_exported_file_runs_what_was_trained(task, tmp_path):
    recipe = load_profile("local").int8_recipe
    teacher = task.build_model()
    plan = CompressionPlan.of(bits={layer: 8 for layer in LAYERS}, qat={"int8": True})
    model = compress_model(task, teacher, plan, finetune=DistillConfig(steps=8), recipe=recipe)
    modules = dict(model.named_modules())
    ranges = {layer: tuple(getattr(modules[layer], RANGE).tolist()) for layer in LAYERS}
    # a plain model again: no hooks, no parametrizations; the trained ranges kept in its state dict
    assert all(not modules[layer]._forward_pre_hooks and type(modules[layer]) is torch.nn.Conv2d for layer in LAYERS)
    assert all(f"{layer}.{RANGE}" in model.state_dict() for layer in LAYERS)

    artifact = build_artifact(task, model, plan, tmp_path, recipe=recipe, calibration_samples=64)
    graph = onnx.load(str(artifact.onnx_path))
    onnx.checker.check_model(graph)
    # the activation scales in the file are the ones computed from the trained ranges
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.graph.initializer}
    qmin, qmax = get_qmin_qmax_for_qType(TensorProto.UINT8, reduce_range=False, symmetric=False)
    scales = sorted(
        float(initializers[node.input[1]]) for node in graph.graph.node
        if node.op_type == "QuantizeLinear" and initializers[node.input[1]].ndim == 0
    )
    expected = sorted(float(compute_scale_zp(np.float32(lo), np.float32(hi), qmin, qmax)[1]) for lo, hi in ranges.values())
    assert all(any(abs(s - e) <= 1e-6 * e for s in scales) for e in expected)

    # onnxruntime on the QDQ file computes what the fake-quantized PyTorch model computes
    fake = fake_quantize(model, LAYERS, ranges, recipe).eval()
    inputs = next(iter(task.train_batches()))[0]
    with torch.no_grad():
        theirs = fake(*inputs).numpy()
    ours = onnx_predictor(artifact.onnx_path)(inputs[0].numpy())
    np.testing.assert_allclose(ours, theirs, atol=0.05 * np.abs(theirs).max())
    assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.95


def test_qat_refuses_what_it_cannot_train_honestly(task):
    with pytest.raises(PlanError, match="quantizes weights per tensor"):
        fake_quantize(task.build_model(), ["block1_conv1"], {"block1_conv1": (0.0, 1.0)}, Int8Recipe(per_channel=False))
    with pytest.raises(PlanError, match="already masked or shared"):
        fake_quantize(share_weights(task.build_model(), {"block1_conv1": 4}), ["block1_conv1"], {"block1_conv1": (0.0, 1.0)}, Int8Recipe())
    # in a plan, a shared (or masked) int8 layer keeps PTQ and the plan's other int8 layers train with QAT: a space
    # that searches sharing, sparsity and QAT together does not lose trials to the combination
    plan = CompressionPlan.of(bits={"block1_conv1": 8, "block2_conv1": 8}, qat={"int8": True}, cluster={"block1_conv1": 4})
    model = dict(compress_model(task, task.build_model(), plan, finetune=DistillConfig(steps=0)).named_modules())
    assert not hasattr(model["block1_conv1"], RANGE) and hasattr(model["block2_conv1"], RANGE)
    with pytest.raises(PlanError, match="is not true or false"):
        CompressionPlan.of(qat={"int8": "yes"})


def test_the_report_says_what_qat_recovered():
    import pandas as pd

    from autocomp.knobs import summaries
    from autocomp.report.data import technique_notes

    def row(state, bits, qat, accuracy_pct):  # a trials-table row as ``trials_table`` makes it from the params
        return {"state": state, "accuracy_pct": accuracy_pct, **summaries({"bits/a": bits, "bits/b": bits, "qat/int8": qat})}

    trials = pd.DataFrame([
        row("COMPLETE", 8, False, 91.0),
        row("COMPLETE", 8, True, 97.5),
        row("COMPLETE", 32, True, 99.0),  # no int8: not compared
        row("FAIL", 8, False, float("nan")),
    ])
    (note,) = technique_notes(trials, pd.DataFrame(columns=["layer"]))
    assert "PTQ): best 91.00% over 1 trials" in note and "(QAT): best 97.50% over 1" in note
    assert "QAT recovered 6.50 points PTQ lost" in note
    assert technique_notes(trials[trials["qat"] == ""], pd.DataFrame(columns=["layer"])) == []
    unsearched = pd.DataFrame([{"state": "COMPLETE", "accuracy_pct": 91.0, **summaries({"bits/a": 8})}])
    assert technique_notes(unsearched, pd.DataFrame(columns=["layer"])) == []  # the space does not choose: no note


def test_a_qat_trial_fine_tunes_in_fp32_first_then_through_fake_quantization(task, monkeypatch):
    """The default pipeline has ``finetune`` before ``qat``: half the steps in fp32, then half with fake
    quantization; a PTQ trial of the same plan fine-tunes once with every step."""
    import autocomp.pipeline as pipeline

    calls = []
    real = pipeline.distill

    def spy(model, teacher, task_, *, config, on_step):
        fake = any(type(m).__name__.startswith("Parametrized") for m in model.modules())
        calls.append((config.steps, fake))
        return real(model, teacher, task_, config=config, on_step=on_step)

    monkeypatch.setattr(pipeline, "distill", spy)
    bits = {layer: 8 for layer in LAYERS}
    compress_model(task, task.build_model(), CompressionPlan.of(bits=bits, qat={"int8": True}, distill={"width": 0.5}),
                   finetune=DistillConfig(steps=6), recipe=load_profile("local").int8_recipe)
    assert calls == [(3, False), (3, True)]
    calls.clear()
    compress_model(task, task.build_model(), CompressionPlan.of(bits=bits, qat={"int8": False}, distill={"width": 0.5}),
                   finetune=DistillConfig(steps=6))
    assert calls == [(6, False)]


def test_a_snapshot_mid_fine_tune_exports_as_the_knobs_will_leave_it(task, tmp_path):
    """The multi-fidelity screen exports the student while it trains: masks, shared values and fake
    quantization are folded in a copy, the training-only hooks dropped, and the training model is untouched."""
    from autocomp import knobs
    from autocomp.knobs.cluster import share_weights

    recipe = load_profile("local").int8_recipe
    model = share_weights(task.build_model(), {"block2_conv2": 4})
    model = fake_quantize(model, ["block1_conv1"], {"block1_conv1": (0.0, 2.0)}, recipe)
    snapshot = knobs.as_deployed(model)
    plain = dict(snapshot.named_modules())
    assert type(plain["block1_conv1"]) is torch.nn.Conv2d and not plain["block1_conv1"]._forward_pre_hooks
    assert type(plain["block2_conv2"]) is torch.nn.Conv2d and plain["block2_conv2"].weight.unique().numel() <= 16
    assert type(dict(model.named_modules())["block1_conv1"]).__name__.startswith("Parametrized")  # still training
    plan = CompressionPlan.of(bits={"block1_conv1": 8})
    artifact = build_artifact(task, snapshot, plan, tmp_path, recipe=recipe, calibration_samples=16)
    reference = build_artifact(task, task.build_model(), plan, tmp_path / "plain", recipe=recipe, calibration_samples=16)

    def layout(path):
        return sorted(node.op_type for node in onnx.load(str(path)).graph.node)

    assert layout(artifact.onnx_path) == layout(reference.onnx_path)  # only the bits knob's Q/DQ nodes, none traced in
