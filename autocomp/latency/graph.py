"""ONNX graph analysis for the cost model: per fused op, its kind, precision, MACs and bytes moved.

The graph is read as the target runtime would run it, not node by node:

* fusion: BatchNormalization, activations and one residual ``Add`` that follow a
  Conv/Gemm (with no other consumer) are folded into it, as onnxruntime's
  Conv/Gemm fusions and TensorRT do; ``MatMul`` + bias ``Add`` becomes a Gemm;
* QDQ: a node whose float inputs all come from ``DequantizeLinear`` runs in int8
  (onnxruntime rewrites ``DQ -> Conv -> Q`` into ``QLinearConv``); the absorbed
  Q/DQ nodes cost nothing of their own, the remaining ones are priced as
  element-wise work;
* QOperator ops (``QLinearConv``, ``MatMulInteger``...) are int8 directly;
* an op type the model does not know is priced as element-wise work over its
  output and *counted* in ``GraphCost.unpriced`` -- never silently free.

Symbolic dimensions are taken as 1, except the first dimension of each input,
which is the batch size, unless ``shapes`` names an input explicitly.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from autocomp.errors import LatencyError
from autocomp.cost_model import MAC_KINDS, feature_names
from autocomp.onnx_meta import MODULE_KEY, module_path

if TYPE_CHECKING:
    from autocomp.latency.kernels import RuntimeChoices

log = logging.getLogger(__name__)


_DTYPE_PRECISION = {
    TensorProto.FLOAT: "fp32",
    TensorProto.DOUBLE: "fp32",
    TensorProto.FLOAT16: "fp16",
    TensorProto.BFLOAT16: "fp16",
    TensorProto.INT8: "int8",
    TensorProto.UINT8: "int8",
}
_DTYPE_BYTES = {
    TensorProto.FLOAT: 4,
    TensorProto.DOUBLE: 8,
    TensorProto.FLOAT16: 2,
    TensorProto.BFLOAT16: 2,
    TensorProto.INT8: 1,
    TensorProto.UINT8: 1,
    TensorProto.INT32: 4,
    TensorProto.INT64: 8,
    TensorProto.BOOL: 1,
}
_PRECISION_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}

# Ops whose cost is the per-node overhead only: they move no data (views) or work on shapes.
VIEW_OPS = frozenset(
    {
        "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Size", "Dropout",
        "ConstantOfShape", "Range", "NonZero",
    }
)
# Ops with no runtime cost at all (folded into initializers by every runtime).
FREE_OPS = frozenset({"Constant"})
# Element-wise / data-movement / normalization ops: priced per value read and written, halved (a unary op counts
# its size, an Add of two tensors 1.5 times it: the calibration probes timed an Add chain 1.5x a Relu chain).
ELEMENTWISE_OPS = frozenset(
    {
        "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Neg", "Abs", "Erf", "Floor", "Ceil",
        "Round", "Sign", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Clip", "Sigmoid", "HardSigmoid",
        "HardSwish", "Tanh", "Softplus", "Softsign", "Gelu", "FastGelu", "BiasGelu", "Mish", "Where", "Equal", "Less",
        "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor", "Min", "Max", "Sum", "Mean", "Cast",
        "CastLike", "Softmax", "LogSoftmax", "LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
        "BatchNormalization", "InstanceNormalization", "GroupNormalization", "LpNormalization", "MaxPool",
        "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "ReduceMean", "ReduceSum", "ReduceMax",
        "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare", "ArgMax", "ArgMin", "Transpose", "Concat", "Split",
        "Slice", "Gather", "GatherElements", "GatherND", "ScatterND", "Pad", "Resize", "Upsample", "Expand", "Tile",
        "DepthToSpace", "SpaceToDepth", "TopK", "CumSum", "Trilu", "OneHot", "IsNaN", "IsInf", "Mod",
        "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearAdd", "QLinearMul",
        "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat",
        "QLinearSoftmax",
    }
)
_FUSABLE_ACTIVATIONS = frozenset(
    {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "BatchNormalization"}
)
_CONV_OPS = frozenset({"Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "FusedConv"})
_GEMM_OPS = frozenset({"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat", "FusedMatMul"})
_INT8_NATIVE = frozenset({"ConvInteger", "QLinearConv", "MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat"})


@dataclass(frozen=True)
class OpCost:
    """One op as the runtime runs it (after fusion), with the work it does."""

    name: str
    op_type: str
    # one of MAC_KINDS, "elementwise", "scalar" (no vector code: fp16 on a CPU without it), "view", "fallback",
    # "blocked_sum" (a sum of two NCHWc tensors that no conv fused: onnxruntime's profile times it 9-11 us above
    # a plain Add of the same size, whatever the size, on the development machine at 2 threads)
    kind: str
    precision: str  # fp32 | fp16 | int8
    macs: int
    elements: int  # non-MAC work: values read and written, halved; MAC ops: the output elements
    bytes_moved: int  # weights + input and output activations at their precisions
    layer: str  # module path when the exporter recorded one, else the node name
    fused: tuple[str, ...] = ()
    padding: float = 1.0  # MAC ops: work done / work asked, as the kernel pads channels to its block (see ``_mac_op``)
    rows: int = 0  # dense convs wider than 1x1 or reading plain NCHW: output rows (batch x height), one kernel call each
    loads: int = 0  # input values a dense conv's kernel loads: NCHWc broadcasts, or a generic int8 conv's im2col matrix
    generic: bool = False  # an x86 int8 conv that MLAS's symmetric conv kernels do not take (see ``_int8_generic``)
    pixels: int = 0  # convs: output pixels (batch x height x width)
    plain: bool = False  # an x86 float conv outside NCHWc: MLAS's generic im2col + GEMM path (``_mac_op``)
    groups: int = 0  # such a conv, grouped: batch x groups, one small im2col + GEMM each


@dataclass(frozen=True)
class GraphCost:
    """Per-op costs of one ONNX file at one batch size, and the ops the model could not price."""

    ops: tuple[OpCost, ...]
    unpriced: Mapping[str, int] = field(default_factory=dict)  # op type -> count priced by the fallback
    batch_size: int = 1

    def features(self, precision_map: Mapping[str, str] | None = None) -> dict[str, float]:
        return graph_features(self.ops, precision_map)


# An op's first multiply-adds run on one thread while the pool starts: ``gmacs_serial`` prices the first
# SERIAL_MACS of each MAC op above the rate the rest runs at (a hinge). Without
# it a 2-thread fit priced batch-1 files 9% low and batch-4 ones 9% high; 2**19 gave the best held-out fit
# of 2**15..2**21 on the development machine's calibration set (53% within +-10% against 43% without).
SERIAL_MACS = 524288


def op_features(op: OpCost, precision_map: Mapping[str, str] | None = None) -> dict[str, float]:
    """The features one op contributes (a graph's features are the sum plus ``call`` = 1).

    ``precision_map`` says which precision the device really computes each one
    in (e.g. fp16 -> fp32 on a CPU without fp16 arithmetic): the op's MACs and
    bytes are priced there, and ``nodes_mac_<precision>`` still counts the
    conversion the original precision costs.
    """
    p = op.precision
    run = precision_map.get(p, p) if precision_map else p
    if op.kind in MAC_KINDS:
        scale = _PRECISION_BYTES[run] / _PRECISION_BYTES[p]
        rate = f"gmacs_{op.kind}_{'plain' if op.plain else run}{'_generic' if op.generic else ''}"
        features = {
            "nodes": 1.0, "nodes_mac": 1.0, rate: op.macs * op.padding / 1e9,
            f"mbytes_{run}": op.bytes_moved * scale / 1e6, f"mouts_{run}": op.elements * op.padding / 1e6,
        }
        if p != "fp32":
            features[f"nodes_mac_{p}"] = 1.0
        if op.rows:
            features[f"krows_{run}"] = op.rows / 1e3
        if op.loads:
            features["mloads_int8_generic" if op.generic else "mloads_plain" if op.plain else "mloads_nchwc"] = op.loads / 1e6
        if op.generic:
            features["kpixels_int8_generic"] = op.pixels / 1e3
        if op.groups:
            features["kgroups_plain"] = op.groups / 1e3
        features["gmacs_serial"] = min(op.macs * op.padding, SERIAL_MACS) / 1e9
        return features
    if op.kind == "view":
        return {"nodes_view": 1.0}
    if op.kind == "scalar":
        return {"nodes": 1.0, "melems_scalar": op.elements / 1e6}
    if op.kind == "blocked_sum":
        return {"nodes": 1.0, "nodes_blocked_sum": 1.0, f"melems_{run}": op.elements / 1e6}
    return {"nodes": 1.0, f"melems_{run}": op.elements / 1e6}


def graph_features(ops: tuple[OpCost, ...], precision_map: Mapping[str, str] | None = None) -> dict[str, float]:
    features = dict.fromkeys(feature_names(), 0.0)
    features["call"] = 1.0
    for op in ops:
        for name, value in op_features(op, precision_map).items():
            features[name] += value
    return features


# --------------------------------------------------------------------------- analysis


def _numel(shape: tuple[int, ...] | None) -> int:
    if shape is None:
        return 0
    return math.prod(shape)


class _Graph:
    """Index of one (shape-inferred) ONNX graph: producers, consumers, shapes and dtypes."""

    def __init__(self, model: onnx.ModelProto, *, live: set[str] | None = None) -> None:
        graph = model.graph
        self.live = live or set()  # outputs of weight DequantizeLinear nodes the runtime runs per call
        self.nodes = list(graph.node)
        self.initializers = {t.name: t for t in graph.initializer}
        self.constants: set[str] = set(self.initializers)
        self.shapes: dict[str, tuple[int, ...] | None] = {}
        self.dtypes: dict[str, int] = {}
        for info in (*graph.input, *graph.value_info, *graph.output):
            tensor = info.type.tensor_type
            self.dtypes[info.name] = tensor.elem_type
            if tensor.HasField("shape"):
                dims = tuple([d.dim_value for d in tensor.shape.dim])
                # a symbolic or unknown dimension reads as 0; asking each dimension is a quarter slower
                unknown = 0 in dims and not all(d.HasField("dim_value") for d in tensor.shape.dim)
                self.shapes[info.name] = None if unknown else dims
        for name, tensor in self.initializers.items():
            self.shapes[name] = tuple(tensor.dims)
            self.dtypes[name] = tensor.data_type
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.graph_outputs = {o.name for o in graph.output}
        self.model_inputs = [i for i in graph.input if i.name not in self.initializers]
        for node in self.nodes:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(node)
            if node.op_type == "Constant":
                self.constants.update(node.output)
                for attr in node.attribute:
                    if attr.name == "value":
                        self.shapes[node.output[0]] = tuple(attr.t.dims)
                        self.dtypes[node.output[0]] = attr.t.data_type

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self.shapes.get(name)

    def constant_value(self, name: str) -> bytes | str:
        """The bytes of a small constant (through a Cast of it), for spotting equal constants; else its name."""
        node = self.producer.get(name)
        if node is not None and node.op_type == "Cast":
            name = node.input[0]
            node = self.producer.get(name)
        tensor = self.initializers.get(name)
        if node is not None and node.op_type == "Constant":
            tensor = next((a.t for a in node.attribute if a.name == "value"), None)
        return tensor.SerializeToString() if tensor is not None and tensor.ByteSize() <= 64 else name

    def nbytes(self, name: str, precision: str | None = None) -> int:
        if precision is not None:
            return _numel(self.shape(name)) * _PRECISION_BYTES[precision]
        return _numel(self.shape(name)) * _DTYPE_BYTES.get(self.dtypes.get(name, TensorProto.FLOAT), 4)

    def is_constant(self, name: str) -> bool:
        """An initializer, a Constant, or a DequantizeLinear/Cast of one (a quantized or fp16 weight)."""
        if name in self.constants:
            return True
        if name in self.live:
            return False
        node = self.producer.get(name)
        return node is not None and node.op_type in ("DequantizeLinear", "Cast", "Transpose") and self.is_constant(node.input[0])

    def single_consumer(self, name: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        if len(users) == 1 and name not in self.graph_outputs:
            return users[0]
        return None


def _attr(node: onnx.NodeProto, name: str, default):
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


_QUOTED = re.compile(r"'([^']*)'")


def _layer_of(node: onnx.NodeProto) -> str:
    """The module path of a node: our export stamp, else the exporter's name scopes, else the node name."""
    for prop in node.metadata_props:
        if prop.key == MODULE_KEY:
            return prop.value
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = [s for s in _QUOTED.findall(prop.value) if s]  # a repr'd list of str
            if len(scopes) >= 2:
                return scopes[-2]
    if node.name.startswith("/"):  # legacy exporter: /layer1/layer1.0/conv1/Conv -> layer1.0.conv1
        path = module_path([p for p in node.name.split("/") if p][:-1])
        if path:
            return path
    return node.name or node.op_type


def _fix_input_shapes(model: onnx.ModelProto, *, batch_size: int, shapes: Mapping[str, tuple[int, ...]]) -> None:
    initializer_names = {t.name for t in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializer_names:
            continue
        dims = inp.type.tensor_type.shape.dim
        if inp.name in shapes:
            wanted = list(shapes[inp.name])
            if len(wanted) != len(dims):
                raise LatencyError(
                    f"--shape {inp.name}={'x'.join(map(str, wanted))} has {len(wanted)} dimensions; the input has {len(dims)}"
                )
            for dim, value in zip(dims, wanted):
                dim.Clear()
                dim.dim_value = int(value)
            continue
        for index, dim in enumerate(dims):
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                dim.Clear()
                dim.dim_value = batch_size if index == 0 else 1
    unknown = set(shapes) - {i.name for i in model.graph.input}
    if unknown:
        names = ", ".join(i.name for i in model.graph.input if i.name not in initializer_names)
        raise LatencyError(f"--shape names input {sorted(unknown)[0]!r}, which the model lacks; its inputs: {names}")


def _precision_of(g: _Graph, name: str) -> str:
    return _DTYPE_PRECISION.get(g.dtypes.get(name, TensorProto.FLOAT), "fp32")


def analyze_model(
    model: onnx.ModelProto,
    *,
    batch_size: int = 1,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    tool: str = "onnxruntime",
    fp16_as_fp32: bool = False,
    nchwc_block: int = 0,
) -> GraphCost:
    """Fuse, classify and price every node of ``model`` (see the module docstring).

    ``fp16_as_fp32``: the runtime has no fp16 kernels (onnxruntime's CPU
    provider): it casts fp16 ops back to fp32 and removes the resulting
    fp32 -> fp16 -> fp32 Cast pairs, so the float Casts between layers cost
    nothing and fp16 layers fuse as fp32 ones do (measured: a per-layer fp16
    file from ``quantize_onnx`` runs the fp32 graph, Casts gone).

    ``tool`` is the runtime whose fusions apply: ``onnxruntime`` keeps the
    Q/DQ nodes it cannot fold and runs residual sums of int8 convs as QLinearAdd;
    ``trtexec`` (TensorRT) folds every Q/DQ into the neighbouring kernels and
    fuses conv + residual add + activation at any precision.

    ``nchwc_block`` > 0 (onnxruntime on x86): aligned fp32 convs and the pools,
    sums and ReLUs fed by them run in MLAS's blocked NCHWc layout, and a
    ReorderInput/ReorderOutput kernel converts each tensor that crosses the
    border of such a region (see ``_InsertedKernels``).
    """
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    _strip_weights(model_copy)
    return _analyze_stripped(
        model_copy, batch_size=batch_size, shapes=shapes, tool=tool, fp16_as_fp32=fp16_as_fp32, nchwc_block=nchwc_block
    )


def _strip_weights(model: onnx.ModelProto) -> None:
    """Drop the bytes of large initializers: shape inference needs their dims, not their values."""
    for tensor in model.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            del tensor.external_data[:]
            tensor.data_location = TensorProto.DEFAULT
        if tensor.ByteSize() > 4096:
            tensor.ClearField("raw_data")
            for name in ("float_data", "int32_data", "int64_data", "double_data"):
                tensor.ClearField(name)


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shapes for every value: onnx's inference, then, where shapes are computed at run time
    (Shape -> Gather -> Concat -> Reshape in every Hugging Face attention), onnxruntime's symbolic
    inference, which evaluates those chains; onnx's data propagation left 191 of a BERT's values unknown."""
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception as exc:
        raise LatencyError(f"ONNX shape inference failed ({type(exc).__name__}: {exc}); check the file with onnx.checker") from exc
    if not _unknown_values(inferred):
        return inferred
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        symbolic = SymbolicShapeInference.infer_shapes(_stripped_as_inputs(model), auto_merge=True, guess_output_rank=True)
        if symbolic is not None and len(_unknown_values(symbolic)) < len(_unknown_values(inferred)):
            return symbolic
    except Exception as exc:  # it raises on ops it does not know; onnx's data propagation is the fallback
        log.debug("symbolic shape inference failed: %s: %s", type(exc).__name__, exc)
    try:
        return shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:
        raise LatencyError(f"ONNX shape inference failed ({type(exc).__name__}: {exc}); check the file with onnx.checker") from exc


def _stripped_as_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose weight-stripped initializers are graph inputs of their shape: the symbolic
    inference reads every initializer's values, and a stripped one has none."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    kept = []
    for tensor in copy.graph.initializer:
        empty = not tensor.raw_data and not any(
            len(getattr(tensor, name)) for name in ("float_data", "int32_data", "int64_data", "double_data")
        )
        if empty and math.prod(tensor.dims) > 0:
            copy.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
        else:
            kept.append(tensor)
    del copy.graph.initializer[:]
    copy.graph.initializer.extend(kept)
    return copy


def _unknown_values(model: onnx.ModelProto) -> list[str]:
    """Node outputs without a fully known shape."""
    known = {v.name: v for v in list(model.graph.value_info) + list(model.graph.output)}

    def full(name: str) -> bool:
        value = known.get(name)
        tensor = value.type.tensor_type if value is not None and value.type.HasField("tensor_type") else None
        return tensor is not None and tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim)

    return [out for node in model.graph.node if node.op_type != "Constant" for out in node.output if out and not full(out)]


def _analyze_stripped(
    model: onnx.ModelProto, *, batch_size: int, shapes: Mapping[str, tuple[int, ...]] | None, tool: str = "onnxruntime",
    fp16_as_fp32: bool = False, nchwc_block: int = 0, choose: Callable[[onnx.ModelProto], "RuntimeChoices | None"] | None = None,
) -> GraphCost:
    """``analyze_model`` on a model that ``_strip_weights`` has stripped, which it changes in place.

    ``choose`` (the estimator passes it for quantized files on an x86 onnxruntime target) asks the
    runtime for its choices on the shape-inferred graph (``autocomp.latency.kernels.runtime_choices``):
    they replace the hand-written QDQ rules below (which nodes run int8, which Q/DQ nodes and
    activations are folded away, the layout Transposes) wherever the runtime can tell.
    """
    trt = tool == "trtexec"
    graph_inputs = {i.name for i in model.graph.input}
    _fix_input_shapes(model, batch_size=batch_size, shapes=shapes or {})
    inferred = _infer(model)
    choices = choose(inferred) if choose is not None and not trt and _uniquely_named(inferred) else None
    barriers = _drop_float_casts(inferred) if fp16_as_fp32 and not trt else {}
    if not trt and choices is None:
        _drop_relus_into_q(inferred)
    g = _Graph(inferred, live=_live_dequantized(inferred, choices))
    if choices is not None:
        int8_nodes = {id(node) for node in g.nodes if node.name in choices.int8}
        absorbed = {id(node) for node in g.nodes if node.op_type in _FOLDABLE and not choices.runs(node.name)}
        absorbed |= {id(node) for node in g.nodes if node.op_type in ("Cast", "Transpose") and g.is_constant(node.input[0])}
    else:
        int8_nodes, absorbed = _qdq_rules(g, trt=trt, graph_inputs=graph_inputs)

    def precision_of_node(node: onnx.NodeProto) -> str:
        return "int8" if id(node) in int8_nodes else _precision_of(g, node.input[0] if node.input else "")

    # Pass 2, in graph order: fusion of followers into Conv/Gemm/MatMul, and the NCHWc layout.
    inserted = _InsertedKernels(g, nchwc_block if not trt else 0, fp16_as_fp32=fp16_as_fp32, barriers=barriers)
    fused_into: dict[int, list[str]] = {}
    blocked_convs: set[int] = set()
    for node in g.nodes:
        if id(node) in absorbed:
            continue
        if node.op_type not in _CONV_OPS | _GEMM_OPS:
            inserted.visit(node)
            continue
        blocked = inserted.takes(node, precision_of_node(node))
        if blocked:
            blocked_convs.add(id(node))
        fused: list[str] = []
        added = False
        activated = False
        out = node.output[0]
        while True:
            nxt = g.single_consumer(out)
            if trt and nxt is not None and nxt.op_type in ("QuantizeLinear", "DequantizeLinear"):
                out = nxt.output[0]  # look through Q/DQ: TensorRT fuses int8 conv + add + activation
                continue
            if nxt is None or id(nxt) in absorbed and choices is None:
                break  # an absorbed QuantizeLinear: QLinearConv requantizes its own output
            if choices is not None and choices.runs(nxt.name):
                break  # the runtime runs it as a kernel of its own
            if nxt.op_type in _FUSABLE_ACTIVATIONS:
                if not trt and not fp16_as_fp32 and nxt.op_type not in ("Relu", "BatchNormalization") and precision_of_node(node) == "fp16":
                    break  # onnxruntime's CPU fp16 Conv fuses Relu only: a Clip runs alone, between layout reorders
                if fp16_as_fp32 and not trt and _fp16_bounds(g, nxt):
                    break  # its fp16 bounds are Cast at run time, so onnxruntime cannot fuse the Clip
                activated = activated or nxt.op_type != "BatchNormalization"
            elif nxt.op_type == "Add" and not added:
                other = [i for i in nxt.input if i != out]
                if node.op_type == "MatMul" and not (other and g.is_constant(other[0])):
                    break  # MatMul + activation Add is a real Add
                if blocked and not all(inserted.blocked(i, nxt) for i in other):
                    break  # an NCHWc conv sums only a blocked tensor into its output
                if activated and not trt and not (other and g.is_constant(other[0])):
                    break  # onnxruntime fuses conv + sum + activation, not a sum after the activation (ReLU6 blocks)
                added = True
            else:
                break
            absorbed.add(id(nxt))
            fused.append(nxt.op_type)
            out = nxt.output[0]
        fused_into[id(node)] = fused
        inserted.visit(node, output=out, blocked=blocked)
    inserted.finish()

    ops: list[OpCost] = []
    unpriced: Counter[str] = Counter()
    if choices is not None:
        ops.extend(_elementwise(g, op_type, tensor, None) for op_type, tensor in choices.added)
    elif not trt:
        ops.extend(_layout_ops(g, int8_nodes, absorbed, fused_into, fp16_reorders=not fp16_as_fp32))
    ops.extend(inserted.ops)
    for node in g.nodes:
        if id(node) in absorbed or node.op_type in FREE_OPS:
            continue
        op = _price_node(g, node, unpriced, precision_of_node(node), fused_into, blocked_convs, inserted,
                         nchwc_block=nchwc_block, fp16_as_fp32=fp16_as_fp32)
        if op is not None:  # a DequantizeLinear the runtime duplicated per consumer runs once per copy
            ops.extend([op] * (max(1, choices.present.get(node.name, 1)) if choices is not None else 1))
    return GraphCost(ops=tuple(ops), unpriced=dict(unpriced), batch_size=batch_size)


# Nodes the runtime may fold into a neighbour or drop; with ``RuntimeChoices`` one that is not in the
# optimized graph costs nothing of its own.
_FOLDABLE = frozenset({"QuantizeLinear", "DequantizeLinear", "Relu", "Clip", "BatchNormalization", "Add", "Identity",
                       "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh"})


def _quantized(model: onnx.ModelProto) -> bool:
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in model.graph.node)


def _uniquely_named(model: onnx.ModelProto) -> bool:
    """Every node has a name of its own: the runtime's choices are read back by node name."""
    names = [node.name for node in model.graph.node if node.op_type != "Constant"]
    return all(names) and len(set(names)) == len(names)


def _live_dequantized(model: onnx.ModelProto, choices: "RuntimeChoices | None") -> set[str]:
    """Outputs of weight DequantizeLinear nodes the runtime still runs: computed per call, not constants."""
    if choices is None:
        return set()
    return {node.output[0] for node in model.graph.node if node.op_type == "DequantizeLinear" and choices.runs(node.name)}


def _qdq_rules(g: "_Graph", *, trt: bool, graph_inputs: set[str]) -> tuple[set[int], set[int]]:
    """The hand-written QDQ rules: (nodes that run in int8, nodes absorbed by the runtime's fusions)."""
    # Pass 1: which nodes run in int8 (all float data inputs from DequantizeLinear).
    int8_nodes: set[int] = set()
    for node in g.nodes:
        if node.op_type in _INT8_NATIVE:
            int8_nodes.add(id(node))
            continue
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or node.op_type in VIEW_OPS | FREE_OPS:
            continue
        data_inputs = [i for i in node.input if i and not (i in g.constants)]
        if node.op_type in _CONV_OPS | _GEMM_OPS:
            data_inputs = [i for i in node.input[:2] if i]
        if not data_inputs or not all(g.producer.get(i) is not None and g.producer[i].op_type == "DequantizeLinear" for i in data_inputs):
            continue
        if node.op_type in _CONV_OPS | _GEMM_OPS:
            int8_nodes.add(id(node))  # QLinearConv / QGemm / MatMulIntegerToFloat
            continue
        users = g.consumers.get(node.output[0], []) if node.output else []
        if users and all(u.op_type == "QuantizeLinear" for u in users):
            int8_nodes.add(id(node))  # DQ -> op -> Q: onnxruntime runs the QLinear op (or drops the pair)
        elif not trt and node.op_type == "Add" and len(users) == 1 and users[0].op_type in ("Relu", "Clip"):
            after = g.consumers.get(users[0].output[0], [])
            if after and all(u.op_type == "QuantizeLinear" for u in after):
                # DQ -> Add -> Relu -> Q: QLinearAdd, the Relu folded into the Q's range (QDQ fusion)
                int8_nodes.update((id(node), id(users[0])))

    absorbed: set[int] = set()
    for node in g.nodes:
        if node.op_type in ("Relu", "Clip") and id(node) in int8_nodes:
            # onnxruntime's ReluQuantFusion/ClipQuantFusion: the following Q's range does the clipping
            absorbed.add(id(node))
        if node.op_type == "DequantizeLinear":
            users = g.consumers.get(node.output[0], [])
            # A Clip between two Q/DQ pairs (ReLU6 after a conv) is dropped by onnxruntime, but the
            # DQ -> Q around it stays (two scales): only trtexec folds those.
            if g.is_constant(node.input[0]) or (
                users and all(id(u) in int8_nodes and (trt or not _kept_pair(g, u)) for u in users)
            ):
                absorbed.add(id(node))  # weights: folded; activations: read by the int8 op directly
        elif node.op_type == "QuantizeLinear":
            src = g.producer.get(node.input[0])
            if src is not None and id(src) in int8_nodes and (trt or not _kept_pair(g, src)):
                absorbed.add(id(node))
            elif g.is_constant(node.input[0]):
                absorbed.add(id(node))  # weight quantization folded offline
        if trt and node.op_type == "DequantizeLinear":
            absorbed.add(id(node))  # TensorRT folds every DQ into the consuming kernel
        elif trt and node.op_type == "QuantizeLinear" and node.input[0] not in graph_inputs:
            absorbed.add(id(node))
        elif node.op_type in ("Cast", "Transpose", "DequantizeLinear") and g.is_constant(node.input[0]):
            absorbed.add(id(node))  # weight casts/transposes are constant-folded

    return int8_nodes, absorbed


def _price_node(
    g: "_Graph", node: onnx.NodeProto, unpriced: Counter[str], precision: str,
    fused_into: dict[int, list[str]], blocked_convs: set[int], inserted: "_InsertedKernels", *, nchwc_block: int,
    fp16_as_fp32: bool,
) -> OpCost | None:
    """The cost of one node that runs as a kernel of its own (None: a view of a weight, folded away)."""
    op_type = node.op_type
    layer = _layer_of(node)
    if op_type in VIEW_OPS:
        if node.input and all(g.is_constant(i) for i in node.input if i):
            return None  # a view of a weight is folded away
        return OpCost(node.name, op_type, "view", "fp32", 0, 0, 0, layer)
    if op_type in _CONV_OPS or op_type in _GEMM_OPS:
        # MLAS pads output channels: to the NCHWc block in blocked fp32 convs, and to the 16-column
        # strips of its x86 int8 GEMM kernels (a 4-channel int8 conv does the work of 16)
        x86_int8 = bool(nchwc_block) and precision == "int8"
        int8_conv = x86_int8 and op_type in _CONV_OPS and int(_attr(node, "group", 1)) == 1
        strip = nchwc_block if id(node) in blocked_convs else 16 if int8_conv else 0
        # a float grouped conv the NchwcTransformer did not take (channels off its alignment, weights
        # dequantized per call) runs MLAS's generic path: im2col and a small GEMM per group
        plain = bool(nchwc_block) and op_type == "Conv" and id(node) not in blocked_convs and precision != "int8" and (
            precision == "fp32" or fp16_as_fp32
        )
        if g.shape(node.output[0]) is None or g.shape(node.input[0]) is None:
            unpriced[f"{op_type} (shape unknown)"] += 1  # priced without its multiply-adds: say so
        return _mac_op(
            g, node, precision, layer, tuple(fused_into.get(id(node), ())), strip=strip,
            per_row=inserted.reads_plain(node), nchwc=id(node) in blocked_convs, x86_int8=x86_int8, plain=plain,
        )
    # a weight the runtime dequantizes on every call: its int8 values read, its floats written
    tensors = [t for t in list(node.input) + list(node.output) if t and (t not in g.constants or t == node.input[0] and op_type == "DequantizeLinear")]
    elements = sum(_numel(g.shape(t)) for t in tensors) // 2  # values read and written, per 2 (a unary op: its size)
    kind = "scalar" if fp16_as_fp32 and op_type in _SCALAR_FP16 and _runs_fp16(g, node) else "elementwise"
    if id(node) in inserted.blocked_sums:
        kind = "blocked_sum"
    if op_type not in ELEMENTWISE_OPS:
        unpriced[op_type] += 1
        kind = "fallback"
    if op_type == "QuantizeLinear":
        precision = "int8"
    return OpCost(node.name, op_type, kind, precision, 0, elements, 0, layer)


_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16)


def _drop_float_casts(model: onnx.ModelProto) -> dict[tuple[str, str], str]:
    """Remove Casts between fp32 and fp16 of activations (not of graph outputs): the runtime computes in fp32.

    Returns the edges that crossed a removed Cast, (consumer's first output, tensor it now reads) -> the
    Cast's output: onnxruntime removes the Casts only after its layout pass has put reorders around them.
    """
    graph = model.graph
    if not any(node.op_type == "Cast" for node in graph.node):
        return {}  # an fp32 or int8 file: nothing to drop, and indexing the graph costs a tenth of an estimate
    dtypes = {v.name: v.type.tensor_type.elem_type for v in list(graph.input) + list(graph.value_info) + list(graph.output)}
    outputs = {o.name for o in graph.output}
    # Casts of constants stay: onnxruntime folds them to fp16 constants, which it Casts back per run where needed
    constants = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    producer = {out: node for node in graph.node for out in node.output}
    rename: dict[str, str] = {}
    barriers: dict[tuple[str, str], str] = {}
    kept = []
    for node in graph.node:
        if node.op_type == "Cast" and node.output[0] not in outputs:
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            src = rename.get(node.input[0], node.input[0])
            source = producer.get(src)
            # after an op with an fp16 kernel (it runs in fp16) the Cast runs too
            after_fp16_kernel = source is not None and source.op_type in FP16_CPU_KERNELS and dtypes.get(src) == TensorProto.FLOAT16
            if not after_fp16_kernel and to in _FLOATS and dtypes.get(src) in _FLOATS and src not in constants:
                rename[node.output[0]] = src
                continue
        for index, name in enumerate(node.input):
            if name in rename:
                node.input[index] = rename[name]
                if node.output:
                    barriers[(node.output[0], rename[name])] = name
        kept.append(node)
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)
    return barriers


