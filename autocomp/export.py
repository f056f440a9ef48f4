"""PyTorch -> ONNX export, validated against the PyTorch outputs.

The search scores the exported file, so an export that silently computes
something else would poison every number after it: each export is checked with
``onnx.checker`` and run in onnxruntime against PyTorch on the example inputs
(and on a second batch size when the batch axis is dynamic).

Exporter: the TorchScript-based exporter (``dynamo=False``) is the default. It
is deprecated in torch 2.13 but about 10-40x faster than the dynamo exporter on
our models (ResNetDigits 0.05-1.5 s vs 1.5-29 s, TinyEncoder 0.2-0.3 s vs
10-15 s, measured on the shared 2-core hosts), and the search exports once per
trial. ``dynamo=True`` stays available and ``layer_nodes`` handles both.

Per-layer bit-widths need to know which ONNX nodes compute which module's
weights. The exported nodes are stamped with their module path (node metadata
``autocomp.module``), resolved against the model's real module names at export
time; ``layer_nodes`` reads the stamp and falls back to the weight's
initializer name, the dynamo name scopes, or the TorchScript node-name scope
for files exported elsewhere.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from autocomp.errors import ExportError, first_line
from autocomp.onnx_meta import MODULE_KEY
from autocomp.targets import COMPRESSIBLE

log = logging.getLogger(__name__)


WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Ops a weight may flow through between its initializer and the node that uses it.
_WEIGHT_PASSTHROUGH = ("Transpose", "Cast", "Identity", "Reshape", "DequantizeLinear", "Unsqueeze")
_HINT = (
    "make forward() take and return tensors only, avoid Python control flow on tensor values, "
    "or try the other exporter (dynamo=True/False)"
)
_OPSET = 17
_TRACED_PATH_HINT = (
    "it matched on the example input, so the trace fixed one path: likely data-dependent Python control flow "
    "in forward() (an if on tensor values) or a value baked in at trace time; make it tensor code (torch.where) "
    "or use the dynamo exporter"
)
_TRACE_HINT = (
    "look for values baked in at trace time (TracerWarning) or loosen rtol/atol"
)


def export_onnx(
    model: nn.Module,
    example_inputs: tuple[Tensor, ...],
    path: Path,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = True,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    dynamo: bool = False,
    check_batches: Sequence[tuple[Tensor, ...]] = (),
) -> Path:
    """Export ``model`` (in eval mode) to one self-contained, checked and validated ONNX file.

    Input names default to ``forward()``'s parameter names; output names to
    ``output`` (or ``output_0``, ``output_1``, ... for several outputs). The
    model's train/eval flags and the example inputs are left as they were.

    Raises ExportError when torch cannot export the model (one line: exception
    type, first line of its message, a hint), when the file fails
    ``onnx.checker``, or when an onnxruntime output differs from PyTorch by more
    than ``atol + rtol * |torch|`` (naming the output, the difference and the
    tolerance).

    ``check_batches`` are real samples (the search passes a few training
    batches): a file that matches PyTorch on the example input but not on
    them was traced down one path of a data-dependent branch, which the
    message says.
    """
    path = Path(path)
    if isinstance(example_inputs, Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    names = list(input_names) if input_names is not None else _forward_names(model, len(example_inputs))
    if len(names) != len(example_inputs):
        raise ExportError(f"{len(names)} input names {names} for {len(example_inputs)} example inputs; give one name per input")

    started = time.perf_counter()
    with _eval_mode(model), torch.no_grad():
        reference = _flat_outputs(model(*example_inputs), model)
        outputs = list(output_names) if output_names is not None else (
            ["output"] if len(reference) == 1 else [f"output_{i}" for i in range(len(reference))]
        )
        if len(outputs) != len(reference):
            raise ExportError(
                f"{len(outputs)} output names {outputs} for {len(reference)} model outputs; give one name per output"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        _run_exporter(model, example_inputs, path, names, outputs, dynamic_batch=dynamic_batch, dynamo=dynamo)
        proto = onnx.load(str(path))
        _stamp_modules(proto, model)
        _save_single_file(proto, path)
        _check(path)
        _compare(model, example_inputs, path, outputs, rtol=rtol, atol=atol, where="the example input")
        if dynamic_batch:
            other = tuple(torch.cat([x, x[:1]], dim=0) for x in example_inputs)  # batch b+1, valid rows
            _compare(model, other, path, outputs, rtol=rtol, atol=atol, where="the example input")
            for i, batch in enumerate(check_batches, 1):
                _compare(
                    model, batch, path, outputs, rtol=rtol, atol=atol,
                    where=f"training batch {i} of {len(check_batches)}", hint=_TRACED_PATH_HINT,
                )
    log.debug("exported %s to %s in %.2f s (dynamo=%s)", type(model).__name__, path, time.perf_counter() - started, dynamo)
    return path


def layer_nodes(model: onnx.ModelProto | Path) -> dict[str, list[str]]:
    """Module path (``layer1.0.conv1``) -> names of the ONNX nodes that compute that layer's weights.

    Only Conv / ConvTranspose / Gemm / MatMul nodes with a constant weight
    operand count (an attention ``q @ k^T`` has none and is not a layer).
    """
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    mapping: dict[str, list[str]] = {}
    producers, constants = _constant_sources(proto.graph)
    for node in _weight_nodes(proto.graph):
        stamp = _metadata(node).get(MODULE_KEY)
        layer = stamp or next(iter(_candidates(node, producers, constants)), None)
        if layer:
            mapping.setdefault(layer, []).append(node.name)
    return mapping


# --- export ------------------------------------------------------------------------------------------------------


def _forward_names(model: nn.Module, count: int) -> list[str]:
    params = list(inspect.signature(model.forward).parameters.values())
    positional = [
        p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) >= count:
        return positional[:count]
    return [f"input_{i}" for i in range(count)]


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _flat_outputs(out: Any, model: nn.Module) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _flat_outputs(item, model)]
    if isinstance(out, dict):
        return [t for item in out.values() for t in _flat_outputs(item, model)]
    raise ExportError(not_tensors(model, out))


def check_outputs(model: nn.Module, example_inputs: tuple[Tensor, ...]) -> None:
    """Raise ExportError unless ``model(*example_inputs)`` returns tensors (a tuple or dict of them): checked
    before a search writes its study, so a model no exporter can write costs nothing."""
    was_training = model.training
    try:
        with torch.no_grad():
            _flat_outputs(model.eval()(*example_inputs), model)  # eval: a training step would move BatchNorm's statistics
    finally:
        model.train(was_training)


def not_tensors(model: nn.Module, out: Any) -> str:
    """The one line for a model whose forward() returns something that is not tensors (export and tracing both need them)."""
    return (
        f"{type(model).__name__}.forward() returns a {type(out).__name__}, not tensors; make it return a tensor "
        "(or a tuple or dict of tensors), e.g. with a wrapper module around the model"
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's prints, warnings and log lines, Python and C++ alike; they are logged at DEBUG.

    The TorchScript exporter prints its IR graph to the C-level stderr on
    failure, so file descriptors 1 and 2 are redirected, not just sys.stdout.
    """
    torch_onnx_log = logging.getLogger("torch.onnx")
    level = torch_onnx_log.level
    torch_onnx_log.setLevel(logging.ERROR)
    buffer = io.StringIO()
    caught: list[warnings.WarningMessage] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        saved = _redirect_fds(sink)
        try:
            with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                warnings.simplefilter("always")
                yield
        finally:
            _restore_fds(saved)
            torch_onnx_log.setLevel(level)
            sink.seek(0)
            text = buffer.getvalue() + sink.read().decode(errors="replace")
            text += "".join(f"{w.category.__name__}: {w.message}\n" for w in caught)
            if text.strip():
                log.debug("exporter output:\n%s", text.strip()[:20000])


