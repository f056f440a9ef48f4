"""Fitting a profile's cost-model coefficients to measurements of ONNX files.

``measure_variants`` times a set of files with a real backend (interleaved passes, re-timed until
they settle), ``fit_coefficients`` fits the linear cost model with non-negative least squares on
relative error, ``fit_quality`` scores it on held-out files (``split_by_base`` holds out whole base
models), and ``calibrated_profile``/``write_profile`` make and write the calibrated profile. What
the set is made of, and the run that builds, times and fits it, live in ``autocomp.calibration``:
this layer prices and times ONNX files and knows nothing of how they were made.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from autocomp.cost_model import feature_names

log = logging.getLogger(__name__)

# A variant's time is taken once two passes agree this closely on its lowest (see measure_variants).
SETTLE_PCT = 5.0
SETTLE_EXTRA_PASSES = 3  # at most this many passes beyond the fixed ones


# --------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    """One ONNX file of the calibration (or benchmark) set."""

    path: Path
    family: str  # architecture family: "zoo", "resnet", "mobilenet", ...
    base: str  # id of the base model (held-out splits keep a base's variants together)
    precision: str  # "fp32" | "fp16" | "int8" | "mixed"
    batch_size: int
    description: str = ""


# --------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class Sample:
    variant: Variant
    measured_ms: float  # the lowest of passes_ms
    features: dict[str, float]
    passes_ms: tuple[float, ...] = ()  # one time per pass over the set, in order
    graph: Any = None  # the analysed graph the features come from (``measure_variants`` keeps it: coverage reads its ops)


def measure_variants(
    variants: Sequence[Variant], *, profile, backend, progress: Callable[[int, int], None] | None = None, passes: int = 1,
    settle_pct: float | None = None, max_passes: int | None = None,
) -> list[Sample]:
    """Time every variant at its batch size and compute its cost-model features.

    A backend with ``measure_set`` (the local one) times each pass's files in
    one process, interleaved (see ``autocomp.latency.local``); another backend
    times them one by one. With ``passes`` > 1 the whole set is timed again
    after the previous pass and each variant keeps its lowest time: a slow
    spell of a shared host that outlasts one measurement rarely comes back
    minutes later for the same file. With ``settle_pct``, the variants whose
    two lowest times are still more than that far apart are timed again, pass
    after pass, until they agree or have ``max_passes`` times (default
    ``passes`` + ``SETTLE_EXTRA_PASSES``): a file whose every pass fell in a
    slow spell keeps a slow time otherwise (in one benchmark run a ResNet file
    timed one by one took 0.500, 0.583 and 0.371 ms, and 0.31 ms on each of
    three later tries). ``progress(done, total)`` counts files; ``total``
    grows when a settling pass starts.
    """
    from autocomp.latency.estimate import analyze_for, precision_map
    from autocomp.profiles import with_overrides

    precisions = precision_map(profile)
    at_batch = [with_overrides(profile, batch_size=variant.batch_size) for variant in variants]
    times_ms: list[list[float]] = [[] for _ in variants]
    limit = max(passes, max_passes if max_passes is not None else passes + SETTLE_EXTRA_PASSES)
    todo = list(range(len(variants)))
    done, total = 0, len(variants) * passes
    measure_set = getattr(backend, "measure_set", None)
    for pass_index in range(limit):
        if measure_set is not None:
            before = done

            def rounds_done(rounds: int, of: int) -> None:  # called during this pass only: ``before`` and ``todo`` are its own
                if progress is not None:
                    progress(before + len(todo) * rounds // of, total)

            results = measure_set([(variants[i].path, at_batch[i]) for i in todo], progress=rounds_done)
            for index, result in zip(todo, results):
                times_ms[index].append(result.median_ms)
            done += len(todo)
        else:
            for index in todo:
                times_ms[index].append(backend.measure(variants[index].path, at_batch[index]).median_ms)
                done += 1
                if progress is not None:
                    progress(done, total)
        if pass_index + 1 < passes:
            continue
        if settle_pct is None:
            break
        todo = [index for index, times in enumerate(times_ms) if not settled(times, settle_pct)]
        if not todo or pass_index + 1 == limit:
            break
        total += len(todo)
    graphs = [analyze_for(variant.path, profile_at) for variant, profile_at in zip(variants, at_batch)]
    return [
        Sample(variant, min(times), graph.features(precisions), tuple(times), graph)
        for variant, graph, times in zip(variants, graphs, times_ms)
    ]


def settled(times_ms: Sequence[float], settle_pct: float) -> bool:
    """Two of the times agree within ``settle_pct`` on the lowest."""
    if len(times_ms) < 2:
        return False
    lowest, second = sorted(times_ms)[:2]
    return second <= lowest * (1.0 + settle_pct / 100.0)


def fit_coefficients(
    samples: Sequence[Sample], *, prior: dict[str, float], ridge: float = 1e-3, robust_iterations: int = 4
) -> tuple[dict[str, float], list[str]]:
    """Non-negative least squares on relative error; features the set never exercises keep ``prior``.

    A small ridge pulls each fitted coefficient toward its prior so that
    features seen in few samples do not swing to extremes; a few rounds of
    Huber reweighting discount measurements that a busy machine inflated.
    """
    from scipy.optimize import nnls

    names = feature_names()
    X = np.array([[s.features[n] for n in names] for s in samples], dtype=float)
    y = np.array([s.measured_ms for s in samples], dtype=float)
    used = [j for j, n in enumerate(names) if np.any(X[:, j] > 0)]
    unfitted = [names[j] for j in range(len(names)) if j not in used]
    scale = X[:, used].max(axis=0)
    A0 = X[:, used] / scale / y[:, None]
    beta0 = np.array([prior[names[j]] for j in used]) * scale
    row_weights = np.ones(len(y))
    for _ in range(1 + robust_iterations):
        A = A0 * row_weights[:, None]
        b = row_weights.copy()
        if ridge > 0:
            weight = math.sqrt(ridge)
            A = np.vstack([A, weight * np.eye(len(used))])
            b = np.concatenate([b, weight * beta0])
        beta, _ = nnls(A, b, maxiter=50 * A.shape[1])
        residual = np.abs(A0 @ beta - 1.0)
        row_weights = np.sqrt(np.minimum(1.0, 0.1 / np.maximum(residual, 1e-9)))  # Huber at 10% relative error
    coefficients = dict(prior)
    for j, value in zip(used, beta / scale):
        coefficients[names[j]] = float(value)
    return coefficients, unfitted


def predict_ms(features: dict[str, float], coefficients: dict[str, float]) -> float:
    return float(sum(coefficients[n] * v for n, v in features.items()))


def fit_quality(samples: Sequence[Sample], coefficients: dict[str, float]) -> dict[str, float]:
    """Relative error of the model on ``samples``: median and p90 of |error| in %, share within ±10%."""
    if not samples:
        return {"n": 0}
    errors = np.array([abs(predict_ms(s.features, coefficients) / s.measured_ms - 1.0) * 100 for s in samples])
    return {
        "n": int(len(errors)),
        "median_abs_error_pct": round(float(np.median(errors)), 2),
        "p90_abs_error_pct": round(float(np.percentile(errors, 90)), 2),
        "within_10pct": round(float(np.mean(errors <= 10.0)), 3),
    }


def split_by_base(samples: Sequence[Sample], *, held_out: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    bases = sorted({s.variant.base for s in samples})
    random.Random(seed).shuffle(bases)
    n_out = max(1, round(len(bases) * held_out)) if len(bases) > 1 else 0
    out = set(bases[:n_out])
    return [s for s in samples if s.variant.base not in out], [s for s in samples if s.variant.base in out]


# --------------------------------------------------------------------------- the command


@dataclass
class CalibrationReport:
    device: str
    backend: str
    samples: int
    held_out: int
    median_abs_error_pct: float
    p90_abs_error_pct: float
    within_10pct: float
    path: Path
    unfitted: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    error_by_class: dict[str, dict[str, float]] = field(default_factory=dict)  # held-out, see ``confidence.error_by_class``

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def calibrated_profile(base, *, coefficients: dict[str, float], unfitted: list[str], calibration: dict[str, Any]):
    """``base`` with fitted linear coefficients and a calibration record (validated like a file)."""
    from autocomp.profiles import parse_profile, profile_to_dict

    data = profile_to_dict(base)
    data["cost_model"] = {
        "kind": "linear",
        "coefficients": {k: float(v) for k, v in coefficients.items()},
        "source": f"calibration {calibration['date']} {calibration['backend']}",
        **({"unfitted": unfitted} if unfitted else {}),
    }
    data["calibration"] = calibration
    return parse_profile(data)


def write_profile(profile, path: Path) -> Path:
    import yaml

    from autocomp.profiles import profile_to_dict

    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Calibrated by `autocomp calibrate --device {profile.name}`; delete this file to go back to the shipped profile.\n"
    path.write_text(header + yaml.safe_dump(profile_to_dict(profile), sort_keys=False, width=120))
    return path


def default_precisions(profile) -> tuple[str, ...]:
    """What a calibration builds each base model in: ours, and on onnxruntime also its own quantizer's int8."""
    ours = ("fp32", "fp16", "int8", "mixed")
    return ours + ("ort-int8",) if profile.runtime.tool == "onnxruntime" else ours


def on_this_host(profile):
    """``profile`` as this machine runs it: its CPU decides onnxruntime's conv layout (``runtime.nchwc_block``)."""
    from autocomp.latency.kernels import host_nchwc_block

    return dataclasses.replace(profile, runtime=dataclasses.replace(profile.runtime, nchwc_block=host_nchwc_block()))


__all__ = [
    "CalibrationReport", "Sample", "Variant", "calibrated_profile", "fit_coefficients", "fit_quality", "measure_variants",
    "predict_ms", "split_by_base", "write_profile",
]