def _kept_pair(g: _Graph, node: onnx.NodeProto) -> bool:
    """A quantized Relu/Clip with its own DQ -> act -> Q: onnxruntime drops the activation (the Q's range
    clips) but keeps the DQ -> Q pair, which requantizes between two scales. (Conv + Relu is fused by the
    quantizer itself and has no pair in between.)"""
    if node.op_type not in ("Relu", "Clip") or not node.input:
        return False
    src = g.producer.get(node.input[0])
    return src is not None and src.op_type == "DequantizeLinear"


def _drop_relus_into_q(model: onnx.ModelProto) -> None:
    """onnxruntime's ReluQuantFusion: a Relu whose one consumer is a QuantizeLinear with its type's lowest
    zero point (so the Q clips at 0 itself) is removed, the Q reading the Relu's input. Relus of int8 ops
    are absorbed later anyway; this catches float ones, e.g. an fp16 layer's Relu before an int8 layer."""
    graph = model.graph
    if not any(node.op_type == "QuantizeLinear" for node in graph.node):
        return  # an fp32 or fp16 file: no Q, and indexing its consumers would be wasted on every estimate
    initializers = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    dropped = []
    for node in graph.node:
        users = consumers.get(node.output[0], []) if node.op_type == "Relu" else []
        if len(users) != 1 or node.output[0] in outputs or users[0].op_type != "QuantizeLinear" or len(users[0].input) < 3:
            continue
        zero_point = initializers.get(users[0].input[2])
        lowest = {TensorProto.UINT8: 0, TensorProto.INT8: -128}.get(zero_point.data_type) if zero_point is not None else None
        if lowest is None or not (zero_point.raw_data or zero_point.int32_data):
            continue
        if (numpy_helper.to_array(zero_point) == lowest).all():
            users[0].input[0] = node.input[0]
            dropped.append(node)
    for node in dropped:
        graph.node.remove(node)