def _redirect_fds(sink: Any) -> list[tuple[int, int]]:
    saved = []
    for fd in (1, 2):
        try:
            saved.append((fd, os.dup(fd)))
            os.dup2(sink.fileno(), fd)
        except OSError:  # no real descriptor (e.g. embedded interpreters): Python-level redirection still applies
            pass
    return saved


def _restore_fds(saved: list[tuple[int, int]]) -> None:
    for fd, copy in saved:
        os.dup2(copy, fd)
        os.close(copy)


def _run_exporter(
    model: nn.Module,
    example_inputs: tuple[Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    *,
    dynamic_batch: bool,
    dynamo: bool,
) -> None:
    try:
        with _quiet():
            common = {"input_names": input_names, "output_names": output_names}
            if dynamo:
                batch = tuple({0: torch.export.Dim.AUTO} for _ in example_inputs) if dynamic_batch else None
                extra = {"dynamo": True, "external_data": False, "dynamic_shapes": batch, "opset_version": 18, "verbose": False}
            else:
                axes = {name: {0: "batch"} for name in [*input_names, *output_names]} if dynamic_batch else None
                extra = {"dynamo": False, "dynamic_axes": axes, "opset_version": _OPSET, "do_constant_folding": True}
            torch.onnx.export(model, example_inputs, str(path), **common, **extra)
    except ExportError:
        raise
    except Exception as exc:  # any exporter failure becomes one line for the user
        first = first_line(exc)
        raise ExportError(f"cannot export {type(model).__name__} to ONNX: {type(exc).__name__}: {first}; {_HINT}") from exc


def _save_single_file(proto: onnx.ModelProto, path: Path) -> None:
    """Write the model as one file (weights inline) and remove any sidecar the exporter left."""
    sidecar = path.with_name(path.name + ".data")
    try:
        onnx.save_model(proto, str(path), save_as_external_data=False)
    except ValueError as exc:  # protobuf's 2 GB limit
        raise ExportError(f"cannot write {path} as one file: {exc}; the model is over 2 GB") from exc
    if sidecar.exists():
        sidecar.unlink()


def _check(path: Path) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        first = first_line(exc)
        raise ExportError(f"{path.name} fails onnx.checker: {first}; re-export with a supported opset or ops") from exc


def _compare(
    model: nn.Module,
    inputs: tuple[Tensor, ...],
    path: Path,
    output_names: list[str],
    *,
    rtol: float,
    atol: float,
    where: str,
    hint: str = _TRACE_HINT,
) -> None:
    from autocomp.runtime import onnx_session

    expected = [t.detach().cpu().numpy() for t in _flat_outputs(model(*inputs), model)]
    session = onnx_session(path)
    declared = [i.name for i in session.get_inputs()]
    feeds = {name: x.detach().cpu().numpy() for name, x in zip(declared, inputs)}
    try:
        got = session.run(None, feeds)
    except Exception as exc:
        first = first_line(exc)
        raise ExportError(
            f"onnxruntime cannot run {path.name} at batch {len(inputs[0])}: {type(exc).__name__}: {first}; "
            "shapes may be baked in at trace time (use dynamic_batch=False or avoid Python shape arithmetic)"
        ) from exc
    batch = len(inputs[0]) if inputs and inputs[0].dim() else 1
    for name, want, have in zip(output_names, expected, got):
        if want.shape != have.shape:
            raise ExportError(
                f"ONNX output {name!r} has shape {have.shape}, PyTorch {want.shape} at batch {batch} on {where}; "
                "a shape is baked in at trace time (avoid Python arithmetic on tensor sizes)"
            )
        if want.dtype.kind in "fc":
            diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
            bad = diff > atol + rtol * np.abs(want.astype(np.float64))
            if bad.any() or (np.isfinite(have) != np.isfinite(want)).any():
                worst = float(np.nanmax(diff)) if diff.size else float("nan")
                raise ExportError(
                    f"ONNX output {name!r} differs from PyTorch on {where} (batch {batch}): max abs difference "
                    f"{worst:.3g} exceeds the tolerance atol={atol:g} + rtol={rtol:g}*|value|; {hint}"
                )
        elif not np.array_equal(want, have):
            raise ExportError(f"ONNX output {name!r} differs from PyTorch on {where} (batch {batch}): integer values disagree; {hint}")


# --- layer <-> node mapping ----------------------------------------------------------------------------------------


def _metadata(node: onnx.NodeProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in node.metadata_props}


def _constant_sources(graph: onnx.GraphProto) -> tuple[dict[str, onnx.NodeProto], set[str]]:
    producers = {out: node for node in graph.node for out in node.output}
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    return producers, constants


def _weight_source(name: str, producers: dict[str, onnx.NodeProto], constants: set[str]) -> str | None:
    """The initializer/constant a value comes from through weight-only ops (Transpose, Cast, DQ...), else None."""
    for _ in range(8):
        if name in constants:
            return name
        node = producers.get(name)
        if node is None or node.op_type not in _WEIGHT_PASSTHROUGH or not node.input:
            return None
        name = node.input[0]
    return None


def _weight_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    producers, constants = _constant_sources(graph)
    for node in graph.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) < 2:
            continue
        operands = node.input[1:2] if node.op_type != "MatMul" else node.input[:2]
        if any(_weight_source(x, producers, constants) for x in operands):
            yield node


