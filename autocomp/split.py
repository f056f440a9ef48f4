"""Edge/cloud split of an ONNX file: where it can be cut, and the two files a cut makes.

A cut is a point of the graph's node order where exactly one tensor crosses from the nodes before it
to the nodes after it (graph inputs that later nodes still read count as crossing: a two-input
transformer whose attention mask every layer reads has no cut inside its encoder). It is found from
the exported graph, never guessed, and named after the outermost PyTorch module that is complete at
that point (``layer1.0``: the exporter names nodes by module scope), so the names a study stores hold
for every student of one teacher: pruning and narrowing keep the module paths.

``split_model`` writes the part before the cut (``edge.onnx``, run on the device) and the part after it
(``server.onnx``) with onnx's own ``onnx.utils.extract_model``; the crossing activation goes over the
wire as fp32, as fp16 (a Cast at each end) or as uint8 (QuantizeLinear at the edge's end with the range
calibrated on the task's samples, DequantizeLinear at the server's start), and a manifest says which.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from autocomp.errors import PlanError

WIRES = ("fp32", "fp16", "int8")
"""How the crossing activation is sent: its bytes per element are 4, 2 and 1."""
WIRE_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
ON_DEVICE, ON_SERVER = "device", "server"
"""The two ends of ``split/after``: the whole model on the device (nothing sent), or on the server (the input sent)."""


@dataclass(frozen=True)
class Cut:
    name: str  # the PyTorch module complete at this point (``layer1.0``)
    tensor: str  # the one tensor that crosses
    after_node: int  # index of the last node before the cut
    shape: tuple[Any, ...]  # the tensor's shape; the first axis is the batch (a name when dynamic)
    elements: int  # per sample (every axis but the first)

    def bytes_sent(self, wire: str) -> int:
        """Bytes of the activation per sample on the wire."""
        return self.elements * WIRE_BYTES[wire]


def _module_path(node_name: str) -> list[str]:
    """The module-scope prefixes of an exported node, outermost first: ``/layer1/layer1.0/relu_1/Relu`` ->
    [``/layer1``, ``/layer1/layer1.0``, ``/layer1/layer1.0/relu_1``] (the last segment is the op)."""
    parts = [p for p in node_name.split("/") if p]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts) - 1)]


def _dotted(scope: str) -> str:
    """A scope as the PyTorch module path: ``/layer1/layer1.0`` -> ``layer1.0``, ``/blocks/blocks.0/expand/expand.0``
    -> ``blocks.0.expand.0`` (the exporter names a Sequential's child ``<its own segment>.<index>``)."""
    path, previous = "", ""
    for part in (p for p in scope.split("/") if p):
        path = path + part[len(previous):] if previous and part.startswith(previous + ".") else (f"{path}.{part}" if path else part)
        previous = part
    return path


def _elements(value_info: onnx.ValueInfoProto | None) -> tuple[tuple[Any, ...], int]:
    if value_info is None or not value_info.type.tensor_type.HasField("shape"):
        return (), 0
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value_info.type.tensor_type.shape.dim]
    rest = dims[1:]
    known = all(isinstance(d, int) and d > 0 for d in rest)
    return tuple(dims), math.prod(rest) if known else 0


def candidate_cuts(model: onnx.ModelProto | str | Path) -> list[Cut]:
    """Every cut of the graph, in node order (see the module doc); the ends ``device`` and ``server`` are not listed."""
    model = onnx.load(str(model)) if not isinstance(model, onnx.ModelProto) else model
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    infos = {v.name: v for v in (*graph.value_info, *graph.input, *graph.output)}
    # constants: initializers, and what nodes make of nothing else (Constant; a quantized file's weight
    # DequantizeLinear): each half recomputes them, so they never count as crossing
    constant = {i.name for i in graph.initializer}
    for node in graph.node:
        if all(not name or name in constant for name in node.input):
            constant.update(node.output)
    nodes = list(graph.node)
    produced = {i.name: -1 for i in graph.input if i.name not in constant}
    for index, node in enumerate(nodes):
        for out in node.output:
            if out and out not in constant:
                produced[out] = index
    last_use = {o.name: len(nodes) for o in graph.output}
    for index, node in enumerate(nodes):
        for name in node.input:
            if name in produced:
                last_use[name] = max(last_use.get(name, -1), index)
    scopes = [_module_path(n.name) for n in nodes]
    last_in_scope: dict[str, int] = {}
    for index, prefixes in enumerate(scopes):
        for prefix in prefixes:
            last_in_scope[prefix] = index
    outputs = {o.name for o in graph.output}
    cuts: list[Cut] = []
    seen: set[str] = set()
    for index in range(len(nodes) - 1):
        crossing = [t for t, at in produced.items() if at <= index and last_use.get(t, -1) > index]
        if len(crossing) != 1 or produced[crossing[0]] < 0 or crossing[0] in outputs:
            continue
        closed = [prefix for prefix in scopes[index] if last_in_scope[prefix] == index]
        if scopes[index] and not closed:
            continue  # inside a module (between a block's sum and its activation): no boundary a user cuts at
        if not scopes[index] and nodes[index].op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue  # a quantizer's own node at the graph's ends, not a layer of the model
        name = _dotted(closed[0]) if closed else nodes[index].name.strip("/") or crossing[0]
        if name in seen:
            continue
        seen.add(name)
        shape, elements = _elements(infos.get(crossing[0]))
        cuts.append(Cut(name=name, tensor=crossing[0], after_node=index, shape=shape, elements=elements))
    return cuts