def _fp16_bounds(g: _Graph, node: onnx.NodeProto) -> list[str]:
    """The fp16 min/max inputs of a Clip that come from Constant nodes: onnxruntime on a CPU without fp16
    arithmetic Casts those per run (an fp16 initializer it converts once, and the Clip still fuses)."""
    if node.op_type != "Clip":
        return []
    return [i for i in node.input[1:] if i and g.dtypes.get(i) == TensorProto.FLOAT16 and i not in g.initializers]


# Ops onnxruntime's CPU provider has fp16 kernels for (on x86 a scalar loop for Clip): one that feeds
# a Cast back to fp32 runs in fp16, behind a Cast that onnxruntime inserts (seen in its optimized graphs
# and profiles: an fp16 Clip over 16x32x32 values took 89 us, the fp32 one 5 us).
FP16_CPU_KERNELS = frozenset({"Clip", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose"})
_SCALAR_FP16 = frozenset({"Clip"})


def _runs_fp16(g: _Graph, node: onnx.NodeProto) -> bool:
    """With ``fp16_as_fp32``: does onnxruntime run this op in fp16 (it feeds a Cast the analysis kept)?"""
    if node.op_type not in FP16_CPU_KERNELS or not node.output or g.dtypes.get(node.output[0]) != TensorProto.FLOAT16:
        return False
    return any(user.op_type == "Cast" for user in g.consumers.get(node.output[0], []))


# Channel counts (input channels of a dense conv, channels of a depthwise one) that the NchwcTransformer
# takes must be multiples of this, not of the block: seen in onnxruntime 1.32's optimized graphs (block 8).
_NCHWC_ALIGNMENT = 4

# Ops that onnxruntime's NchwcTransformer runs blocked when their data inputs are blocked.
_NCHWC_FOLLOWERS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Relu", "Add", "Sum"})


class _InsertedKernels:
    """The kernels onnxruntime's CPU provider adds to a graph: NCHWc reorders and Casts of fp16 constants.

    Which tensors stay in MLAS's blocked NCHWc layout was read off onnxruntime
    1.32's optimized graphs on x86 (AVX2, block 8; see ``autocomp.latency.kernels``): an fp32
    Conv with constant weights runs blocked (its output channels padded to the
    block) when its input channels are fewer than one block (it then reads
    plain NCHW, like a stem) or a multiple of 4 (``_NCHWC_ALIGNMENT``: 12 runs
    blocked, padded to 16; 10 does not); a depthwise Conv when its channels are
    a multiple of 4.
    Pools, ReLUs and sums of blocked tensors stay blocked; every other consumer
    of a blocked tensor needs one ReorderOutput (per tensor), and a blocked conv
    fed a plain tensor one ReorderInput. With ``block`` 0 there is no NCHWc.
    Without fp16 arithmetic (``fp16_as_fp32``) each distinct fp16 constant an op
    computed in fp32 reads (a Clip's bounds) is Cast to fp32 on every run, and
    an op that runs in fp16 (see ``FP16_CPU_KERNELS``) on an input computed in
    fp32 gets a Cast in front.
    """

    def __init__(self, g: _Graph, block: int, *, fp16_as_fp32: bool, barriers: Mapping[tuple[str, str], str]) -> None:
        self.g = g
        self.block = block
        self.fp16_as_fp32 = fp16_as_fp32
        self.barriers = barriers  # edges that crossed a removed fp16 <-> fp32 Cast: plain, like the Cast was
        self._blocked: set[str] = set()
        self._reordered: set[tuple[str, str]] = set()
        self._casts: set[bytes | str] = set()  # constant values already Cast
        self._plain_readers: set[int] = set()  # convs taken that read plain NCHW
        self.blocked_sums: set[int] = set()  # sums of two blocked tensors that no conv fused (see ``op_features``)
        self.ops: list[OpCost] = []

    def blocked(self, tensor: str, reader: onnx.NodeProto | None = None) -> bool:
        """Is ``tensor`` blocked as ``reader`` reads it (not through a removed Cast)?"""
        return tensor in self._blocked and (reader is None or (reader.output[0], tensor) not in self.barriers)

    def takes(self, node: onnx.NodeProto, precision: str) -> bool:
        """Does the NchwcTransformer rewrite this Conv?"""
        g = self.g
        if not self.block or node.op_type != "Conv" or len(node.input) < 2 or not g.is_constant(node.input[1]):
            return False
        if precision != "fp32" and not (precision == "fp16" and self.fp16_as_fp32):
            return False
        w = g.shape(_weight_name(g, node.input[1]))
        if w is None or len(w) != 4:
            return False
        group = int(_attr(node, "group", 1))
        in_channels = w[1] * group
        if group == 1:  # output channels are padded to the block
            if in_channels < self.block:  # it reads plain NCHW, like a stem
                self._plain_readers.add(id(node))
                return True
            return in_channels % _NCHWC_ALIGNMENT == 0
        return group == in_channels == w[0] and w[0] % _NCHWC_ALIGNMENT == 0

    def reads_plain(self, node: onnx.NodeProto) -> bool:
        """Was this conv taken reading plain NCHW (MLAS's NCHW algorithm: one kernel call per output row)?"""
        return id(node) in self._plain_readers

    def _reorder(self, op_type: str, tensor: str, near: onnx.NodeProto) -> None:
        if (op_type, tensor) not in self._reordered:
            self._reordered.add((op_type, tensor))
            self.ops.append(_elementwise(self.g, op_type, tensor, near))

    def visit(self, node: onnx.NodeProto, *, output: str | None = None, blocked: bool = False) -> None:
        """Account for one op (a Conv/Gemm with the tensor its fused group writes)."""
        g = self.g
        if self.fp16_as_fp32 and _runs_fp16(g, node):
            source = g.producer.get(node.input[0])
            if source is None or not _runs_fp16(g, source):  # it runs in fp16 on an input computed in fp32
                self.ops.append(_elementwise(g, "Cast", node.input[0], node))
        elif self.fp16_as_fp32:
            for bound in _fp16_bounds(g, node):
                # onnxruntime's inserted Cast of an fp16 constant runs per call, once per distinct value
                value = g.constant_value(bound)
                if value not in self._casts:
                    self._casts.add(value)
                    self.ops.append(OpCost(f"{node.name}/Cast:{bound}", "Cast", "elementwise", "fp32", 0, 1, 0, _layer_of(node)))
        if not self.block:
            return
        data = [i for i in node.input if i and not g.is_constant(i)]
        if blocked:
            x = node.input[0]
            if self.reads_plain(node):
                if x in self._blocked:
                    self._reorder("ReorderOutput", x, node)
            elif not self.blocked(x, node):
                if x in self._blocked:  # blocked, but a Cast sat in between: out and back in
                    self._reorder("ReorderOutput", x, node)
                self._reorder("ReorderInput", self.barriers.get((node.output[0], x), x), node)
            self._blocked.add(output or node.output[0])
            return
        if node.op_type in _NCHWC_FOLLOWERS and data and all(self.blocked(i, node) for i in data):
            shape = g.shape(node.output[0])
            if shape is not None and len(shape) == 4 and shape[1] % self.block == 0:
                self._blocked.add(node.output[0])
                if node.op_type in ("Add", "Sum") and len(data) > 1:
                    self.blocked_sums.add(id(node))
                return
        for tensor in data:
            if tensor in self._blocked:
                self._reorder("ReorderOutput", tensor, node)

    def finish(self) -> None:
        for output in self.g.graph_outputs:
            if output in self._blocked:
                self._reorder("ReorderOutput", output, self.g.producer[output])


# Ops that work on any memory layout: onnxruntime's transpose optimizer pushes layout transposes through them.
_LAYOUT_AGNOSTIC = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "Add", "Sub", "Mul", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid",
     "HardSwish", "Tanh", "Identity", "QLinearAdd", "QLinearMul"}
)