def _candidates(
    node: onnx.NodeProto, producers: dict[str, onnx.NodeProto], constants: set[str]
) -> Iterator[str]:
    """Module paths this node may belong to, most trustworthy first."""
    operands = node.input[1:2] if node.op_type != "MatMul" else node.input[:2]
    for operand in operands:
        source = _weight_source(operand, producers, constants)
        if source and source.endswith(".weight") and not source.startswith(("onnx::", "/")):
            yield source[: -len(".weight")]
    meta = _metadata(node)
    scopes = meta.get("pkg.torch.onnx.name_scopes")
    if scopes:  # dynamo: ['', 'layer1', 'layer1.0', 'layer1.0.conv1', 'conv2d']; the last entry is the op
        try:
            entries = [s for s in ast.literal_eval(scopes) if s]
        except (ValueError, SyntaxError):
            entries = []
        yield from reversed(entries[:-1])
    if node.name.startswith("/"):  # TorchScript: '/layer1/layer1.0/conv1/Conv'
        path = ""
        for part in node.name.strip("/").split("/")[:-1]:
            last = path.rsplit(".", 1)[-1] if path else ""
            if path and part.startswith(path + "."):
                path = part
            elif last and part.startswith(last + "."):
                path = path[: len(path) - len(last)] + part
            elif not path:
                path = part
            else:
                path = f"{path}.{part}"
        if path:
            yield path
        yield from _scope_variants(node.name)


