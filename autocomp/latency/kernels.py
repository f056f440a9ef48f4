"""Check the cost model's reading of a graph against the kernels onnxruntime really runs.

``runtime_kernels`` asks this machine's onnxruntime for its optimized graph (the
graph after fusion, layout transformation and Cast insertion, saved through
``SessionOptions.optimized_model_filepath``) and counts its kernels by kind;
``simulated_kernels`` counts the ops of ``graph.analyze`` the same way. Where
the two agree, the cost model prices the kernels that run, not the nodes in
the file. This is a development and benchmark check: onnxruntime takes 10-30 ms
to build a session, too slow for every estimate, and it only knows this machine.
``host_nchwc_block`` reads this CPU's NCHWc channel block, which ``autocomp
calibrate --device local`` records in the calibrated profile.
"""

from __future__ import annotations

import platform
import tempfile
from collections import Counter
from pathlib import Path

from autocomp.host import cpuinfo_flags
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


def runtime_kernels(onnx_path: Path, *, threads: int = 1) -> Counter[str]:
    """Kernels of onnxruntime's optimized graph of ``onnx_path`` on this machine (CPU provider), by kind."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="autocomp-kernels-") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3  # the optimized model comes with a warning that it is machine-specific
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(options.optimized_model_filepath, load_external_data=False)
    return Counter(kernel_kind(node.op_type) for node in model.graph.node if node.op_type not in _SKIP)


def simulated_kernels(graph: GraphCost) -> Counter[str]:
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
