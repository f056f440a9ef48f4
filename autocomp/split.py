"""Edge/cloud split of an ONNX file: where it can be cut, and the two files a cut makes.

A cut is a point of the graph's node order where exactly one tensor crosses from the nodes before it
to the nodes after it (graph inputs that later nodes still read count as crossing: a two-input
transformer whose attention mask every layer reads has no cut inside its encoder). It is found from
the exported graph, never guessed, and named after the outermost PyTorch module that is complete at
that point (``layer1.0``: the exporter names nodes by module scope), so the names a study stores hold
for every student of one teacher: pruning and narrowing keep the module paths.

``mark_cut`` writes one file with a cut marked: the wire's encoding and decoding sit at the cut (fp32:
none; fp16: a Cast each way; uint8: QuantizeLinear with the range calibrated on the task's samples, then
DequantizeLinear), and its metadata names the cut (``marked`` reads it). That file computes what the two
parts compute, so a search scores it as the pair. ``halves`` cuts a marked file into the part before the
cut (``edge.onnx``, run on the device) and the part after it (``server.onnx``) with onnx's own
``onnx.utils.extract_model``, and a manifest (``split.json``); ``split_model`` does both. ``time_parts``
times every way to split a file once, so that each link only prices the transfer (``autocomp splits``).
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
from autocomp.onnx_meta import module_path

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


def _scopes(node_name: str) -> list[str]:
    """The module-scope prefixes of an exported node, outermost first: ``/layer1/layer1.0/relu_1/Relu`` ->
    [``/layer1``, ``/layer1/layer1.0``, ``/layer1/layer1.0/relu_1``] (the last segment is the op)."""
    parts = [p for p in node_name.split("/") if p]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts) - 1)]


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
    scopes = [_scopes(n.name) for n in nodes]
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
        name = module_path([p for p in closed[0].split("/") if p]) if closed else nodes[index].name.strip("/") or crossing[0]
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


META = "autocomp.split."
"""The metadata keys of a file whose cut is marked (``mark_cut``): ``after``, ``tensor``, ``wire``, ``bytes_per_sample``,
``scale``, ``zero_point``."""


@dataclass(frozen=True)
class Marked:
    """What a marked file's metadata says (``marked``)."""

    after: str
    tensor: str  # what travels: the cut's tensor (fp32) or its encoding (``<tensor>_sent``); "" when the input does
    wire: str
    bytes_per_sample: int
    scale: float | None = None  # int8 wire: real = scale * (q - zero_point)
    zero_point: int | None = None


def marked(model: onnx.ModelProto | str | Path) -> Marked | None:
    """The cut a file's metadata marks, or None: the whole file runs on the device."""
    model = onnx.load(str(model), load_external_data=False) if not isinstance(model, onnx.ModelProto) else model
    meta = {p.key[len(META):]: p.value for p in model.metadata_props if p.key.startswith(META)}
    if not meta:
        return None
    return Marked(
        after=meta["after"], tensor=meta["tensor"], wire=meta["wire"], bytes_per_sample=int(meta["bytes_per_sample"]),
        scale=float(meta["scale"]) if meta.get("scale") else None, zero_point=int(meta["zero_point"]) if meta.get("zero_point") else None,
    )


def mark_cut(
    onnx_path: Path, cut_name: str, out_path: Path, *, wire: str = "fp32", samples: Sequence[tuple[np.ndarray, ...]] = (),
) -> Path:
    """``onnx_path`` with a cut marked, written to ``out_path``: one file that computes what its two parts
    compute (the wire's encoding and decoding sit at the cut) and whose metadata names the cut, the tensor
    that travels and its bytes per sample. It scores as the pair does; ``halves`` cuts it into the pair.
    ``cut_name`` may be ``server`` (the input travels); ``samples`` (input arrays, batch first) fix an int8
    wire's range and are required for it."""
    if wire not in WIRES:
        raise PlanError(f"split/wire: {wire!r} is not one of {', '.join(WIRES)}")
    model = onnx.load(str(onnx_path))
    scale = zero_point = None
    if cut_name == ON_SERVER:
        tensor, wire, nbytes = "", "fp32", _input_bytes(model)
    else:
        cut = find_cut(model, cut_name)
        tensor, nbytes = cut.tensor, cut.bytes_sent(wire)
        if wire != "fp32":
            if wire == "int8" and not samples:
                raise PlanError("split/wire: int8 needs calibration samples to fix the activation's range")
            if wire == "int8":
                scale, zero_point = _uint8_params(*_range(onnx_path, model, cut.tensor, out_path.parent, samples))
            tensor = _encode(model, cut, wire, scale=scale, zero_point=zero_point)
    fields = {"after": cut_name, "tensor": tensor, "wire": wire, "bytes_per_sample": str(nbytes),
              "scale": "" if scale is None else repr(scale), "zero_point": "" if zero_point is None else str(zero_point)}
    for key, value in fields.items():
        model.metadata_props.add(key=META + key, value=value)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    onnx.checker.check_model(str(out_path))
    return out_path


def _range(
    onnx_path: Path, model: onnx.ModelProto, tensor: str, work: Path, samples: Sequence[tuple[np.ndarray, ...]],
) -> tuple[float, float]:
    """The (min, max) of ``tensor`` over ``samples``, zero included (onnxruntime's MinMax calibration's range)."""
    from autocomp.runtime import onnx_predictor

    work.mkdir(parents=True, exist_ok=True)
    head = work / f".{Path(onnx_path).stem}-range.onnx"
    onnx.utils.extract_model(str(onnx_path), str(head), _inputs(model), [tensor])
    try:
        edge = onnx_predictor(head)
        low = high = 0.0
        for sample in samples:
            out = np.asarray(edge(*sample))
            low, high = min(low, float(out.min())), max(high, float(out.max()))
    finally:
        head.unlink()
    return low, high