def _scope_variants(name: str) -> Iterator[str]:
    """Every way to read a TorchScript scope as a module path (checked against real module names by the caller)."""
    parts = name.strip("/").split("/")[:-1]
    paths = [""]
    for part in parts:
        grown: list[str] = []
        for path in paths:
            segments = path.split(".") if path else []
            grown.append(part)
            grown.extend(".".join(segments[:k] + [part]) for k in range(1, len(segments) + 1))
        paths = list(dict.fromkeys(grown))[:64]
    yield from sorted(paths, key=len, reverse=True)


def _stamp_modules(proto: onnx.ModelProto, model: nn.Module) -> None:
    """Record on each weight node the module path it computes, resolved against the model's real module names."""
    compressible = {name for name, module in model.named_modules() if name and isinstance(module, COMPRESSIBLE)}
    producers, constants = _constant_sources(proto.graph)
    for node in _weight_nodes(proto.graph):
        layer = next((c for c in _candidates(node, producers, constants) if c in compressible), None)
        if layer is None:
            log.debug("ONNX node %s (%s) maps to no Conv/Linear module", node.name, node.op_type)
            continue
        for prop in list(node.metadata_props):
            if prop.key == MODULE_KEY:
                node.metadata_props.remove(prop)
        node.metadata_props.add(key=MODULE_KEY, value=layer)