_BINARY = frozenset({"Add", "Sub", "Mul"})


def _layout_ops(
    g: _Graph, int8_nodes: set[int], absorbed: set[int], fused_into: dict[int, list[str]], *, fp16_reorders: bool = True
) -> list[OpCost]:
    """The layout Transposes and Reorders onnxruntime's CPU provider inserts (priced as element-wise work).

    * int8: QLinearConv runs channels-last (NhwcTransformer); the transpose
      optimizer pushes the transposes through layout-agnostic ops (Q/DQ,
      element-wise), so one Transpose is left on each tensor that crosses
      between such an int8 region and a layout-sensitive op or a graph input/output.
    * fp16: a Clip after an fp16 Conv is not fused; the Conv runs blocked (NCHWc),
      so a ReorderOutput before the Clip and a ReorderInput after it run too.
    """
    ops: list[OpCost] = []
    parent: dict[int, int] = {}

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def live(node: onnx.NodeProto) -> bool:
        return not (node.input and all(g.is_constant(i) for i in node.input if i)) and node.op_type not in FREE_OPS

    region = [
        n for n in g.nodes
        if live(n) and ((n.op_type in _CONV_OPS and id(n) in int8_nodes) or n.op_type in _LAYOUT_AGNOSTIC)
        and not (n.op_type == "DequantizeLinear" and g.is_constant(n.input[0]))
        # a float sum of two int8 branches gets a Transpose on each input rather than one after it
        and not (n.op_type in _BINARY and id(n) not in int8_nodes)
    ]
    in_region = {id(n) for n in region}
    for n in region:
        parent[id(n)] = id(n)
    for n in region:
        for out in n.output:
            for user in g.consumers.get(out, []):
                if id(user) in in_region:
                    a, b = find(id(n)), find(id(user))
                    if a != b:
                        parent[a] = b
    nhwc_roots = {find(id(n)) for n in region if n.op_type in _CONV_OPS}
    if nhwc_roots:
        graph_inputs = {i.name for i in g.model_inputs}
        for n in region:
            if find(id(n)) not in nhwc_roots:
                continue
            for inp in n.input[:1] if n.op_type in _CONV_OPS else n.input:
                if not inp or g.is_constant(inp):
                    continue
                src = g.producer.get(inp)
                if (src is None and inp in graph_inputs) or (src is not None and id(src) not in in_region):
                    ops.append(_elementwise(g, "Transpose", inp, n))
            for out in n.output:
                users = g.consumers.get(out, [])
                if out in g.graph_outputs or any(id(u) not in in_region for u in users):
                    ops.append(_elementwise(g, "Transpose", out, n))
    for node in g.nodes:
        if fp16_reorders and node.op_type in _CONV_OPS and id(node) not in absorbed and id(node) not in int8_nodes:
            if _precision_of(g, node.input[0]) != "fp16":
                continue
            nxt = g.single_consumer(node.output[0])
            if nxt is not None and nxt.op_type == "Clip" and "Clip" not in fused_into.get(id(node), []):
                ops.append(_elementwise(g, "ReorderOutput", node.output[0], node))
                ops.append(_elementwise(g, "ReorderInput", nxt.output[0], node))
    return ops