def find_cut(model: onnx.ModelProto | str | Path, name: str) -> Cut:
    """The cut called ``name``; a name that is no cut of this file is a PlanError listing the cuts there are."""
    cuts = candidate_cuts(model)
    for cut in cuts:
        if cut.name == name:
            return cut
    listed = ", ".join(c.name for c in cuts) or "none"
    raise PlanError(f"split/after: {name!r} is not a cut of this model (exactly one tensor must cross there); cuts: {listed}")


@dataclass(frozen=True)
class SplitFiles:
    edge: Path
    server: Path
    manifest: Path
    cut: Cut
    wire: str
    scale: float | None = None  # int8 wire: real = scale * (q - zero_point)
    zero_point: int | None = None


def wire_range(edge_fp32: Path, samples: Sequence[tuple[np.ndarray, ...]]) -> tuple[float, float]:
    """The crossing activation's (min, max) over ``samples``, run through the fp32 edge file, zero included
    (as onnxruntime's MinMax calibration makes it)."""
    from autocomp.runtime import onnx_predictor

    edge = onnx_predictor(edge_fp32)
    low, high = 0.0, 0.0
    for sample in samples:
        out = np.asarray(edge(*sample))
        low, high = min(low, float(out.min())), max(high, float(out.max()))
    return low, high


def _uint8_params(low: float, high: float) -> tuple[float, int]:
    scale = max((high - low) / 255.0, float(np.finfo(np.float32).tiny))
    return scale, int(np.clip(round(-low / scale), 0, 255))


def split_model(
    onnx_path: Path, cut_name: str, out_dir: Path, *, wire: str = "fp32",
    samples: Sequence[tuple[np.ndarray, ...]] = (),
) -> SplitFiles:
    """Write ``edge.onnx``, ``server.onnx`` and ``split.json`` for the cut ``cut_name`` of ``onnx_path``.

    ``samples`` (input arrays, batch first) calibrate an int8 wire's range; they are required for it."""
    if wire not in WIRES:
        raise PlanError(f"split/wire: {wire!r} is not one of {', '.join(WIRES)}")
    if wire == "int8" and not samples:
        raise PlanError("split/wire: int8 needs calibration samples to fix the activation's range")
    out_dir.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(onnx_path))
    cut = find_cut(model, cut_name)
    inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    outputs = [o.name for o in model.graph.output]
    edge, server = out_dir / "edge.onnx", out_dir / "server.onnx"
    onnx.utils.extract_model(str(onnx_path), str(edge), inputs, [cut.tensor])
    onnx.utils.extract_model(str(onnx_path), str(server), [cut.tensor], outputs)
    for half in (edge, server):  # as exported: no inner shapes, so a tool that fixes the batch infers them anew
        part = onnx.load(str(half))
        del part.graph.value_info[:]
        onnx.save(part, str(half))
    scale = zero_point = None
    if wire == "fp16":
        _wrap(edge, server, cut.tensor, encode=[helper.make_node("Cast", [cut.tensor], ["wire"], to=TensorProto.FLOAT16)],
              decode=[helper.make_node("Cast", ["wire"], [cut.tensor], to=TensorProto.FLOAT)], wire_type=TensorProto.FLOAT16)
    elif wire == "int8":
        scale, zero_point = _uint8_params(*wire_range(edge, samples))
        constants = [numpy_helper.from_array(np.array(scale, np.float32), "wire_scale"),
                     numpy_helper.from_array(np.array(zero_point, np.uint8), "wire_zero_point")]
        _wrap(edge, server, cut.tensor,
              encode=[helper.make_node("QuantizeLinear", [cut.tensor, "wire_scale", "wire_zero_point"], ["wire"])],
              decode=[helper.make_node("DequantizeLinear", ["wire", "wire_scale", "wire_zero_point"], [cut.tensor])],
              wire_type=TensorProto.UINT8, constants=constants)
    for path in (edge, server):
        onnx.checker.check_model(str(path))
    files = SplitFiles(edge=edge, server=server, manifest=out_dir / "split.json", cut=cut, wire=wire, scale=scale, zero_point=zero_point)
    files.manifest.write_text(json.dumps(manifest(files), indent=2) + "\n")
    return files


