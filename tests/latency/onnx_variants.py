"""ONNX files for the latency tests: one tiny model in three precisions, and a two-input encoder."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from tiny_models import TinyEncoder, TinyResNet


def export(model: torch.nn.Module, inputs: tuple, path: Path, *, names: list[str], axes: dict | None = None) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), inputs, str(path), dynamo=False, external_data=False, input_names=names,
            dynamic_axes=axes or {n: {0: "batch"} for n in names},
        )
    return path


def resnet_precisions(folder: Path, *, width: float = 4.0) -> dict[str, Path]:
    """TinyResNet as fp32, fp16 and QDQ int8 files (same graph, three precisions)."""
    from autocomp.profiles import Int8Recipe

    torch.manual_seed(0)
    fp32 = export(TinyResNet(width=width), (torch.rand(1, 1, 16, 16),), folder / "resnet-fp32.onnx", names=["x"])
    return {
        "fp32": fp32,
        "fp16": to_fp16(fp32, folder / "resnet-fp16.onnx"),
        "int8": to_int8(fp32, folder / "resnet-int8.onnx", recipe=Int8Recipe(), input_shape=(1, 1, 16, 16)),
    }


# Files as another toolchain would write them (not through autocomp's quantizer): `measure` and
# the estimate take any ONNX file a user has.


def to_fp16(src: Path, dst: Path) -> Path:
    """Every float tensor of the graph in fp16 (inputs and outputs too), as a converter for devices would."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    for i, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.FLOAT:
            half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name)
            graph.initializer[i].CopyFrom(half)
    for node in graph.node:
        for attr in node.attribute:
            if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    for value in list(graph.input) + list(graph.output):
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
    del graph.value_info[:]
    onnx.save(model, str(dst))
    return dst


def to_int8(src: Path, dst: Path, *, recipe, input_shape: tuple[int, ...], exclude: Sequence[str] = ()) -> Path:
    """Static QDQ int8 with the profile's recipe (``exclude``: node names kept fp32)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.items = iter([{"x": rng.standard_normal(input_shape).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    with tempfile.TemporaryDirectory() as tmp:  # the quantizer leaves augmented models behind
        quantize_static(
            str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(recipe.op_types),
            per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
            activation_type=types[recipe.activation_type], weight_type=types[recipe.weight_type],
            nodes_to_exclude=list(exclude), calibration_cache_path=Path(tmp) / "calibration.cache",
        )
    return dst


def encoder(folder: Path) -> Path:
    """TinyEncoder (token ids + attention mask: two inputs, symbolic batch)."""
    torch.manual_seed(0)
    ids = torch.randint(0, 32, (1, 12))
    mask = torch.ones(1, 12, dtype=torch.long)
    axes = {n: {0: "batch", 1: "tokens"} for n in ("ids", "mask")}
    return export(TinyEncoder(), (ids, mask), folder / "encoder.onnx", names=["ids", "mask"], axes=axes)
