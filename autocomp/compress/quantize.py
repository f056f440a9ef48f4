"""Per-layer int8 / dynamic int8 / fp16 / fp32 of an exported ONNX graph, with onnxruntime's own tools.

Bit-widths are applied to the ONNX file that ships (not to a fake-quant
PyTorch model), so accuracy and latency are measured on what the device runs.

* int8: static QDQ (``quantize_static``) restricted to exactly the ONNX nodes
  of the 8-bit layers, with the device's ``Int8Recipe`` (activation/weight
  types, per-channel, reduce_range, which op types), calibrated on real
  training samples. ``quant_pre_process`` runs first, in a temporary
  directory, without graph optimization so that node names (and with them the
  layer mapping) survive; when it fails the raw graph is quantized instead.
* dynamic int8 (``"dyn8"``): ``quantize_dynamic`` restricted to the layers'
  MatMul nodes: int8 weights, each activation quantized at run time
  (DynamicQuantizeLinear -> MatMulInteger). It needs no calibration and keeps
  what static int8 breaks in a transformer: the ranges of activations around
  LayerNorm, Softmax and GELU are measured per input, not fixed from a
  calibration set. onnxruntime's dynamic quantizer covers MatMul only among
  the weight ops that matter here (a Gemm or Conv layer at dyn8 is refused).
* fp16: ``convert_float_to_float16`` with every node blocked except the 16-bit
  layers' nodes and the glue ops (activations, residual adds, pooling, views)
  fed by them, graph inputs/outputs kept fp32. Casts sit only where an fp16
  region meets an fp32 one: a Cast around every conv would cost a Nano's
  TensorRT two reformat layers per conv and undo the fp16 gain.

int8 runs first (calibration needs the fp32 graph), then dynamic int8, then
fp16, so one plan may mix all three.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import onnx

from autocomp.errors import CompressionError, PlanError, first_line
from autocomp.export import layer_nodes
from autocomp.onnx_meta import MODULE_KEY
from autocomp.precision import DYNAMIC_INT8, SUPPORTED_BITS, precision
from autocomp.profiles import Int8Recipe

log = logging.getLogger(__name__)

DYNAMIC_OP_TYPES = ("MatMul",)
"""Weight ops onnxruntime's dynamic quantizer turns into integer kernels (MatMul -> MatMulInteger)."""
_NUMPY_TYPES = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.BOOL: np.bool_,
}


