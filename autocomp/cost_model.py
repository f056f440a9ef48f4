"""The latency cost model's schema: its features and what a profile's ``cost_model:`` may say.

A leaf module (it imports only ``errors``): ``profiles`` validates a profile's coefficients with it
and the estimator (``latency.estimate``, ``latency.graph``) computes the same features, so a profile
loads without importing the ONNX analysis, and the two cannot disagree on a feature's name.
"""

from __future__ import annotations

from typing import Any, Mapping

from autocomp.errors import ConfigError

MAC_KINDS = ("conv", "dwconv", "gemm", "matmul")
PRECISIONS = ("fp32", "fp16", "int8")

_DATASHEET_KEYS = {
    "compute_efficiency": "fraction of peak throughput that dense conv/GEMM kernels reach at small batch",
    "depthwise_efficiency": "fraction of peak that depthwise/grouped convolutions reach",
    "memory_efficiency": "fraction of the memory bandwidth that kernels reach",
    "call_overhead_us": "fixed cost of one inference call",
    "node_overhead_us": "launch/dispatch cost of one Conv/Gemm node",
    "elementwise_node_overhead_us": "launch/dispatch cost of one element-wise node",
    "view_overhead_us": "cost of one reshape-like node",
    "reformat_overhead_us": "per-node cost of converting a precision the device does not accelerate",
}


def feature_names() -> list[str]:
    """The cost model's features, in a fixed order (coefficients are stored by these names).

    Node overheads are shared across precisions (one dispatch costs the same),
    with extras for fp16 and int8 MAC nodes (casts, requantization); per-precision
    node counts made the fit degenerate. ``mouts_<p>`` (millions of output
    elements of MAC ops) prices the per-output-pixel work that MACs miss: a
    stem conv with one input channel or a narrow (8-channel) layer does few
    MACs per output, and small-batch MLAS kernels are far from peak there.
    ``krows_<p>`` (thousands of output rows of dense convs with a kernel wider
    than 1x1, or with fewer input channels than a block) prices the per-call
    cost of MLAS's NCHWc and NCHW conv kernels, which compute one output row
    per call (other 1x1 and depthwise convs take other paths). Without it the
    fit traded ResNet (too fast) against MobileNet (too slow); with it
    benchmarks/latency_predictor.py went from 47% of unseen variants within
    +-10% to 87.5% and 92.7% (two test sets; 90.6%, 92.7% and 79.2% on
    three fresh sets once pruned channel counts got onnxruntime's layout
    rules, see ``latency.graph._NCHWC_ALIGNMENT``).
    """
    names = ["call", "nodes", "nodes_mac", "nodes_mac_fp16", "nodes_mac_int8", "nodes_view"]
    names += [f"gmacs_{k}_{p}" for k in MAC_KINDS for p in PRECISIONS]
    names += [f"melems_{p}" for p in PRECISIONS] + ["melems_scalar"]
    names += [f"mbytes_{p}" for p in PRECISIONS]
    names += [f"mouts_{p}" for p in PRECISIONS]
    names += [f"krows_{p}" for p in PRECISIONS]
    names += ["mloads_nchwc", "mloads_int8_generic", "kpixels_int8_generic", "gmacs_conv_int8_generic", "gmacs_dwconv_int8_generic"]
    names += ["gmacs_conv_plain", "gmacs_dwconv_plain", "kgroups_plain", "mloads_plain", "nodes_blocked_sum", "gmacs_serial"]
    return names


def validate_cost_model(data: Mapping[str, Any], *, where: str = "cost_model") -> dict[str, Any]:
    """Check a profile's ``cost_model`` mapping; errors name the key and the allowed values."""
    kind = data.get("kind")
    if kind == "linear":
        allowed = ("kind", "coefficients", "source", "unfitted")
        for key in data:
            if key not in allowed:
                raise ConfigError(f"{where}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
        coefficients = data.get("coefficients")
        if not isinstance(coefficients, Mapping):
            raise ConfigError(f"{where}.coefficients: expected a mapping feature -> ms, got {coefficients!r}")
        names = feature_names()
        for name, value in coefficients.items():
            if name not in names:
                raise ConfigError(f"{where}.coefficients: unknown feature {name!r}; allowed: {', '.join(names)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
                raise ConfigError(f"{where}.coefficients.{name}: expected a number >= 0 (ms per unit), got {value!r}")
        missing = [n for n in names if n not in coefficients]
        if missing:
            raise ConfigError(
                f"{where}.coefficients: missing feature {missing[0]!r} (every feature needs a coefficient; a calibration "
                "older than this version lacks it: run `autocomp calibrate` again, or delete the file to use the shipped profile)"
            )
        if not isinstance(data.get("source"), str) or not data["source"].strip():
            raise ConfigError(f"{where}.source: say where the coefficients come from (e.g. 'calibration 2026-11-23 local')")
        return {
            "kind": "linear",
            "coefficients": {n: float(coefficients[n]) for n in names},
            "source": data["source"],
            **({"unfitted": list(data["unfitted"])} if data.get("unfitted") else {}),
        }
    if kind == "datasheet":
        allowed = ("kind", "source", *_DATASHEET_KEYS)
        for key in data:
            if key not in allowed:
                raise ConfigError(f"{where}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
        out: dict[str, Any] = {"kind": "datasheet"}
        for key in _DATASHEET_KEYS:
            if key not in data:
                raise ConfigError(f"{where}: missing required key {key!r} ({_DATASHEET_KEYS[key]})")
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{where}.{key}: expected a number >= 0, got {value!r}")
            if key.endswith("efficiency") and not 0 < value <= 1:
                raise ConfigError(f"{where}.{key}: efficiency {value!r} must be in (0, 1]")
            out[key] = float(value)
        if not isinstance(data.get("source"), str) or not data["source"].strip():
            raise ConfigError(f"{where}.source: say where the efficiency assumptions come from")
        out["source"] = data["source"]
        return out
    raise ConfigError(f"{where}.kind: {kind!r} is not one of linear, datasheet")
