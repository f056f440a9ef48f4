"""PyTorch -> ONNX export: real torch.onnx, onnx.checker and onnxruntime, compared with PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from autocomp.errors import ExportError
from autocomp.export import export_onnx, layer_nodes
from autocomp.onnx_meta import MODULE_KEY
from autocomp.plan import compressible_layers
from autocomp.runtime import onnx_session
from tiny_models import TinyEncoder, TinyResNet


@pytest.fixture(scope="module")
def cnn_file(shapes_task, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "cnn.onnx"
    return export_onnx(shapes_task.build_model(), shapes_task.example_inputs(), path)


@pytest.fixture(scope="module")
def text_file(text_task, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "text.onnx"
    return export_onnx(text_task.build_model(), text_task.example_inputs(), path)


def _torch(model, *inputs):
    with torch.no_grad():
        return model.eval()(*(torch.from_numpy(x) for x in inputs)).numpy()


def _assert_single_checked_file(path):
    assert path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no .onnx.data sidecar, nothing else
    model = onnx.load(str(path), load_external_data=False)
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    onnx.checker.check_model(str(path), full_check=True)


def test_residual_cnn_exports_one_checked_file_matching_pytorch_at_any_batch(shapes_task, cnn_file):
    _assert_single_checked_file(cnn_file)
    session = onnx_session(cnn_file)
    assert [i.name for i in session.get_inputs()] == ["x"]  # forward()'s parameter name
    for batch in (1, 7):
        x = shapes_task.x_val[:batch].numpy()
        got = session.run(None, {"x": x})[0]
        np.testing.assert_allclose(got, _torch(shapes_task.build_model(), x), rtol=1e-3, atol=1e-4)


def test_two_input_transformer_exports_with_both_inputs_and_dynamic_batch(text_task, text_file):
    _assert_single_checked_file(text_file)
    session = onnx_session(text_file)
    assert [(i.name, i.type) for i in session.get_inputs()] == [("ids", "tensor(int64)"), ("mask", "tensor(int64)")]
    ids, mask = text_task.ids[450:455].numpy(), text_task.mask[450:455].numpy()
    got = session.run(None, {"ids": ids, "mask": mask})[0]
    np.testing.assert_allclose(got, _torch(text_task.build_model(), ids, mask), rtol=1e-3, atol=1e-4)
    # the mask really is an input: masking a decoy changes the logits
    other = session.run(None, {"ids": ids, "mask": np.ones_like(mask)})[0]
    assert not np.allclose(got, other)


def test_export_leaves_model_mode_and_inputs_untouched(tmp_path):
    model = TinyResNet().train()
    x = torch.rand(2, 1, 16, 16)
    before = x.clone()
    export_onnx(model, (x,), tmp_path / "m.onnx", input_names=["image"], output_names=["logits"])
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(x, before)
    session = onnx_session(tmp_path / "m.onnx")
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["logits"]


class _Unsupported(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft(x).real  # no ONNX symbolic for aten::fft_fft


class _ReturnsString(nn.Module):
    def forward(self, x: torch.Tensor) -> str:
        return "not a tensor"


class _BakesBatchSize(nn.Module):
    """A real tracing bug: Python float() of a size is frozen into the graph at the example batch size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(x.shape[0])


class _Exp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).exp()


@pytest.mark.parametrize(
    ("model", "expected", "fix"),
    [
        (_Unsupported(), "UnsupportedOperatorError", "try the other exporter"),
        (_ReturnsString(), "returns a str", "make it return a tensor (or a tuple or dict of tensors)"),
    ],
)
def test_models_that_cannot_export_raise_one_line(tmp_path, model, expected, fix, capfd):
    with pytest.raises(ExportError) as info:
        export_onnx(model, (torch.rand(2, 4),), tmp_path / "bad.onnx")
    message = str(info.value)
    assert "\n" not in message and expected in message and "hint" not in message.lower()
    assert fix in message
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""  # the exporter's IR dump is silenced


def test_baked_in_batch_size_is_caught_by_the_second_batch_check(tmp_path):
    with pytest.raises(ExportError, match=r"output 'output' differs .* \(batch 3\): max abs difference [0-9.]+ exceeds"):
        export_onnx(_BakesBatchSize(), (torch.rand(2, 4) + 1.0,), tmp_path / "baked.onnx")
    # the same model is fine when the batch size is fixed
    export_onnx(_BakesBatchSize(), (torch.rand(2, 4) + 1.0,), tmp_path / "fixed.onnx", dynamic_batch=False)


