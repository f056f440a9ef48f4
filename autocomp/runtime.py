"""onnxruntime helpers that score the artifact that ships: sessions, predictors, accuracy, size and calibration data.

The search measures accuracy on the exact ONNX file it will deliver (after
quantization), never on a PyTorch stand-in, so these helpers are the only way
the rest of autocomp runs an ONNX model.
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from autocomp.errors import ConfigError, first_line
from autocomp.tasks.base import Predict, Task

_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}
_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
}
_QUANT_OPS = ("DequantizeLinear", "QuantizeLinear")
_INTEGER_KERNELS = ("MatMulInteger", "ConvInteger")  # input 1: the int8 weight; inputs 2-3: zero points


def onnx_session(path: Path, *, threads: int | None = None) -> ort.InferenceSession:
    """A CPU onnxruntime session for ``path``; ``threads`` sets intra-op threads (None lets onnxruntime choose)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ONNX file {path} does not exist; export the model first")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
    if threads is not None:
        if threads < 0:
            raise ConfigError(f"threads={threads} is negative; use a positive count or None")
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = first_line(exc)
        raise ConfigError(f"onnxruntime cannot load {path}: {type(exc).__name__}: {first}") from exc


def onnx_predictor(path: Path, *, threads: int | None = None) -> Predict:
    """``predict(*numpy_inputs) -> first output``; each input is cast to the dtype the session declares.

    Casting lets a task feed int32 ids to an int64 graph or float32 images to a
    graph with float16 inputs without knowing how the file was produced.
    """
    session = onnx_session(path, threads=threads)
    declared = session.get_inputs()
    names = [i.name for i in declared]
    dtypes = [_NUMPY_TYPES.get(i.type) for i in declared]

    def predict(*inputs: np.ndarray) -> np.ndarray:
        if len(inputs) != len(declared):
            raise ConfigError(
                f"{Path(path).name} takes {len(declared)} inputs ({', '.join(names)}), got {len(inputs)}"
            )
        feeds = {}
        for name, dtype, value in zip(names, dtypes, inputs):
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            feeds[name] = np.ascontiguousarray(array if dtype is None else array.astype(dtype, copy=False))
        return session.run(None, feeds)[0]

    return predict


def evaluate_onnx(task: Task, path: Path) -> float:
    """The task's metric measured on the ONNX file itself (higher is better)."""
    from autocomp.tasks.base import score

    return score(task, onnx_predictor(path), what=f"the ONNX file {Path(path).name}")


@dataclass(frozen=True)
class OnnxStats:
    """What the file costs to ship: bytes on disk, weight count, content hash (the latency cache key)."""

    size_bytes: int
    params: int
    sha256: str
    path: Path | None = field(default=None, compare=False, repr=False)

    @functools.cached_property
    def zip_bytes(self) -> int:
        """The file deflated (zlib level 9): what shared weights save on disk and over the air.

        Computed on first use, while the file is there: deflating costs about 25 ms per MB, and most
        artifacts (prechecks, the sensitivity pass, screen snapshots, proposal pricing) never ask. No file and
        no bytes (a split plan's device part when the whole model runs on the server) deflate to nothing."""
        if self.path is None and self.size_bytes == 0:
            return 0
        return deflated_bytes(Path(self.path).read_bytes())


def onnx_stats(path: Path) -> OnnxStats:
    """Size, parameter count and SHA-256 of an ONNX file.

    ``params`` counts the elements of weight initializers: floating-point
    tensors (fp32, fp16...) and the integer tensors that a DequantizeLinear
    turns back into weights or that an integer kernel (MatMulInteger,
    ConvInteger: dynamic int8) multiplies by, so an int8 weight counts once,
    like its fp32 original. Quantization scales and zero points, integer shape
    constants and 0-d scalars are not parameters.
    """
    path = Path(path)
    data = path.read_bytes()
    model = onnx.load_from_string(data) if len(data) < 2**31 else onnx.load(str(path))
    graph = model.graph
    quant_aux = {name for node in graph.node if node.op_type in _QUANT_OPS for name in node.input[1:]}
    quant_aux |= {name for node in graph.node if node.op_type in _INTEGER_KERNELS for name in node.input[2:]}
    dequantized = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear" and node.input}
    integer_weights = {node.input[1] for node in graph.node if node.op_type in _INTEGER_KERNELS and len(node.input) > 1}
    dequantized |= integer_weights
    # quantize_dynamic names a weight W's int8 copy W_quantized and its (per-channel) float scale W_scale
    quant_aux |= {name.removesuffix("_quantized") + "_scale" for name in integer_weights}
    params = 0
    for init in graph.initializer:
        if init.name in quant_aux or not init.dims:
            continue
        if init.data_type in _FLOAT_TYPES or init.name in dequantized:
            params += int(np.prod(init.dims, dtype=np.int64))
    return OnnxStats(size_bytes=len(data), params=params, sha256=hashlib.sha256(data).hexdigest(), path=path)


def deflated_bytes(data: bytes) -> int:
    """The size of ``data`` deflated as ``zip -9`` would store it (the size objective: a file of shared weights,
    or of zeros, is no smaller raw, but is smaller to store and to send)."""
    return len(zlib.compress(data, 9))


def training_samples(task: Task, *, max_samples: int, max_batches: int | None = None) -> list[tuple[torch.Tensor, ...]]:
    """The first batches of ``task.train_batches()``, up to ``max_samples`` samples in all, as tensor tuples.

    Deterministic: the task's batch shuffling runs under a fixed torch seed
    without disturbing the caller's random state, so a trial's int8 file and
    its export check do not depend on what ran before it.
    """
    if max_samples < 1:
        raise ConfigError(f"max_samples={max_samples} must be at least 1")
    batches: list[tuple[torch.Tensor, ...]] = []
    taken = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for inputs, _labels in task.train_batches():
            if isinstance(inputs, torch.Tensor):
                inputs = (inputs,)
            room = max_samples - taken
            batch = tuple(x.detach()[:room] for x in inputs)
            batches.append(batch)
            taken += len(batch[0])
            if taken >= max_samples or (max_batches is not None and len(batches) >= max_batches):
                break
    if not batches:
        raise ConfigError("the task's train_batches() yielded no data; calibration and the export check need training samples")
    return batches


def calibration_inputs(task: Task, *, max_samples: int = 256) -> list[tuple[np.ndarray, ...]]:
    """Up to ``max_samples`` training samples as numpy batches (one tuple of arrays per batch, as the model takes them)."""
    return [
        tuple(np.ascontiguousarray(x.cpu().numpy()) for x in batch)
        for batch in training_samples(task, max_samples=max_samples)
    ]