def _elementwise(g: _Graph, op_type: str, tensor: str, near: onnx.NodeProto | None) -> OpCost:
    """A kernel the runtime adds over ``tensor`` (a layout reorder or transpose, a Cast), next to ``near``."""
    if near is None:  # added by the runtime next to the node that writes the tensor
        near = g.producer.get(tensor) or onnx.NodeProto(name=tensor, op_type=op_type)
    precision = "int8" if op_type == "QuantizeLinear" else _precision_of(g, tensor)
    return OpCost(f"{near.name}/{op_type}:{tensor}", op_type, "elementwise", precision, 0, _numel(g.shape(tensor)), 0, _layer_of(near))


def _weight_name(g: _Graph, name: str) -> str:
    """Follow DequantizeLinear/Cast of a weight back to its initializer (for its element count)."""
    node = g.producer.get(name)
    while node is not None and node.op_type in ("DequantizeLinear", "Cast", "Transpose"):
        name = node.input[0]
        node = g.producer.get(name)
    return name


# MLAS's NCHWc conv kernels compute up to this many output-channel blocks from each input value they load
# and broadcast; more output channels take another pass over the input (AVX2, seen in timings: a 16-channel
# 3x3 conv at 32x32 gains 40-100 us per block of 8 output channels up to 32, and 160 us at the 5th block).
_NCHWC_FILTER_BLOCKS = 4