def quantize_onnx(
    src: Path,
    dst: Path,
    bits: Mapping[str, int | str],
    *,
    calibration: Sequence[tuple[np.ndarray, ...]],
    recipe: Int8Recipe = Int8Recipe(),
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> Path:
    """Write ``dst``: ``src`` with each named layer at its precision (32, 16, 8 or "dyn8"); unnamed layers stay fp32.

    ``ranges``: an int8 layer's input range ``(rmin, rmax)`` as quantization-aware fine-tuning learned it
    (``knobs.qat``); onnxruntime then quantizes that input with it (``TensorQuantOverrides``) instead of
    the range it calibrates, so the file runs what was trained. Weights take their scales from the
    trained weights, by the same rule in both.

    ``bits`` maps module paths (``layer1.0.conv1``) to precisions;
    ``calibration`` is a sequence of input tuples (one array per graph input,
    e.g. from ``autocomp.runtime.calibration_inputs``) used for int8 activation
    ranges. ``src`` is left untouched; ``dst`` is one self-contained file.

    Raises PlanError for a precision other than 32/16/8/dyn8, a layer with no
    ONNX node, an 8-bit layer whose op type the recipe does not quantize, or a
    dyn8 layer that is not a MatMul; CompressionError when onnxruntime's tools
    fail or leave an 8-bit layer unquantized.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise PlanError(f"ONNX file {src} does not exist; export the model first")
    if src.resolve() == dst.resolve():
        raise PlanError(f"quantize_onnx would overwrite its input {src}; choose another dst")
    for layer, width in bits.items():
        if precision(width) is None:
            raise PlanError(f"bits/{layer}: bit-width {width!r} is not supported; use {', '.join(map(str, SUPPORTED_BITS))}")
    bits = {layer: precision(width) for layer, width in bits.items()}

    model = onnx.load(str(src))
    mapping = layer_nodes(model)
    missing = [layer for layer in bits if layer not in mapping]
    if missing:
        known = ", ".join(sorted(mapping)[:8]) + (", ..." if len(mapping) > 8 else "")
        raise PlanError(
            f"bits/{missing[0]}: {src.name} has no ONNX node computing layer {missing[0]!r}; "
            f"layers with nodes: {known}"
        )
    int8_layers = sorted(layer for layer, width in bits.items() if width == 8)
    dynamic_layers = sorted(layer for layer, width in bits.items() if width == DYNAMIC_INT8)
    fp16_layers = sorted(layer for layer, width in bits.items() if width == 16)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not int8_layers and not dynamic_layers and not fp16_layers:
        shutil.copyfile(src, dst)
        return dst

    op_of = {node.name: node.op_type for node in model.graph.node}
    for layers, op_types, fix in (
        (int8_layers, recipe.op_types, "the int8 recipe does not quantize"),
        (dynamic_layers, DYNAMIC_OP_TYPES, "onnxruntime's dynamic int8 does not cover"),
    ):
        for layer in layers:
            for name in mapping[layer]:
                if op_of[name] not in op_types:
                    raise PlanError(
                        f"bits/{layer}={bits[layer]}: its ONNX node {name} is a {op_of[name]}, which {fix} "
                        f"(op types: {', '.join(op_types)}); use 16 or 32 for this layer"
                    )
    if int8_layers:
        if not calibration:
            raise PlanError("int8 layers need calibration inputs; pass autocomp.runtime.calibration_inputs(task)")

    with tempfile.TemporaryDirectory(prefix="autocomp-quant-") as tmp:
        work = Path(tmp)
        if int8_layers:
            overrides = _input_overrides(model, {layer: ranges[layer] for layer in int8_layers if layer in (ranges or {})}, mapping)
            model = _quantize_int8(model, _nodes_of(int8_layers, mapping), calibration, recipe, work, overrides=overrides)
            _check_quantized(model, int8_layers, mapping)
        if dynamic_layers:
            model = _quantize_dynamic(model, dynamic_layers, mapping, recipe, work)
            mapping = layer_nodes(model)  # it rewrote every Gemm as MatMul + Add (see _quantize_dynamic)
        if fp16_layers:
            model = _to_fp16(model, _nodes_of(fp16_layers, mapping))
    try:
        onnx.save_model(model, str(dst), save_as_external_data=False)
        onnx.checker.check_model(str(dst))
    except Exception as exc:
        raise CompressionError(f"the quantized model {dst.name} is invalid: {type(exc).__name__}: {first_line(exc)}") from exc
    log.debug("quantized %s -> %s: int8 %s, dyn8 %s, fp16 %s", src.name, dst.name, int8_layers, dynamic_layers, fp16_layers)
    return dst


def _input_overrides(
    model: onnx.ModelProto, ranges: Mapping[str, tuple[float, float]], mapping: Mapping[str, list[str]]
) -> dict[str, tuple[float, float]]:
    """Each layer's range on the activation its ONNX nodes take (input 0); layers sharing an input
    (attention's q, k and v) saw the same tensor, so their ranges are joined."""
    nodes = {node.name: node for node in model.graph.node}
    out: dict[str, tuple[float, float]] = {}
    for layer, (low, high) in ranges.items():
        for name in mapping[layer]:
            tensor = nodes[name].input[0]
            known = out.get(tensor, (low, high))
            out[tensor] = (min(known[0], low), max(known[1], high))
    return out


def _nodes_of(layers: Sequence[str], mapping: Mapping[str, list[str]]) -> list[str]:
    return [name for layer in layers for name in mapping[layer]]


def _quant_type(name: str, what: str):
    from onnxruntime.quantization import QuantType

    types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    if name not in types:
        raise PlanError(f"int8 recipe: {what} type {name!r} is not supported; use 'u8' or 's8'")
    return types[name]


class _Reader:
    """CalibrationDataReader over fixed input tuples, cast to the graph's declared input dtypes."""

    def __init__(self, model: onnx.ModelProto, calibration: Sequence[tuple[np.ndarray, ...]]) -> None:
        initializers = {init.name for init in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in initializers]
        self._names = [i.name for i in inputs]
        self._dtypes = [_NUMPY_TYPES.get(i.type.tensor_type.elem_type) for i in inputs]
        self._samples = list(calibration)
        for sample in self._samples:
            if len(sample) != len(self._names):
                raise PlanError(
                    f"calibration samples have {len(sample)} arrays but the graph takes {len(self._names)} inputs "
                    f"({', '.join(self._names)})"
                )
        self._iter: Iterator[tuple[np.ndarray, ...]] = iter(self._samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        sample = next(self._iter, None)
        if sample is None:
            return None
        return {
            name: np.ascontiguousarray(np.asarray(x) if dtype is None else np.asarray(x).astype(dtype, copy=False))
            for name, dtype, x in zip(self._names, self._dtypes, sample)
        }

    def rewind(self) -> None:
        self._iter = iter(self._samples)


def _pre_process(model: onnx.ModelProto, work: Path) -> onnx.ModelProto:
    """quant_pre_process (shape inference) in ``work``; it leaves temp files in cwd and fails on some graphs."""
    import os

    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw, out = work / "raw.onnx", work / "pre.onnx"
    onnx.save_model(model, str(raw), save_as_external_data=False)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        for skip_symbolic in (False, True):
            try:
                # skip_optimization: ORT's optimizer renames and fuses nodes, which would break the layer mapping
                quant_pre_process(str(raw), str(out), skip_optimization=True, skip_symbolic_shape=skip_symbolic)
                return onnx.load(str(out))
            except Exception as exc:  # documented to fail on some dynamic-shape graphs
                log.debug("quant_pre_process (skip_symbolic_shape=%s) failed: %s", skip_symbolic, first_line(exc))
    finally:
        os.chdir(cwd)
    log.warning("quant_pre_process failed on this graph; quantizing it without pre-processing")
    return model


def _quantize_int8(
    model: onnx.ModelProto,
    nodes: list[str],
    calibration: Sequence[tuple[np.ndarray, ...]],
    recipe: Int8Recipe,
    work: Path,
    *,
    overrides: Mapping[str, tuple[float, float]] | None = None,
) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantFormat, quantize_static

    activation = _quant_type(recipe.activation_type, "activation")
    weight = _quant_type(recipe.weight_type, "weight")
    prepared = _pre_process(model, work)
    source, target = work / "fp32.onnx", work / "int8.onnx"
    onnx.save_model(prepared, str(source), save_as_external_data=False)
    try:
        quantize_static(
            str(source),
            str(target),
            _Reader(prepared, calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(recipe.op_types),
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            activation_type=activation,
            weight_type=weight,
            nodes_to_quantize=list(nodes),
            extra_options={"TensorQuantOverrides": {
                tensor: [{"rmin": np.float32(low), "rmax": np.float32(high)}] for tensor, (low, high) in (overrides or {}).items()
            }},
        )
    except PlanError:
        raise
    except Exception as exc:
        raise CompressionError(
            f"onnxruntime's quantize_static failed: {type(exc).__name__}: {first_line(exc)}; "
            "keep the failing layers at 16 or 32 bits"
        ) from exc
    return onnx.load(str(target))


def _quantize_dynamic(
    model: onnx.ModelProto, layers: Sequence[str], mapping: Mapping[str, list[str]], recipe: Int8Recipe, work: Path
) -> onnx.ModelProto:
    """quantize_dynamic on exactly the layers' MatMul nodes; each becomes ``<node>_quant`` (MatMulInteger), stamped with its layer.

    onnxruntime's dynamic mode also rewrites *every* Gemm of the graph as ``<gemm>_MatMul`` +
    ``<gemm>_Add`` (quantized or not); those nodes get their Gemm's layer stamp back, so the
    layer mapping (and a later fp16 pass) still finds them.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = _nodes_of(layers, mapping)
    source, target = work / "dyn_in.onnx", work / "dyn_out.onnx"
    onnx.save_model(_pre_process(model, work), str(source), save_as_external_data=False)
    previous = logging.root.manager.disable
    # after static int8 it warns on the root logger that "the model is already quantized": that is the plan
    logging.disable(logging.WARNING)
    try:
        # s8 weights: MLAS's u8 x s8 MatMulInteger kernel; per_channel/reduce_range follow the device's recipe
        quantize_dynamic(
            str(source), str(target), op_types_to_quantize=list(DYNAMIC_OP_TYPES), nodes_to_quantize=nodes,
            per_channel=recipe.per_channel, reduce_range=recipe.reduce_range, weight_type=QuantType.QInt8,
        )
    except Exception as exc:
        raise CompressionError(
            f"onnxruntime's quantize_dynamic failed: {type(exc).__name__}: {first_line(exc)}; "
            "keep the failing layers at 16 or 32 bits"
        ) from exc
    finally:
        logging.disable(previous)
    quantized = onnx.load(str(target))
    gemm_layers = {
        node.name: prop.value for node in model.graph.node if node.op_type == "Gemm"
        for prop in node.metadata_props if prop.key == MODULE_KEY
    }
    for node in quantized.graph.node:
        base, _, part = node.name.rpartition("_")
        if part in ("MatMul", "Add") and base in gemm_layers and not any(p.key == MODULE_KEY for p in node.metadata_props):
            node.metadata_props.add(key=MODULE_KEY, value=gemm_layers[base])
    by_name = {node.name: node for node in quantized.graph.node}
    for layer in layers:
        for name in mapping[layer]:
            node = by_name.get(f"{name}_quant")
            if name in by_name or node is None or node.op_type != "MatMulInteger":
                raise CompressionError(
                    f"bits/{layer}={DYNAMIC_INT8}: onnxruntime left ONNX node {name} unquantized; "
                    "keep this layer at 16 or 32 bits"
                )
            node.metadata_props.add(key=MODULE_KEY, value=layer)  # the estimator's per-layer rows find it
    return quantized


def _check_quantized(model: onnx.ModelProto, layers: Sequence[str], mapping: Mapping[str, list[str]]) -> None:
    """Every 8-bit layer's node must read a DequantizeLinear weight: nothing is dropped silently."""
    producers = {out: node for node in model.graph.node for out in node.output}
    by_name = {node.name: node for node in model.graph.node}
    for layer in layers:
        for name in mapping[layer]:
            node = by_name.get(name)
            fed = node is not None and any(
                producers.get(x) is not None and producers[x].op_type == "DequantizeLinear" for x in node.input
            )
            if not fed:
                raise CompressionError(
                    f"bits/{layer}=8: onnxruntime left ONNX node {name} unquantized; keep this layer at 16 or 32 bits"
                )


def _to_fp16(model: onnx.ModelProto, nodes: list[str]) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    for index, node in enumerate(model.graph.node):
        if not node.name:  # node_block_list works by name
            node.name = f"autocomp_node_{index}"
    keep = _fp16_region(model.graph, set(nodes))
    block = [node.name for node in model.graph.node if node.name not in keep]
    try:
        converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=block)
    except Exception as exc:
        raise CompressionError(
            f"fp16 conversion failed: {type(exc).__name__}: {first_line(exc)}; keep these layers at 32 bits"
        ) from exc
    _drop_fp16_round_trips(converted.graph)
    _topological_sort(converted.graph)  # the converter appends its input Casts after their consumers
    return converted


# Ops with fp16 kernels on every runtime we target that never need fp32 range:
# they join the fp16 region of the layers feeding them.
_FP16_GLUE = frozenset(
    {
        "Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Add", "Sub", "Mul",
        "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Flatten", "Reshape",
        "Identity", "Transpose",
    }
)


def _fp16_region(graph: onnx.GraphProto, layer_nodes: set[str]) -> set[str]:
    """The 16-bit layers' nodes plus the glue ops downstream of them (in graph order).

    A glue op joins when any float input comes from the region, so a residual
    add of an fp16 branch and an fp32 stream turns the stream fp16 once (one
    Cast) instead of casting every block back and forth.
    """
    initializers = {init.name for init in graph.initializer}
    region = set(layer_nodes)
    region_outputs = {out for node in graph.node if node.name in region for out in node.output}
    for node in _topological_order(graph):
        if node.name in region or node.op_type not in _FP16_GLUE:
            continue
        activations = [x for x in node.input if x and x not in initializers]
        if any(x in region_outputs for x in activations):
            region.add(node.name)
            region_outputs.update(node.output)
    return region


def _drop_fp16_round_trips(graph: onnx.GraphProto) -> None:
    """Remove the fp32 -> fp16 -> fp32 Cast pairs the converter puts on every tensor between blocked nodes.

    With a node_block_list, ``convert_float_to_float16`` still types every
    intermediate tensor fp16 and wraps each blocked node in Casts, so without
    this pass an fp32 layer's activations would be rounded to fp16 (changing
    the accuracy the plan is scored on), every tensor would pay two Casts, and
    int8 layers would lose the DequantizeLinear -> op pattern onnxruntime fuses.
    Only exact round trips are removed; the Casts into and out of the 16-bit
    layers stay.
    """
    FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16

    def cast_to(node: onnx.NodeProto) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((a.i for a in node.attribute if a.name == "to"), None)

    graph_outputs = {o.name for o in graph.output}
    producers = {out: node for node in graph.node for out in node.output}
    fp32_values = {i.name for i in graph.input if i.type.tensor_type.elem_type == FLOAT}
    fp32_values |= {v.name for v in graph.value_info if v.type.tensor_type.elem_type == FLOAT}
    fp32_values |= {i.name for i in graph.initializer if i.data_type == FLOAT}
    fp32_values |= {n.output[0] for n in graph.node if cast_to(n) == FLOAT}
    rename: dict[str, str] = {}
    removed: set[int] = set()
    for node in graph.node:
        if cast_to(node) != FLOAT:
            continue
        first = producers.get(node.input[0])
        if first is None or cast_to(first) != FLOAT16:
            continue
        source = first.input[0]
        source_producer = producers.get(source)
        if source not in fp32_values and not (source_producer is not None and source_producer.op_type != "Cast"):
            continue
        if node.output[0] in graph_outputs:
            node.op_type = "Identity"
            del node.attribute[:]
            node.input[0] = source
        else:
            rename[node.output[0]] = source
            removed.add(id(node))
    kept = [node for node in graph.node if id(node) not in removed]
    for node in kept:
        for index, name in enumerate(node.input):
            if name in rename:
                node.input[index] = rename[name]
    used = {x for node in kept for x in node.input} | graph_outputs
    kept = [n for n in kept if not (cast_to(n) == FLOAT16 and n.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(kept)
    produced = {out for node in kept for out in node.output}
    stale = [v for v in graph.value_info if v.name not in produced]
    for value in stale:
        graph.value_info.remove(value)


def _topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so each comes after its producers (stable: keeps the original order where it can)."""
    ordered = _topological_order(graph)
    del graph.node[:]
    graph.node.extend(ordered)


def _topological_order(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    available = {i.name for i in graph.input} | {init.name for init in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        remaining = []
        for node in pending:
            if all(x in available for x in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                remaining.append(node)
        if len(remaining) == len(pending):
            raise CompressionError(
                f"fp16 conversion left a graph with a cycle or a dangling input at node {remaining[0].name}"
            )
        pending = remaining
    return ordered
