"""Check the cost model's reading of a graph against the kernels onnxruntime really runs.

``runtime_kernels`` asks this machine's onnxruntime for its optimized graph (the
graph after fusion, layout transformation and Cast insertion, saved through
``SessionOptions.optimized_model_filepath``) and counts its kernels by kind;
``simulated_kernels`` counts the ops of ``graph.analyze`` the same way. Where
the two agree, the cost model prices the kernels that run, not the nodes in
the file. This is a development and benchmark check for every file: onnxruntime
takes 10-30 ms to build a session, and it only knows this machine.
``host_nchwc_block`` reads this CPU's NCHWc channel block, which ``autocomp
calibrate --device local`` records in the calibrated profile.

``runtime_choices`` is the estimator's use of the same optimized graph, for
quantized files on an x86 onnxruntime target: which nodes run as int8 kernels
and which Q/DQ nodes still run is onnxruntime's decision (its QDQ selectors,
its s8-to-u8 conversion, the DequantizeLinear it duplicates per consumer), and
another tool's QDQ layout makes decisions no hand-written rule foresaw: in
onnxruntime's own ``quantize_static`` output, a pointwise conv whose output
also feeds a residual sum stays a float Conv that dequantizes its weights on
every call. It costs one session per quantized file, cached with the analysis.
"""

from __future__ import annotations

import platform
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from autocomp.host import cpuinfo_flags

if TYPE_CHECKING:  # graph.py asks this module for the runtime's choices: only the type comes back
    from autocomp.latency.graph import GraphCost

_MAC = frozenset(
    {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "Gemm", "FusedGemm", "QGemm", "MatMul", "FusedMatMul",
     "MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat"}
)
# Same kernel under two names: onnxruntime's fused or channels-last op and the node it replaces.
_ALIASES = {"QLinearAdd": "Add", "NhwcMaxPool": "MaxPool", "QLinearAveragePool": "AveragePool",
            "QLinearGlobalAveragePool": "GlobalAveragePool"}
_SKIP = frozenset({"Identity", "Constant"})  # no kernel, or removed by every runtime


def kernel_kind(op_type: str) -> str:
    if op_type in _MAC:
        return "mac"
    return _ALIASES.get(op_type, op_type)


def optimized_graph(onnx_path: Path, *, threads: int = 1):
    """onnxruntime's optimized graph of ``onnx_path`` on this machine (CPU provider); external weights are not read."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="autocomp-kernels-") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3  # the optimized model comes with a warning that it is machine-specific
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath, load_external_data=False)


def runtime_kernels(onnx_path: Path, *, threads: int = 1) -> Counter[str]:
    """Kernels of onnxruntime's optimized graph of ``onnx_path`` on this machine (CPU provider), by kind."""
    model = optimized_graph(onnx_path, threads=threads)
    return Counter(kernel_kind(node.op_type) for node in model.graph.node if node.op_type not in _SKIP)


# Kernels that compute in int8 (the QLinear family, QGemm, the integer convs and matmuls).
_INT8_KERNEL = re.compile(r"^(QLinear.*|QGemm|ConvInteger|MatMulInteger|MatMulIntegerToFloat|DynamicQuantizeMatMul)$")
# onnxruntime names a node it rewrites after the original, with suffixes: "_token_<n>" (fusions, layout),
# "/duplicated" (a DequantizeLinear copied for its second consumer).
_SUFFIXES = re.compile(r"((_token_\d+)|(/duplicated))+$")
_ADDED = frozenset({"Transpose", "QuantizeLinear", "DequantizeLinear"})  # kernels it adds that the estimate prices


@dataclass(frozen=True)
class RuntimeChoices:
    """What onnxruntime runs of one file's nodes (``runtime_choices``), by original node name.

    ``present``: original node -> how many kernels of the optimized graph carry its name (0 when it
    was fused into another kernel or removed); ``int8``: original nodes that run as an int8 kernel;
    ``added``: (op type, original tensor whose size it works on) for each Transpose, QuantizeLinear
    or DequantizeLinear the runtime added (layout transposes, requantizations around them).
    """

    present: Mapping[str, int]
    int8: frozenset[str]
    added: tuple[tuple[str, str], ...]

    def runs(self, name: str) -> bool:
        return self.present.get(name, 0) > 0


def runtime_choices(onnx_path: Path, original) -> RuntimeChoices:
    """``RuntimeChoices`` of ``original`` (the file's ``onnx.ModelProto``, shape-inferred) from this machine's onnxruntime."""
    optimized = optimized_graph(onnx_path)
    first_output = {node.name: node.output[0] for node in original.graph.node if node.name and node.output}
    known = {v.name for v in (*original.graph.input, *original.graph.value_info, *original.graph.output)}
    producer = {out: node for node in optimized.graph.node for out in node.output}

    def base(node) -> str:
        return _SUFFIXES.sub("", node.name)

    def original_tensor(tensor: str, depth: int = 0) -> str:
        """The original tensor of the same size: an added kernel keeps its input's size."""
        while tensor not in known and depth < 64:
            node = producer.get(tensor)
            if node is None or not node.input:
                break
            if base(node) in first_output:
                return first_output[base(node)]
            tensor, depth = node.input[0], depth + 1
        return tensor

    present: Counter[str] = Counter()
    int8: set[str] = set()
    added: list[tuple[str, str]] = []
    for node in optimized.graph.node:
        name = base(node)
        if name in first_output:
            present[name] += 1
            if _INT8_KERNEL.match(node.op_type):
                int8.add(name)
        elif node.op_type in _ADDED and node.input:
            added.append((node.op_type, original_tensor(node.input[0])))
    return RuntimeChoices(present=dict(present), int8=frozenset(int8), added=tuple(added))


def simulated_kernels(graph: "GraphCost") -> Counter[str]:
    """The kernels the cost model prices in ``graph``, counted like ``runtime_kernels``."""
    return Counter(kernel_kind(op.op_type) for op in graph.ops if op.op_type not in _SKIP)


def kernel_mismatch(simulated: Counter[str], runtime: Counter[str]) -> dict[str, tuple[int, int]]:
    """Kinds whose counts differ: kind -> (simulated, onnxruntime)."""
    return {kind: (simulated[kind], runtime[kind]) for kind in sorted(set(simulated) | set(runtime)) if simulated[kind] != runtime[kind]}


def host_nchwc_block() -> int:
    """MLAS's NCHWc channel block on this CPU: 16 with AVX-512, 8 with AVX2, 0 without NCHWc (ARM)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return 0
    flags = cpuinfo_flags()
    if not flags:
        return 8  # x86 elsewhere than Linux: assume AVX2, the common case
    return 16 if "avx512f" in flags else 8 if "avx2" in flags else 0