def _mac_op(
    g: _Graph, node: onnx.NodeProto, precision: str, layer: str, fused: tuple[str, ...], *, strip: int = 0,
    per_row: bool = False, nchwc: bool = False, x86_int8: bool = False, plain: bool = False,
) -> OpCost:
    """One MAC op; ``strip`` > 0: the kernel pads output channels to a multiple of it (``OpCost.padding``);
    ``per_row``: the kernel is called once per output row whatever its size (MLAS's NCHW algorithm);
    ``nchwc``: a conv in MLAS's blocked layout (``strip`` is the block): a dense one pads its input
    channels to the block too, unless it reads plain NCHW, and counts ``loads``; ``x86_int8``: an int8
    op on x86, where a conv's channel counts choose its kernel (``_int8_generic``).

    A dense NCHWc kernel is bound by loads, not by multiply-adds, when it has few output blocks: it
    broadcasts each input value (kernel position by input channel by output pixel) to at most
    ``_NCHWC_FILTER_BLOCKS`` output blocks. Timed at batch 4 and 32x32, 3x3: a 16-channel input took
    240 us for 8 output channels and 446 us for 32 (4x the MACs), and a 12-channel input (padded
    to 16) took the time of a 16-channel one.
    """
    op_type = node.op_type
    inputs = list(node.input)
    if op_type == "QLinearConv":
        x_name, w_name = inputs[0], inputs[3]
    elif op_type == "QLinearMatMul":
        x_name, w_name = inputs[0], inputs[3]
    else:
        x_name, w_name = inputs[0], inputs[1]
    out_name = node.output[0]
    # The output that leaves the fused group is what is written.
    x_shape, w_shape, y_shape = g.shape(x_name), g.shape(_weight_name(g, w_name)), g.shape(out_name)
    if w_shape is None:
        w_shape = g.shape(w_name)
    kind = "gemm"
    macs = 0
    out_channels = 0
    in_padding = 1.0
    rows = 0
    loads = 0
    generic = False
    pixels = 0
    groups = 0
    if op_type in _CONV_OPS:
        group = int(_attr(node, "group", 1))
        if plain and group > 1 and x_shape is not None:
            groups = x_shape[0] * group
        kind = "dwconv" if group > 1 else "conv"
        if w_shape is not None and y_shape is not None and len(w_shape) >= 3:
            out_channels = w_shape[0]
            pixels = _numel(y_shape) // out_channels
            kernel = _numel(tuple(w_shape[2:]))
            if group == 1 and (kernel > 1 or per_row) and len(y_shape) == 4:
                rows = y_shape[0] * y_shape[2]
            if op_type == "ConvTranspose" and x_shape is not None:
                macs = _numel(x_shape) * w_shape[1] * kernel
            else:
                macs = _numel(y_shape) * w_shape[1] * kernel
            if nchwc and strip and group == 1:
                in_channels = w_shape[1] if per_row else math.ceil(w_shape[1] / strip) * strip
                in_padding = in_channels / w_shape[1]
                passes = math.ceil(math.ceil(out_channels / strip) / _NCHWC_FILTER_BLOCKS)
                loads = pixels * in_channels * kernel * passes
            generic = x86_int8 and _int8_generic(w_shape[1] * group, out_channels, group)
            if group == 1 and (generic or plain and kernel > 1):
                loads = pixels * w_shape[1] * kernel  # the im2col matrix the GEMM then reads: outputs x in-channels x kernel
    else:
        weight_const = g.is_constant(w_name)
        kind = "gemm" if weight_const else "matmul"
        if x_shape is not None and w_shape is not None and y_shape is not None and x_shape and w_shape:
            if op_type == "Gemm":
                k = x_shape[0] if _attr(node, "transA", 0) else x_shape[-1]
            else:
                k = x_shape[-1]
            macs = _numel(y_shape) * k
    act = precision
    weight_bytes = _numel(w_shape) * _PRECISION_BYTES[act] if w_shape else 0
    x_bytes = _numel(x_shape) * _PRECISION_BYTES[act] if x_shape else 0
    y_bytes = _numel(y_shape) * _PRECISION_BYTES[act] if y_shape else 0
    padding = math.ceil(out_channels / strip) * strip / out_channels if strip and out_channels else 1.0
    return OpCost(
        node.name, op_type, kind, precision, int(macs), _numel(y_shape), int(weight_bytes + x_bytes + y_bytes), layer, fused,
        padding=padding * in_padding, rows=rows, loads=loads, generic=generic, pixels=pixels, plain=plain, groups=groups,
    )


