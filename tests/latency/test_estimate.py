"""The estimate backend: prices fp32/fp16/int8/two-input files, fuses as runtimes do, knows each device."""

from __future__ import annotations

from dataclasses import replace

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from autocomp.errors import LatencyError
from autocomp.latency import get_backend
from autocomp.latency.estimate import EstimateResult, estimate_layers, estimate_ms
from autocomp.latency.graph import analyze
from autocomp.profiles import load_profile

from onnx_variants import encoder, resnet_precisions


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    return resnet_precisions(tmp_path_factory.mktemp("estimate"))


@pytest.fixture(scope="module")
def two_input(tmp_path_factory):
    return encoder(tmp_path_factory.mktemp("encoder"))


def _ms(path, device, **runtime):
    profile = load_profile(device)
    if runtime:
        profile = replace(profile, runtime=replace(profile.runtime, **runtime))
    return get_backend("estimate", profile=profile).measure(path, profile).median_ms


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_estimate_prices_every_precision(resnet, precision):
    result = get_backend("estimate", profile=load_profile("local")).measure(resnet[precision], load_profile("local"))
    assert isinstance(result, EstimateResult)
    assert result.median_ms > 0 and result.p90_ms == result.median_ms
    assert result.source == "estimate:local" and result.unpriced_ops == {}
    graph = analyze(resnet[precision])
    assert {op.precision for op in graph.ops if op.kind == "conv"} == {precision}


def test_qdq_pairs_are_priced_as_the_int8_op(resnet):
    fp32, int8 = analyze(resnet["fp32"]), analyze(resnet["int8"])
    convs = lambda g: [op for op in g.ops if op.kind == "conv"]  # noqa: E731
    assert len(convs(int8)) == len(convs(fp32))
    assert sum(op.macs for op in convs(int8)) == sum(op.macs for op in convs(fp32))
    # As onnxruntime's profiler shows for this file: DQ -> Add -> Relu -> Q runs as QLinearAdd (Relu folded
    # into the Q), the last residual sum (feeding the float pooling) stays a float Add.
    adds = sorted(op.precision for op in int8.ops if op.op_type == "Add")
    assert adds == ["fp32", "int8"]
    raw = onnx.load(str(resnet["int8"]))
    raw_qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in raw.graph.node)
    kept_qdq = sum(op.op_type in ("QuantizeLinear", "DequantizeLinear") for op in int8.ops)
    assert 0 < kept_qdq <= raw_qdq // 2  # weight DQs and the requantization of each int8 conv are absorbed
    # QLinearConv runs channels-last: layout Transposes at the int8 region's borders, none in fp32
    assert sum(op.op_type == "Transpose" for op in int8.ops) >= 2
    assert not any(op.op_type == "Transpose" for op in fp32.ops)


def test_conv_bn_relu_and_residual_add_are_fused(resnet):
    graph = analyze(resnet["fp32"])
    assert not any(op.op_type in ("Relu", "BatchNormalization") for op in graph.ops)
    assert sum("Add" in op.fused for op in graph.ops) == 2  # the two residual sums


def test_row_calls_of_spatial_convs_are_counted(resnet):
    """MLAS's NCHWc conv kernel computes one output row per call: 3x3 convs count batch x height rows,
    the 1x1 shortcut none (it takes the pointwise path)."""
    at_batch_4 = analyze(resnet["fp32"], batch_size=4)
    convs = {op.layer: op for op in at_batch_4.ops if op.kind == "conv"}
    assert convs["stem.0"].rows == 4 * 16 and convs["block2_conv2"].rows == 4 * 8
    assert convs["block2_short"].rows == 0
    assert at_batch_4.features()["krows_fp32"] == sum(op.rows for op in convs.values()) / 1e3


def test_two_input_model_and_symbolic_dims(two_input):
    result = estimate_ms(two_input, load_profile("local"))
    assert result.median_ms > 0 and result.unpriced_ops == {}
    longer = estimate_ms(two_input, load_profile("local"), shapes={"ids": (1, 64), "mask": (1, 64)})
    assert longer.median_ms > result.median_ms
    assert _ms(two_input, "local", batch_size=8) > result.median_ms
    with pytest.raises(LatencyError, match="its inputs: ids, mask"):
        estimate_ms(two_input, load_profile("local"), shapes={"tokens": (1, 4)})