def manifest(files: SplitFiles) -> dict[str, Any]:
    """What the two halves need to agree on: the cut, the tensor, its shape and how it travels."""
    return {
        "cut": files.cut.name, "tensor": files.cut.tensor, "shape": list(files.cut.shape), "wire": files.wire,
        "wire_tensor": files.cut.tensor if files.wire == "fp32" else "wire",
        "bytes_per_sample": files.cut.bytes_sent(files.wire), "scale": files.scale, "zero_point": files.zero_point,
        "edge": files.edge.name, "server": files.server.name,
    }


def _wrap(
    edge: Path, server: Path, tensor: str, *, encode: list, decode: list, wire_type: int, constants: list | None = None,
) -> None:
    """Put ``encode`` at the edge's output and ``decode`` at the server's input: both then carry ``wire``."""
    for path, nodes, front in ((edge, encode, False), (server, decode, True)):
        model = onnx.load(str(path))
        graph = model.graph
        ends = graph.input if front else graph.output
        old = next(v for v in ends if v.name == tensor)
        new = helper.make_tensor_value_info("wire", wire_type, [d.dim_param or d.dim_value for d in old.type.tensor_type.shape.dim])
        ends.remove(old)
        ends.append(new)
        graph.initializer.extend(constants or [])
        if front:
            nodes_now = list(graph.node)
            del graph.node[:]
            graph.node.extend([*nodes, *nodes_now])
        else:
            graph.node.extend(nodes)
        onnx.save(model, str(path))


def composed(files: SplitFiles) -> Callable[..., np.ndarray]:
    """A predictor that runs the edge file, then the server file on its output: the split model as a whole."""
    from autocomp.runtime import onnx_predictor

    edge, server = onnx_predictor(files.edge), onnx_predictor(files.server)
    return lambda *inputs: server(edge(*inputs))


def cut_table(cuts: Sequence[Cut]) -> list[dict[str, Any]]:
    return [{**asdict(c), "bytes_fp32": c.bytes_sent("fp32")} for c in cuts]


@dataclass(frozen=True)
class SplitParts:
    """One way to run a model across a link, timed: which part runs where and what each part costs."""

    cut: str  # a cut's name, or ``device`` / ``server`` (the whole model on one side)
    wire: str
    bytes_sent: int  # per inference
    edge_ms: float
    server_ms: float

    def over(self, link: Any) -> "SplitPrice":
        """The end-to-end price over ``link`` (a ``links.Link``); nothing is sent when all runs on the device."""
        return SplitPrice(self, 0.0 if self.cut == ON_DEVICE else link.transfer_ms(self.bytes_sent))


@dataclass(frozen=True)
class SplitPrice:
    parts: SplitParts
    transfer_ms: float

    @property
    def total_ms(self) -> float:
        return self.parts.edge_ms + self.transfer_ms + self.parts.server_ms


def time_parts(
    onnx_path: Path, *, device: Any, server: Any, wire: str, work_dir: Path, samples: Sequence[tuple[np.ndarray, ...]] = (),
) -> list[SplitParts]:
    """Every way to split ``onnx_path``, its two parts timed: ``device`` and ``server`` are (backend, profile)
    pairs whose backend's ``measure(file, profile)`` times a part. The two ends come first: the whole model
    on the device (nothing sent) and on the server (the input sent as it is). A link only prices the
    transfer (``SplitParts.over``), so one timing serves every link."""
    device_backend, device_profile = device
    server_backend, server_profile = server
    model = onnx.load(str(onnx_path))
    initializers = {t.name for t in model.graph.initializer}
    input_bytes = sum(_input_bytes(v) for v in model.graph.input if v.name not in initializers)
    parts = [
        SplitParts(ON_DEVICE, wire, 0, device_backend.measure(onnx_path, device_profile).median_ms, 0.0),
        SplitParts(ON_SERVER, "input", input_bytes, 0.0, server_backend.measure(onnx_path, server_profile).median_ms),
    ]
    for cut in candidate_cuts(model):
        files = split_model(onnx_path, cut.name, work_dir / cut.name, wire=wire, samples=samples)
        parts.append(SplitParts(
            cut.name, wire, cut.bytes_sent(wire), device_backend.measure(files.edge, device_profile).median_ms,
            server_backend.measure(files.server, server_profile).median_ms,
        ))
    return parts


def _input_bytes(value_info: onnx.ValueInfoProto) -> int:
    _, elements = _elements(value_info)
    itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type)).itemsize
    return elements * itemsize