def _int8_generic(in_channels: int, out_channels: int, group: int) -> bool:
    """Does MLAS run this x86 u8s8 conv on its generic path rather than its symmetric conv kernels?

    onnxruntime's QLinearConv takes MLAS's symmetric (indirect) conv kernel for a dense conv with at
    least 16 output channels, input channels a multiple of 4 and output channels a multiple of 8, and
    its symmetric depthwise kernel when the channels are a multiple of 16 (the AVX2 dispatch of
    ``MlasConvSymPackWSize``); any other conv goes through im2col and the int8 GEMM, or the generic
    depthwise loop. Timed at batch 4 and 32x32, 3x3: 4 -> 16 channels took 118 us, 4 -> 8 channels 158 us,
    and 3 to 8 input channels into 3 to 8 output channels 152-201 us, whatever the counts: a cost per
    output pixel (``pixels``) and im2col value (``loads``) more than per multiply-add.
    """
    if group == 1:
        return not (out_channels >= 16 and in_channels % 4 == 0 and out_channels % 8 == 0)
    return not (group == in_channels == out_channels and out_channels % 16 == 0)


# --------------------------------------------------------------------------- cached entry point

_CACHE: "OrderedDict[tuple, GraphCost]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 256


def analyze(
    onnx_path: Path,
    *,
    batch_size: int = 1,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    tool: str = "onnxruntime",
    fp16_as_fp32: bool = False,
    nchwc_block: int = 0,
    ask_runtime: bool = False,
) -> GraphCost:
    """``analyze_model`` on a file, memoized by the file's graph, batch size, shapes and options.

    The key hashes the graph without its large weights, which the analysis never reads: hashing the
    whole file cost more than a millisecond for ResNetDigits, a quarter of a fresh estimate.

    ``ask_runtime``: the target runs this machine's kind of onnxruntime build (x86, CPU provider), so
    for a quantized file its QDQ choices are read off this machine's optimized graph
    (``autocomp.latency.kernels.runtime_choices``, 10-50 ms once per graph) instead of the hand rules.
    """
    path = Path(onnx_path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LatencyError(f"cannot read ONNX file {path}: {exc.strerror or exc}") from exc
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:
        raise LatencyError(f"{path} is not a readable ONNX model ({type(exc).__name__}); export it again") from exc
    _strip_weights(model)
    graph_sha256 = hashlib.sha256(model.SerializeToString()).hexdigest()
    ask_runtime = ask_runtime and tool == "onnxruntime" and _quantized(model)
    key = (graph_sha256, batch_size, tuple(sorted((shapes or {}).items())), tool, fp16_as_fp32, nchwc_block, ask_runtime)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    choose = None
    if ask_runtime:
        from autocomp.latency.kernels import runtime_choices

        def choose(inferred: onnx.ModelProto) -> "RuntimeChoices | None":
            try:
                return runtime_choices(path, inferred)
            except Exception as exc:  # this machine's onnxruntime cannot load it; the target's may: keep the hand rules
                log.warning("onnxruntime here cannot load %s (%s); its QDQ choices come from the estimate's own rules",
                            path.name, " ".join(str(exc).split())[:200])
                return None

    result = _analyze_stripped(
        model, batch_size=batch_size, shapes=shapes, tool=tool, fp16_as_fp32=fp16_as_fp32, nchwc_block=nchwc_block,
        choose=choose,
    )
    with _CACHE_LOCK:
        _CACHE[key] = result
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return result
