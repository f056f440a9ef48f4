"""How sure an estimate is: the calibration's error on files like it, and whether the file is inside what it saw.

A calibration (``autocomp calibrate``) records two things beside its coefficients:

* ``coverage`` -- what its training files contained: every op type the analysis
  priced, and for every cost-model feature the largest value one file had. A file
  with an op type or a feature the set never had is priced by coefficients no
  measurement fixed (a prior, or a neighbour's rate); a file with more than
  ``RANGE_FACTOR`` times the largest calibrated value of a feature is an
  extrapolation. Either makes the estimate "outside the calibrated range", and
  says which.
* ``error_by_class`` -- the held-out part's error per precision class
  (``precision_class``: what the multiply-add ops of a file compute in), so an
  estimate carries the error of files like it, not the set's average: on the
  development machine int8 files were priced worse than fp32 ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

# A feature beyond this multiple of the largest value a calibrated file had is an extrapolation.
RANGE_FACTOR = 2.0
# Below this many held-out files a class's error is not stated; the set's overall error is.
MIN_CLASS_FILES = 3


@dataclass(frozen=True)
class Confidence:
    """``error_pct``: 90th percentile of |error| of held-out files of ``error_class`` (None: no calibration);
    ``outside``: why the file is outside the calibrated range, one short phrase each (empty: inside)."""

    error_class: str
    error_pct: float | None
    outside: tuple[str, ...] = ()
    range_known: bool = True  # False: the calibration predates its coverage record, so no range was checked

    def text(self) -> str:
        """One phrase for a CLI line or a report cell."""
        if self.error_pct is None:
            sure = "error unknown (no calibration of this device's cost model)"
        else:
            sure = f"±{self.error_pct:.0f}% for 9 in 10 held-out {self.error_class} files"
        if self.outside:
            return f"outside the calibrated range ({'; '.join(self.outside)}); {sure} inside it"
        if not self.range_known:
            return f"{sure}; calibrated range not recorded (a calibration older than this version: run `autocomp calibrate` again)"
        return sure


def precision_class(ops: Iterable) -> str:
    """What a file's multiply-add ops compute in: int8 and fp16 layers both (mixed), else int8 layers (int8,
    fp32 layers allowed: another tool's int8 file keeps some convs in float), else fp16 layers, else fp32."""
    precisions = {op.precision for op in ops if op.kind in ("conv", "dwconv", "gemm", "matmul")}
    if {"int8", "fp16"} <= precisions:
        return "mixed"
    return "int8" if "int8" in precisions else "fp16" if "fp16" in precisions else "fp32"


def coverage(graphs: Sequence, features: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """The ``coverage`` record of a calibration's training files (their analyzed graphs and features)."""
    op_types = sorted({op.op_type for graph in graphs for op in graph.ops})
    names = sorted({name for row in features for name in row})
    largest = {name: max(float(row.get(name, 0.0)) for row in features) for name in names}
    return {"op_types": op_types, "features_max": {name: round(value, 9) for name, value in largest.items() if value > 0}}


def error_by_class(classes: Sequence[str], errors_pct: Sequence[float]) -> dict[str, dict[str, float]]:
    """Held-out |error| per precision class, and ``all``: files, median, p90, share within ±10%."""
    table: dict[str, dict[str, float]] = {}
    groups: dict[str, list[float]] = {"all": list(errors_pct)}
    for klass, error in zip(classes, errors_pct):
        groups.setdefault(klass, []).append(error)
    for klass, values in groups.items():
        if not values:
            continue
        array = np.abs(np.array(values, dtype=float))
        table[klass] = {
            "files": int(len(array)),
            "median_abs_error_pct": round(float(np.median(array)), 2),
            "p90_abs_error_pct": round(float(np.percentile(array, 90)), 2),
            "within_10pct": round(float(np.mean(array <= 10.0)), 3),
        }
    return table


def assess(graph, features: Mapping[str, float], calibration: Mapping[str, Any] | None) -> Confidence:
    """How sure the estimate of one analyzed graph is under a profile's ``calibration`` record."""
    klass = precision_class(graph.ops)
    outside: list[str] = [f"{op_type} x{count} has no cost rule" for op_type, count in sorted(graph.unpriced.items())]
    if not calibration:
        return Confidence(klass, None, tuple(outside))
    table = calibration.get("error_by_class") or {}
    row = table.get(klass) if (table.get(klass) or {}).get("files", 0) >= MIN_CLASS_FILES else None
    if row is None and table.get("all"):
        row, klass = table["all"], f"{klass} (too few of its class held out: all)"
    fit = calibration.get("fit") or {}
    error = row["p90_abs_error_pct"] if row else fit.get("p90_abs_error_pct")
    record = calibration.get("coverage")
    if not record:
        return Confidence(klass, error, tuple(outside), range_known=False)
    seen_ops = set(record.get("op_types") or ())
    new_ops = sorted({op.op_type for op in graph.ops} - seen_ops)
    if new_ops:
        outside.append(f"op type{'s' if len(new_ops) > 1 else ''} {', '.join(new_ops)} never calibrated")
    largest = record.get("features_max") or {}
    for name, value in sorted(features.items()):
        if value <= 0 or name == "call":
            continue
        top = largest.get(name)
        if top is None:
            outside.append(f"cost-model feature {name} never calibrated")
        elif value > RANGE_FACTOR * top:
            outside.append(f"cost-model feature {name} = {value:.3g}, over {RANGE_FACTOR:g}x the largest calibrated ({top:.3g})")
    return Confidence(klass, error, tuple(outside))
