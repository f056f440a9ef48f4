"""The ``estimate`` backend: milliseconds per call from a cost model over the ONNX graph.

The model is linear in per-graph features (see ``graph.feature_names``): a
per-call overhead, per-node overheads by precision, MACs by op kind and
precision, elements of element-wise work and bytes moved. Its coefficients
(milliseconds per unit) come from the device profile, in one of two forms:

* ``kind: linear`` -- fitted coefficients, written by ``autocomp calibrate``;
* ``kind: datasheet`` -- coefficients derived from the profile's peak
  throughput per precision and memory bandwidth, scaled by stated efficiency
  assumptions. A precision that is not accelerated is priced at the precision
  it ``runs_as`` (the Nano runs int8 layers as fp16, a Pi 4 runs fp16 as fp32)
  plus a per-node reformat overhead, so it is never cheaper than that precision.

It costs a few milliseconds per new file and microseconds per repeated one
(graph analysis is memoized by the file's hash), so a search can reject a plan
before fine-tuning it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from autocomp.cost_model import MAC_KINDS, PRECISIONS, feature_names
from autocomp.errors import LatencyError
from autocomp.latency.base import LatencyResult, check_onnx_file
from autocomp.latency.confidence import Confidence, assess
from autocomp.latency.graph import GraphCost, analyze, op_features

log = logging.getLogger(__name__)

_PRECISION_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}

# Unpriced-op counts of the latest estimates, readable by callers that only see LatencyResult.
FALLBACK_COUNTS: dict[str, int] = {}


@dataclass(frozen=True)
class EstimateResult(LatencyResult):
    """A ``LatencyResult`` from the cost model, with what it could not price exactly.

    ``unpriced_ops`` maps op types that the model does not know to how many
    nodes were priced by the element-wise fallback; ``fallback_ms`` is their
    share of ``median_ms``. Empty/0.0 means every op was priced by its own rule.
    """

    unpriced_ops: Mapping[str, int] = field(default_factory=dict)
    fallback_ms: float = 0.0
    batch_size: int = 1
    calibrated: bool = False
    error_class: str = ""  # the file's precision class (``confidence.precision_class``)
    error_pct: float | None = None  # p90 |error| of held-out files of that class; None: uncalibrated
    outside: tuple[str, ...] = ()  # why the file is outside the calibrated range (empty: inside)
    range_known: bool = True  # False: the calibration has no coverage record to check the file against

    @property
    def confidence(self) -> Confidence:
        return Confidence(self.error_class, self.error_pct, self.outside, self.range_known)


# --------------------------------------------------------------------------- coefficients


def _run_precision(profile, precision: str) -> str:
    spec = profile.precisions.get(precision)
    if spec is None:
        return "fp32"
    if spec.accelerated or precision == "fp32":
        return precision
    return spec.runs_as or "fp32"


def precision_map(profile) -> dict[str, str]:
    """Each precision -> the precision this device really computes it in (``runs_as`` when not accelerated)."""
    return {p: _run_precision(profile, p) for p in PRECISIONS}


def datasheet_coefficients(profile) -> dict[str, float]:
    """Milliseconds per feature unit derived from peak throughput, bandwidth and efficiency assumptions."""
    model = profile.cost_model
    bandwidth = profile.memory_bandwidth_gbps * model["memory_efficiency"]  # GB/s == bytes/ns
    coefficients = dict.fromkeys(feature_names(), 0.0)
    coefficients["call"] = model["call_overhead_us"] / 1000.0
    coefficients["nodes_view"] = model["view_overhead_us"] / 1000.0
    coefficients["nodes"] = model["elementwise_node_overhead_us"] / 1000.0
    coefficients["nodes_mac"] = max(0.0, model["node_overhead_us"] - model["elementwise_node_overhead_us"]) / 1000.0
    for precision in PRECISIONS:
        run = _run_precision(profile, precision)
        peak_gops = profile.precisions[run].peak_gops if run in profile.precisions else profile.precisions["fp32"].peak_gops
        if precision != "fp32":
            coefficients[f"nodes_mac_{precision}"] = 0.0 if run == precision else model["reformat_overhead_us"] / 1000.0
        for kind in MAC_KINDS:
            efficiency = model["depthwise_efficiency"] if kind == "dwconv" else model["compute_efficiency"]
            coefficients[f"gmacs_{kind}_{precision}"] = 2.0 / (peak_gops * efficiency) * 1000.0  # 1 GMAC = 2 Gop
        byte_ratio = _PRECISION_BYTES[run] / _PRECISION_BYTES[precision]
        coefficients[f"mbytes_{precision}"] = byte_ratio / bandwidth  # 1 MB at B GB/s = 1/B ms
        coefficients[f"melems_{precision}"] = 2 * _PRECISION_BYTES[run] / bandwidth  # read + write
        coefficients[f"mouts_{precision}"] = 0.0  # per-output work beyond MACs and bytes: only a calibration sees it
        coefficients[f"krows_{precision}"] = 0.0  # per-row kernel calls: likewise
    coefficients["mloads_nchwc"] = 0.0  # loads of MLAS's x86 NCHWc conv kernels: only a calibration sees them
    coefficients["mloads_int8_generic"] = 0.0  # likewise the im2col matrix of x86 int8 convs off the symmetric kernels
    coefficients["kpixels_int8_generic"] = 0.0  # and their output pixels
    for kind in ("conv", "dwconv"):  # x86 float convs outside NCHWc: likewise
        coefficients[f"gmacs_{kind}_plain"] = coefficients[f"gmacs_{kind}_fp32"]
    coefficients["kgroups_plain"] = 0.0  # and their per-group calls and im2col matrices: only a calibration sees them
    coefficients["mloads_plain"] = 0.0
    coefficients["gmacs_serial"] = 0.0  # the start of a multi-threaded op: only a calibration sees it
    coefficients["nodes_blocked_sum"] = 0.0  # a sum of NCHWc tensors beyond an Add's cost: only a calibration sees it
    for kind in ("conv", "dwconv"):  # x86 int8 convs off MLAS's symmetric kernels: priced as the others here
        coefficients[f"gmacs_{kind}_int8_generic"] = coefficients[f"gmacs_{kind}_int8"]
    # fp16 element-wise work in a scalar loop (onnxruntime's CPU Clip): assumed 4x the fp32 vector rate
    coefficients["melems_scalar"] = 4 * coefficients["melems_fp32"]
    return coefficients


def coefficients_for(profile) -> dict[str, float]:
    """The cost-model coefficients in force for ``profile`` (ms per feature unit)."""
    model = profile.cost_model
    if model.get("kind") == "linear":
        return dict(model["coefficients"])
    if model.get("kind") == "datasheet":
        return datasheet_coefficients(profile)
    raise LatencyError(f"device profile {profile.name!r} has no usable cost_model; run `autocomp calibrate --device {profile.name}`")


# --------------------------------------------------------------------------- estimating


def fp16_as_fp32(profile) -> bool:
    """onnxruntime on a device without fp16 arithmetic: fp16 layers run as fp32, their Casts are removed."""
    return profile.runtime.tool == "onnxruntime" and _run_precision(profile, "fp16") == "fp32"


def analyze_for(onnx_path: Path, profile, shapes: Mapping[str, tuple[int, ...]] | None = None) -> GraphCost:
    """The graph of ``onnx_path`` as ``profile``'s runtime runs it, at the profile's batch size."""
    runtime = profile.runtime
    return analyze(
        Path(onnx_path), batch_size=runtime.batch_size, shapes=shapes, tool=runtime.tool,
        fp16_as_fp32=fp16_as_fp32(profile), nchwc_block=runtime.nchwc_block, ask_runtime=asks_runtime(profile),
    )


def asks_runtime(profile) -> bool:
    """Does this machine's onnxruntime make the target's QDQ choices? An x86 CPU target (NCHWc layout) with
    onnxruntime's CPU provider, estimated on an x86 host: the same build's QDQ selectors decide on both."""
    from autocomp.latency.kernels import host_nchwc_block

    runtime = profile.runtime
    return (
        runtime.tool == "onnxruntime" and runtime.execution_provider == "CPUExecutionProvider"
        and runtime.nchwc_block > 0 and host_nchwc_block() > 0
    )


def _op_ms(op, coefficients: Mapping[str, float], precisions: Mapping[str, str] | None = None) -> float:
    return sum(coefficients[name] * value for name, value in op_features(op, precisions).items())


def estimate_ms(onnx_path: Path, profile, *, shapes: Mapping[str, tuple[int, ...]] | None = None) -> EstimateResult:
    """Estimate one file on one profile (``EstimateBackend.measure`` with input shapes)."""
    check_onnx_file(onnx_path)
    graph = analyze_for(onnx_path, profile, shapes)
    coefficients = coefficients_for(profile)
    precisions = precision_map(profile)
    features = graph.features(precisions)
    total_ms = sum(coefficients[name] * value for name, value in features.items())
    sure = assess(graph, features, profile.calibration)
    fallback_ms = sum(_op_ms(op, coefficients, precisions) for op in graph.ops if op.kind == "fallback")
    if graph.unpriced:
        for op_type, count in graph.unpriced.items():
            FALLBACK_COUNTS[op_type] = FALLBACK_COUNTS.get(op_type, 0) + count
        log.warning(
            "latency estimate of %s: %s priced by the element-wise fallback (%.3f ms)",
            Path(onnx_path).name,
            ", ".join(f"{t} x{n}" for t, n in sorted(graph.unpriced.items())),
            fallback_ms,
        )
    return EstimateResult(
        median_ms=total_ms,
        p90_ms=total_ms,
        runs=0,
        source=f"estimate:{profile.name}",
        unpriced_ops=dict(graph.unpriced),
        fallback_ms=fallback_ms,
        batch_size=graph.batch_size,
        calibrated=profile.is_calibrated,
        error_class=sure.error_class,
        error_pct=sure.error_pct,
        outside=sure.outside,
        range_known=sure.range_known,
    )


def estimate_layers(onnx_path: Path, profile) -> dict[str, float]:
    """Estimated milliseconds per layer (module path when the exporter recorded it, else node name).

    The per-call overhead is not attributed to any layer, so the values sum to
    a little less than ``estimate_ms``.
    """
    graph = analyze_for(onnx_path, profile)
    coefficients = coefficients_for(profile)
    precisions = precision_map(profile)
    layers: dict[str, float] = {}
    for op in graph.ops:
        layers[op.layer] = layers.get(op.layer, 0.0) + _op_ms(op, coefficients, precisions)
    return layers


class EstimateBackend:
    """``LatencyBackend`` over the profile's cost model; ``strict=True`` makes an unpriced op an error."""

    name = "estimate"

    def __init__(self, *, strict: bool = False, shapes: Mapping[str, tuple[int, ...]] | None = None) -> None:
        self.strict = strict
        self.shapes = dict(shapes or {})

    def measure(self, onnx_path: Path, profile) -> EstimateResult:
        result = estimate_ms(onnx_path, profile, shapes=self.shapes)
        if self.strict and result.unpriced_ops:
            kinds = ", ".join(sorted(result.unpriced_ops))
            raise LatencyError(f"the cost model cannot price op type(s) {kinds} in {Path(onnx_path).name}; drop --strict to use the counted fallback")
        return result