def _uint8_params(low: float, high: float) -> tuple[float, int]:
    scale = max((high - low) / 255.0, float(np.finfo(np.float32).tiny))
    return scale, int(np.clip(round(-low / scale), 0, 255))


def _encode(model: onnx.ModelProto, cut: Cut, wire: str, *, scale: float | None, zero_point: int | None) -> str:
    """Put the wire's encoding and decoding right after the cut; the nodes after it read the decoded tensor."""
    sent, received = f"{cut.tensor}_sent", f"{cut.tensor}_received"
    if wire == "fp16":
        nodes = [helper.make_node("Cast", [cut.tensor], [sent], to=TensorProto.FLOAT16),
                 helper.make_node("Cast", [sent], [received], to=TensorProto.FLOAT)]
    else:
        names = (f"{cut.tensor}_scale", f"{cut.tensor}_zero_point")
        model.graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), names[0]),
                                        numpy_helper.from_array(np.array(zero_point, np.uint8), names[1])])
        nodes = [helper.make_node("QuantizeLinear", [cut.tensor, *names], [sent]),
                 helper.make_node("DequantizeLinear", [sent, *names], [received])]
    after = list(model.graph.node)[cut.after_node + 1:]
    for node in after:
        for index, name in enumerate(node.input):
            if name == cut.tensor:
                node.input[index] = received
    before = list(model.graph.node)[: cut.after_node + 1]
    del model.graph.node[:]
    model.graph.node.extend([*before, *nodes, *after])
    return sent


@dataclass(frozen=True)
class SplitFiles:
    edge: Path
    server: Path
    manifest: Path
    mark: Marked


def device_part(path: Path) -> Any:
    """The ``runtime.OnnxStats`` of what the device stores of a marked file: its edge part, written beside it
    as ``device_part.onnx``; empty stats for the ``server`` end; None for a file that marks no cut."""
    from autocomp.runtime import OnnxStats, onnx_stats

    model = onnx.load(str(path), load_external_data=False)
    mark = marked(model)
    if mark is None:
        return None
    if mark.after == ON_SERVER:
        return OnnxStats(size_bytes=0, params=0, sha256="")
    return onnx_stats(_edge(Path(path), model, Path(path).parent / "device_part.onnx", mark))


def _inputs(model: onnx.ModelProto) -> list[str]:
    """The graph's real inputs: the names it lists as inputs that are not weights."""
    initializers = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


def _edge(marked_path: Path, model: onnx.ModelProto, out_path: Path, mark: Marked) -> Path:
    """The part of a marked file (``model``, loaded) before its cut, as exported: no inner shapes (a tool fixing
    the batch infers them)."""
    onnx.utils.extract_model(str(marked_path), str(out_path), _inputs(model), [mark.tensor])
    return _as_exported(out_path)


def _as_exported(path: Path) -> Path:
    part = onnx.load(str(path))
    del part.graph.value_info[:]
    onnx.save(part, str(path))
    onnx.checker.check_model(str(path))
    return path


def halves(marked_path: Path, out_dir: Path) -> SplitFiles:
    """``edge.onnx``, ``server.onnx`` and ``split.json`` of a file with a marked cut (not the ``server`` end:
    there the whole file is the server's), by onnx's own ``onnx.utils.extract_model``."""
    model = onnx.load(str(marked_path))
    mark = marked(model)
    if mark is None or mark.after == ON_SERVER:
        raise PlanError(f"{marked_path.name} marks no cut inside the model (split/after: {mark.after if mark else ON_DEVICE})")
    out_dir.mkdir(parents=True, exist_ok=True)
    edge, server = _edge(marked_path, model, out_dir / "edge.onnx", mark), out_dir / "server.onnx"
    onnx.utils.extract_model(str(marked_path), str(server), [mark.tensor], [o.name for o in model.graph.output])
    _as_exported(server)
    files = SplitFiles(edge=edge, server=server, manifest=out_dir / "split.json", mark=mark)
    files.manifest.write_text(json.dumps({**asdict(mark), "edge": edge.name, "server": server.name}, indent=2) + "\n")
    return files


def split_model(
    onnx_path: Path, cut_name: str, out_dir: Path, *, wire: str = "fp32", samples: Sequence[tuple[np.ndarray, ...]] = (),
) -> SplitFiles:
    """The two parts of ``onnx_path`` cut at ``cut_name`` with the activation sent as ``wire`` (``mark_cut``, then ``halves``)."""
    return halves(mark_cut(onnx_path, cut_name, out_dir / "marked.onnx", wire=wire, samples=samples), out_dir)


def composed(files: SplitFiles) -> Callable[..., np.ndarray]:
    """A predictor that runs the edge file, then the server file on its output: the split model as a whole."""
    from autocomp.runtime import onnx_predictor

    edge, server = onnx_predictor(files.edge), onnx_predictor(files.server)
    return lambda *inputs: server(edge(*inputs))


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
    input_bytes = _input_bytes(model)
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


def _input_bytes(model: onnx.ModelProto) -> int:
    """Bytes per sample of the graph's real inputs (what the ``server`` end sends)."""
    values = {v.name: v for v in model.graph.input}
    total = 0
    for name in _inputs(model):
        _, elements = _elements(values[name])
        total += elements * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(values[name].type.tensor_type.elem_type)).itemsize
    return total