def test_unknown_op_is_a_counted_fallback_never_zero(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])
    node = helper.make_node("Relu", ["x"], ["h"])
    odd = helper.make_node("Hardmax", ["h"], ["y"])
    model = helper.make_model(helper.make_graph([node, odd], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    result = estimate_ms(path, load_profile("local"))
    assert result.unpriced_ops == {"Hardmax": 1} and result.fallback_ms > 0
    with pytest.raises(LatencyError, match="Hardmax"):
        get_backend("estimate", profile=load_profile("local"), strict=True).measure(path, load_profile("local"))


def test_hardware_awareness_orderings(resnet):
    nano = {p: _ms(resnet[p], "jetson-nano") for p in resnet}
    pi4 = {p: _ms(resnet[p], "raspberry-pi-4") for p in resnet}
    orin = {p: _ms(resnet[p], "jetson-orin-nano") for p in resnet}
    assert nano["int8"] >= nano["fp16"] < nano["fp32"], nano  # Maxwell: fp16 pays, int8 does not
    assert pi4["fp16"] >= pi4["fp32"] > pi4["int8"], pi4  # A72: int8 pays, fp16 does not
    assert orin["int8"] < orin["fp16"] < orin["fp32"], orin  # Ampere tensor cores: int8 fastest


def test_orderings_follow_the_profile_not_a_constant(resnet):
    """The ordering test can fail: tell the Nano that int8 is accelerated and int8 wins there."""
    nano = load_profile("jetson-nano")
    spec = replace(nano.precisions["int8"], accelerated=True, peak_gops=944.0, runs_as=None)
    fast = replace(nano, precisions={**nano.precisions, "int8": spec})
    backend = get_backend("estimate", profile=fast)
    assert backend.measure(resnet["int8"], fast).median_ms < backend.measure(resnet["fp16"], fast).median_ms


@pytest.fixture(scope="module")
def body(shapes_task, tmp_path_factory):
    """The search's layout: first and last layer fp32, the body fp32, fp16 or int8 (our export and quantizer)."""
    from autocomp.compress.quantize import quantize_onnx
    from autocomp.export import export_onnx, layer_nodes
    from autocomp.runtime import calibration_inputs
    from tiny_models import TinyResNet

    folder = tmp_path_factory.mktemp("body")
    torch.manual_seed(0)
    fp32 = export_onnx(TinyResNet(width=4.0).eval(), shapes_task.example_inputs(), folder / "fp32.onnx")
    inner = [layer for layer in layer_nodes(fp32) if layer not in ("stem.0", "fc")]
    calibration = calibration_inputs(shapes_task, max_samples=32)
    files = {"fp32": fp32}
    for bits, precision in ((16, "fp16"), (8, "int8")):
        files[precision] = quantize_onnx(fp32, folder / f"{precision}.onnx", dict.fromkeys(inner, bits), calibration=calibration)
    return files


def test_devices_rank_a_quantized_body_differently(body):
    """The plans a search compares: the Nano gains from fp16 and not from int8, the Pi 4 the reverse."""
    nano = {p: _ms(body[p], "jetson-nano") for p in body}
    pi4 = {p: _ms(body[p], "raspberry-pi-4") for p in body}
    assert nano["fp16"] < nano["int8"] < nano["fp32"], nano
    assert pi4["int8"] < pi4["fp32"] <= pi4["fp16"], pi4


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_estimate_layers_are_keyed_by_module_path(body, precision):
    from autocomp.export import layer_nodes

    layers = estimate_layers(body[precision], load_profile("jetson-nano"))
    assert set(layer_nodes(body["fp32"])) <= set(layers), sorted(layers)


def test_estimate_layers_cover_the_convolutions(resnet):
    layers = estimate_layers(resnet["fp32"], load_profile("raspberry-pi-4"))
    assert len(layers) >= 7 and all(v >= 0 for v in layers.values())
    total = estimate_ms(resnet["fp32"], load_profile("raspberry-pi-4")).median_ms
    assert 0.5 * total < sum(layers.values()) <= total


def test_graph_analysis_is_memoized_by_file_content(tmp_path):
    """Repeat estimates of one file reuse its analysis (the cost per call is a benchmark figure:
    benchmarks/latency_predictor.py reports it; tests never assert wall-clock times)."""
    import shutil

    import torch

    from autocomp.latency import graph
    from autocomp.tasks.models import ResNetDigits
    from onnx_variants import export

    path = export(ResNetDigits(), (torch.rand(1, 1, 32, 32),), tmp_path / "resnet_digits.onnx", names=["x"])
    profile = load_profile("local")
    graph._CACHE.clear()
    first = estimate_ms(path, profile)
    assert len(graph._CACHE) == 1
    copy = shutil.copyfile(path, tmp_path / "same_bytes.onnx")
    assert estimate_ms(copy, profile) == first  # same bytes, same analysis
    assert len(graph._CACHE) == 1
