"""The precisions a plan's ``bits/<layer>`` may take, in one torch-free place (plans, profiles, the report).

32, 16 and 8 are fp32, fp16 and static int8 (calibrated QDQ); ``"dyn8"`` is dynamic int8:
int8 weights, each activation quantized at run time (onnxruntime's ``quantize_dynamic``).
Studies store these values, so they are stable.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable

DYNAMIC_INT8 = "dyn8"
SUPPORTED_BITS = (32, 16, 8, DYNAMIC_INT8)
PRECISION_NAMES = {32: "fp32", 16: "fp16", 8: "int8", DYNAMIC_INT8: "int8-dyn"}


def precision(value: Any) -> int | str | None:
    """A ``bits/`` value in its canonical form (32, 16, 8 or ``"dyn8"``), None when it is none of them.

    Studies store the integers as ints or floats (Optuna's categorical choices), YAML may give "8".
    """
    if isinstance(value, str):
        text = value.strip()
        return DYNAMIC_INT8 if text == DYNAMIC_INT8 else precision(int(text)) if text.isdigit() else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or int(value) != value:
        return None
    return int(value) if int(value) in SUPPORTED_BITS else None


def precision_mix(values: Iterable[Any]) -> str:
    """``bits/`` values as a short mix, widest first: ``fp32×2 int8-dyn×12`` (empty for none)."""
    counts = Counter(precision(v) for v in values)
    return " ".join(f"{PRECISION_NAMES[p]}×{counts[p]}" for p in SUPPORTED_BITS if counts.get(p))


def weight_bits(value: Any) -> float:
    """The bits a layer's weights are stored in (dyn8: 8), NaN for an unknown value: a plot's bar height."""
    canonical = precision(value)
    return math.nan if canonical is None else 8 if canonical == DYNAMIC_INT8 else float(canonical)