def test_fp32_rounding_differences_fail_a_zero_tolerance_and_name_it(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(16, 8) * 3
    with pytest.raises(ExportError, match=r"'y' differs .*max abs difference .*atol=0 \+ rtol=0"):
        export_onnx(_Exp(), (x,), tmp_path / "exp.onnx", output_names=["y"], rtol=0.0, atol=0.0)
    export_onnx(_Exp(), (x,), tmp_path / "exp.onnx", output_names=["y"])  # default tolerance passes


def _node_ops(path):
    model = onnx.load(str(path))
    return model, {node.name: node.op_type for node in model.graph.node}


def test_layer_nodes_maps_every_conv_and_linear_of_the_cnn(shapes_task, cnn_file):
    mapping = layer_nodes(cnn_file)
    assert set(mapping) == set(compressible_layers(TinyResNet()))
    _, ops = _node_ops(cnn_file)
    for layer, nodes in mapping.items():
        assert len(nodes) == 1
        assert ops[nodes[0]] == ("Gemm" if layer == "fc" else "Conv"), layer
    assert len({n for nodes in mapping.values() for n in nodes}) == len(mapping)  # no node in two layers


def test_layer_nodes_maps_every_linear_of_the_transformer_not_attention(text_file):
    mapping = layer_nodes(text_file)
    assert set(mapping) == set(compressible_layers(TinyEncoder()))
    model, ops = _node_ops(text_file)
    weight_nodes = {n for nodes in mapping.values() for n in nodes}
    assert all(ops[n] in ("MatMul", "Gemm") for n in weight_nodes)
    # q @ k^T and softmax @ v are MatMuls without weights: no layer owns them
    assert sum(op == "MatMul" for op in ops.values()) == sum(ops[n] == "MatMul" for n in weight_nodes) + 2


def test_layer_nodes_without_export_stamps_falls_back_to_scopes(cnn_file, text_file):
    for path in (cnn_file, text_file):
        model = onnx.load(str(path))
        for node in model.graph.node:
            for prop in [p for p in node.metadata_props if p.key == MODULE_KEY]:
                node.metadata_props.remove(prop)
        assert layer_nodes(model) == layer_nodes(path)


def test_dynamo_exporter_maps_layers_through_node_metadata(tmp_path):
    """The dynamo exporter names nodes node_Conv_12 and gives fused BatchNorm convs the BatchNorm's scope."""
    model = TinyResNet()
    path = export_onnx(model, (torch.rand(2, 1, 16, 16),), tmp_path / "dynamo.onnx", dynamo=True)
    _assert_single_checked_file(path)
    mapping = layer_nodes(path)
    assert set(mapping) == set(compressible_layers(model))
    assert all(n.startswith("node_") for nodes in mapping.values() for n in nodes)


def test_the_search_checks_exports_on_training_batches_of_the_example_layout_only():
    """Batches of another sequence length cannot run in a file exported at the example's length: they are left out."""
    import torch

    from autocomp.pipeline import _same_layout

    example = (torch.zeros(1, 12, dtype=torch.long), torch.ones(1, 12, dtype=torch.long))
    assert _same_layout((torch.zeros(32, 12, dtype=torch.long), torch.ones(32, 12, dtype=torch.long)), example)
    assert not _same_layout((torch.zeros(32, 16, dtype=torch.long), torch.ones(32, 16, dtype=torch.long)), example)
    assert not _same_layout((torch.zeros(32, 12),  torch.ones(32, 12, dtype=torch.long)), example)
    assert not _same_layout((torch.zeros(32, 12, dtype=torch.long),), example)


def test_an_export_traced_down_one_branch_is_caught_on_training_batches(tmp_path):
    from bad_tasks import branchy

    task = branchy()
    model = task.build_model()
    (inputs,), _ = next(iter(task.train_batches()))
    # on the example input alone the traced file looks right: that was the hole
    export_onnx(model, task.example_inputs(), tmp_path / "alone.onnx")
    with pytest.raises(ExportError, match=r"on training batch 1 of 1 .* data-dependent Python control flow"):
        export_onnx(model, task.example_inputs(), tmp_path / "checked.onnx", check_batches=[(inputs,)])
