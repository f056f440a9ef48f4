"""Per-layer int8 / fp16 of the exported ONNX graph with onnxruntime's tools, checked node by node."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest

from autocomp.compress.quantize import quantize_onnx
from autocomp.errors import PlanError
from autocomp.export import export_onnx, layer_nodes
from autocomp.profiles import Int8Recipe
from autocomp.runtime import calibration_inputs, evaluate_onnx, onnx_predictor, onnx_stats


@pytest.fixture(scope="module")
def cnn(shapes_task, tmp_path_factory):
    path = tmp_path_factory.mktemp("quant") / "cnn.onnx"
    export_onnx(shapes_task.build_model(), shapes_task.example_inputs(), path)
    return path, calibration_inputs(shapes_task, max_samples=128)


@pytest.fixture(scope="module")
def text(text_task, tmp_path_factory):
    path = tmp_path_factory.mktemp("quant") / "text.onnx"
    export_onnx(text_task.build_model(), text_task.example_inputs(), path)
    return path, calibration_inputs(text_task, max_samples=128)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _weight_precision(path, layers):
    """Per layer: how its node's weight is stored ('int8' behind a DequantizeLinear, 'fp16', 'fp32')
    and how many DequantizeLinear nodes feed that node."""
    model = onnx.load(str(path))
    inits = {init.name: init for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    nodes = {node.name: node for node in model.graph.node}
    result = {}
    for layer, names in layers.items():
        for name in names:
            node = nodes[name]
            weight = node.input[1]
            dq_inputs = sum(producers.get(x) is not None and producers[x].op_type == "DequantizeLinear" for x in node.input)
            source = producers.get(weight)
            if source is not None and source.op_type == "DequantizeLinear":
                kind = onnx.TensorProto.DataType.Name(inits[source.input[0]].data_type).lower()
            else:
                kind = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16"}[inits[weight].data_type]
            result[layer] = (kind, dq_inputs)
    return result


def test_int8_and_fp16_land_exactly_on_the_planned_layers(shapes_task, cnn, tmp_path):
    src, calibration = cnn
    before = _digest(src)
    layers = layer_nodes(src)
    bits = {"block1_conv1": 8, "block2_short": 8, "fc": 8, "block2_conv1": 16, "stem.0": 32}
    dst = quantize_onnx(src, tmp_path / "mixed.onnx", bits, calibration=calibration)
    assert _digest(src) == before  # input untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed.onnx"]  # one file, nothing left beside it
    onnx.checker.check_model(str(dst))
    precision = _weight_precision(dst, layers)
    for layer in layers:
        kind, dq_inputs = precision[layer]
        width = bits.get(layer, 32)
        if width == 8:
            assert kind == "int8" and dq_inputs >= 2, layer  # weight and activation dequantized
        else:
            assert dq_inputs == 0, layer  # no QDQ on layers the plan keeps wide
            assert kind == ("fp16" if width == 16 else "fp32"), layer
    # fp32 layers keep fp32 activations: only the one fp16 layer is wrapped in Casts (in and out)
    assert [node.op_type for node in onnx.load(str(dst)).graph.node].count("Cast") == 2
    assert evaluate_onnx(shapes_task, dst) >= evaluate_onnx(shapes_task, src) - 0.05


def test_fp16_body_is_one_region_with_casts_only_at_its_borders(shapes_task, cnn, tmp_path):
    """fp16 everywhere but the first and last layer (the default space): the residual adds and
    activations between fp16 convs run in fp16 too, so the graph casts once in and once out.
    A Cast around every conv costs a TensorRT board two reformat layers per conv."""
    src, calibration = cnn
    inner = [layer for layer in layer_nodes(src) if layer not in ("stem.0", "fc")]
    dst = quantize_onnx(src, tmp_path / "body16.onnx", dict.fromkeys(inner, 16), calibration=calibration)
    graph = onnx.load(str(dst)).graph
    assert [node.op_type for node in graph.node].count("Cast") == 2
    typed = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    adds = [node for node in graph.node if node.op_type == "Add"]
    assert len(adds) == 2 and all(typed.get(node.output[0]) == onnx.TensorProto.FLOAT16 for node in adds)
    assert evaluate_onnx(shapes_task, dst) >= evaluate_onnx(shapes_task, src) - 0.02


def test_all_int8_cnn_is_smaller_keeps_accuracy_and_counts_the_same_params(shapes_task, cnn, tmp_path):
    src, calibration = cnn
    everything = {layer: 8 for layer in layer_nodes(src)}
    int8 = quantize_onnx(src, tmp_path / "int8.onnx", everything, calibration=calibration)
    fp16 = quantize_onnx(src, tmp_path / "fp16.onnx", dict.fromkeys(everything, 16), calibration=calibration)
    fp32, q8, h16 = onnx_stats(src), onnx_stats(int8), onnx_stats(fp16)
    assert q8.size_bytes < h16.size_bytes < fp32.size_bytes
    assert q8.params == h16.params == fp32.params > 0
    assert all(kind == "int8" for kind, _ in _weight_precision(int8, layer_nodes(src)).values())
    baseline = evaluate_onnx(shapes_task, src)
    assert baseline > 0.9
    assert evaluate_onnx(shapes_task, int8) >= baseline - 0.05
    assert evaluate_onnx(shapes_task, fp16) >= baseline - 0.02
    # the signed-activation recipe also yields a working file
    s8 = quantize_onnx(
        src, tmp_path / "s8.onnx", everything, calibration=calibration,
        recipe=Int8Recipe(activation_type="s8", reduce_range=False),
    )
    model = onnx.load(str(s8))
    quantize_types = {
        onnx.TensorProto.DataType.Name(init.data_type)
        for node in model.graph.node if node.op_type == "QuantizeLinear"
        for init in model.graph.initializer if init.name == node.input[2]
    }
    assert quantize_types == {"INT8"}
    assert evaluate_onnx(shapes_task, s8) >= baseline - 0.05


def test_int8_transformer_quantizes_only_weight_matmuls_and_runs_with_both_inputs(text_task, text, tmp_path):
    src, calibration = text
    layers = layer_nodes(src)
    bits = {layer: 8 for layer in layers}
    bits["head"] = 16
    dst = quantize_onnx(src, tmp_path / "text.onnx", bits, calibration=calibration,
                        recipe=Int8Recipe(op_types=("MatMul", "Gemm")))
    precision = _weight_precision(dst, layers)
    assert {layer: kind for layer, (kind, _) in precision.items()} == {
        **{layer: "int8" for layer in layers if layer != "head"}, "head": "fp16"
    }
    model = onnx.load(str(dst))
    producers = {out: node for node in model.graph.node for out in node.output}
    weightless = [n for n in model.graph.node if n.op_type == "MatMul" and n.name not in sum(layers.values(), [])]
    assert len(weightless) == 2
    assert all(producers.get(x) is None or producers[x].op_type != "DequantizeLinear" for n in weightless for x in n.input)
    predict = onnx_predictor(dst)
    out = predict(text_task.ids[450:460].numpy(), text_task.mask[450:460].numpy())
    assert out.shape == (10, 2) and np.isfinite(out).all()
    assert evaluate_onnx(text_task, dst) >= evaluate_onnx(text_task, src) - 0.05


def test_all_fp32_is_a_plain_copy(cnn, tmp_path):
    src, calibration = cnn
    dst = quantize_onnx(src, tmp_path / "same.onnx", {"fc": 32}, calibration=calibration)
    assert dst.read_bytes() == src.read_bytes()


def test_bad_plans_are_plan_errors(cnn, tmp_path):
    src, calibration = cnn
    with pytest.raises(PlanError, match=r"bits/layer9\.conv: .*no ONNX node computing layer 'layer9\.conv'.*block1_conv1"):
        quantize_onnx(src, tmp_path / "x.onnx", {"layer9.conv": 8}, calibration=calibration)
    with pytest.raises(PlanError, match="bit-width 4"):
        quantize_onnx(src, tmp_path / "x.onnx", {"fc": 4}, calibration=calibration)
    with pytest.raises(PlanError, match="Gemm, which the int8 recipe does not quantize"):
        quantize_onnx(src, tmp_path / "x.onnx", {"fc": 8}, calibration=calibration, recipe=Int8Recipe(op_types=("Conv",)))
    with pytest.raises(PlanError, match="calibration"):
        quantize_onnx(src, tmp_path / "x.onnx", {"fc": 8}, calibration=[])
    assert not (tmp_path / "x.onnx").exists()


def test_quantization_leaves_no_temp_files_in_the_working_directory(cnn, tmp_path, monkeypatch):
    src, calibration = cnn
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    quantize_onnx(src, tmp_path / "q.onnx", {"stem.0": 8}, calibration=calibration)
    assert list(work.iterdir()) == []


def test_dynamic_int8_turns_the_planned_matmuls_into_integer_kernels(text_task, text, tmp_path):
    """dyn8: int8 weights, activations quantized per input (no calibration); mixes with int8 and fp16."""
    src, calibration = text
    layers = layer_nodes(src)
    matmuls = sorted(layer for layer in layers if layer != "head")
    bits = {layer: "dyn8" for layer in matmuls}
    bits[matmuls[0]] = 8  # static int8, dynamic int8 and fp16 in one plan
    bits["head"] = 16
    dst = quantize_onnx(src, tmp_path / "dyn.onnx", bits, calibration=calibration)
    onnx.checker.check_model(str(dst))
    model = onnx.load(str(dst))
    integer = {p.value for n in model.graph.node if n.op_type == "MatMulInteger" for p in n.metadata_props if p.key == "autocomp.module"}
    assert integer == set(matmuls[1:])  # each planned MatMul, stamped with its layer for the per-layer rows
    assert any(n.op_type == "DynamicQuantizeLinear" for n in model.graph.node)
    assert onnx_stats(dst).params == onnx_stats(src).params  # an int8 weight is still one parameter each
    after = layer_nodes(dst)  # onnxruntime's dynamic mode rewrote the head's Gemm as MatMul + Add
    assert _weight_precision(dst, {layer: after[layer] for layer in (matmuls[0], "head")}) == {
        matmuls[0]: ("int8", 2), "head": ("fp16", 0)
    }
    assert evaluate_onnx(text_task, dst) >= evaluate_onnx(text_task, src) - 0.05


def test_dynamic_int8_is_refused_for_an_op_it_does_not_cover(text, tmp_path):
    src, calibration = text
    with pytest.raises(PlanError, match=r"bits/head=dyn8: its ONNX node .* is a Gemm, which onnxruntime's dynamic int8 does not cover"):
        quantize_onnx(src, tmp_path / "x.onnx", {"head": "dyn8"}, calibration=calibration)
    assert not (tmp_path / "x.onnx").exists()
