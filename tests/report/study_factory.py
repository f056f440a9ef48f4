"""A realistic synthetic autocomp study, built in memory, for the report tests and the screenshot.

It writes the study's record through ``autocomp.record`` as the search does (so a key
the search no longer writes fails here too): study and trial records, constraints, failed
and pruned trials with a ``fail_reason``, trial start and end times,
without running any model: the numbers come from a small made-up cost model of a Jetson
Nano, where fp16 is accelerated and int8 is not, so the example report tells a
hardware-aware story.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from autocomp.record import StudyRecord, TrialRecord

# (layer, baseline output channels, parameters, baseline estimated fp32 latency in ms)
LAYERS: list[tuple[str, int, int, float]] = [
    ("conv1", 32, 896, 0.42),
    ("layer1.0.conv1", 32, 9_248, 0.61),
    ("layer1.0.conv2", 32, 9_248, 0.61),
    ("layer2.0.conv1", 64, 18_496, 0.48),
    ("layer2.0.conv2", 64, 36_928, 0.83),
    ("layer2.0.downsample.0", 64, 2_112, 0.09),
    ("layer3.0.conv1", 128, 73_856, 0.71),
    ("layer3.0.conv2", 128, 147_584, 1.12),
    ("fc", 10, 1_290, 0.02),
]
CLASSIFIER = "fc"  # output layer: its channels are the classes, never pruned
BASELINE_ACCURACY = 0.981
ACCURACY_FLOOR = 0.95
LATENCY_BUDGET_MS = 4.0
PRECISION_FACTOR = {32: 1.0, 16: 0.52, 8: 1.15}  # Jetson Nano: int8 is slower than fp16 (no int8 instructions)
VERSIONS = {"autocomp": "0.1.0", "python": "3.11.7", "torch": "2.13.0+cpu", "onnx": "1.23.2", "onnxruntime": "1.32.0", "optuna": "5.0.0"}
SAMPLER = "random"
STARTED_AT = datetime(2026, 11, 2, 14, 3, 0)
"""When the synthetic search's first trial starts; each trial runs its ``seconds`` then a pause."""
FAILED_TRIAL_S = 4.0
BETWEEN_TRIALS_S = 1.5

JETSON_NANO_PROFILE: dict[str, Any] = {
    "name": "jetson-nano",
    "description": "NVIDIA Jetson Nano 4 GB (Maxwell GPU, 128 CUDA cores), TensorRT 8, MAXN clocks",
    "precisions": {
        "fp32": {"peak_gops": 236.0, "accelerated": False, "source": "datasheet: Jetson Nano module DA_09366"},
        "fp16": {"peak_gops": 472.0, "accelerated": True, "source": "datasheet: Jetson Nano module DA_09366"},
        "int8": {"peak_gops": 236.0, "accelerated": False, "source": "Maxwell has no int8 dot-product instructions"},
    },
    "memory_bandwidth_gbps": 25.6,
    "unstructured_sparsity_speedup": False,
    "structured_2to4_sparsity": False,
    "channel_multiple": 8,
    "calibration": {"date": "2026-11-02", "backend": "ssh:nano-01", "r2": 0.94},
}


def _distributions(layers: list[str]) -> dict[str, Any]:
    dists: dict[str, Any] = {f"prune/{name}": FloatDistribution(0.0, 0.7, step=0.05) for name in layers if name != CLASSIFIER}
    dists.update({f"bits/{name}": CategoricalDistribution([32, 16, 8]) for name in layers})
    dists["distill/width"] = CategoricalDistribution([0.5, 0.75, 1.0])
    return dists


def _round_to(channels: float, multiple: int) -> int:
    return max(multiple, int(round(channels / multiple)) * multiple)


def _evaluate(params: dict[str, Any], layers: list[tuple[str, int, int, float]], rng: np.random.Generator) -> dict[str, Any]:
    """Made-up but plausible objectives and per-layer rows for one plan."""
    width = float(params["distill/width"])
    rows, latency, size, n_params, damage = [], 0.15, 1_024, 0, 0.0
    for name, channels, layer_params, base_ms in layers:
        prune = float(params.get(f"prune/{name}", 0.0))
        bits = int(params[f"bits/{name}"])
        kept = 1.0 if name == CLASSIFIER else (1.0 - prune) * width
        new_channels = channels if name == CLASSIFIER else _round_to(channels * kept, 8)
        ratio = new_channels / channels
        layer_ms = base_ms * ratio**1.6 * PRECISION_FACTOR[bits]
        new_params = int(layer_params * ratio**1.7)
        latency += layer_ms
        size += new_params * bits // 8
        n_params += new_params
        damage += 0.04 * prune**2 + (0.004 if bits == 8 else 0.0004 if bits == 16 else 0.0)
        rows.append(
            {
                "layer": name,
                "prune_ratio": round(1.0 - ratio, 4) if name != CLASSIFIER else 0.0,
                "sparsity_ratio": 0.0,
                "bits": bits,
                "channels": new_channels,
                "baseline_channels": channels,
                "est_latency_ms": round(layer_ms, 4),
            }
        )
    damage += 0.06 * (1.0 - width) ** 2
    accuracy = float(np.clip(BASELINE_ACCURACY - damage + rng.normal(0, 0.003), 0.1, 0.995))
    latency *= float(rng.normal(1.0, 0.03))
    return {
        "accuracy": round(accuracy, 4),
        "latency_ms": round(latency, 3),
        "size_bytes": int(size),
        "params": n_params,
        "layers": rows,
    }


def _baseline(layers: list[tuple[str, int, int, float]]) -> dict[str, Any]:
    params: dict[str, Any] = {f"prune/{name}": 0.0 for name, *_ in layers if name != CLASSIFIER}
    params.update({f"bits/{name}": 32 for name, *_ in layers})
    params["distill/width"] = 1.0
    result = _evaluate(params, layers, np.random.default_rng(0))
    result["accuracy"] = BASELINE_ACCURACY
    result["latency_source"] = "estimate:jetson-nano"
    for row in result["layers"]:
        row["prune_ratio"] = 0.0
    return result


def _timed(trial: FrozenTrial, start: datetime, seconds: float) -> FrozenTrial:
    trial.datetime_start = start
    trial.datetime_complete = start + timedelta(seconds=seconds)
    return trial


def make_study(
    *,
    study_name: str = "resnet8-cifar-nano",
    n_trials: int = 48,
    seed: int = 7,
    task_name: str = "cifar10-resnet8",
    device_name: str = "jetson-nano",
    extra_layer: str | None = None,
    n_failed: int = 2,
    n_pruned: int = 2,
    versions: dict[str, str] | None = None,
    legacy: bool = False,
) -> optuna.Study:
    """An in-memory study following the report's data contract.

    ``extra_layer`` adds a layer with that (possibly hostile) name, to test escaping.
    ``n_trials`` counts complete trials; failed and pruned ones come on top. ``versions``
    replaces ``VERSIONS``; ``legacy`` writes the study as a search did before the seed, the
    sampler and the versions were recorded (``settings`` without them, no ``versions``).
    """
    layers = list(LAYERS)
    if extra_layer is not None:
        layers.insert(1, (extra_layer, 16, 464, 0.05))
    names = [name for name, *_ in layers]
    dists = _distributions(names)
    rng = np.random.default_rng(seed)
    profile = dict(JETSON_NANO_PROFILE, name=device_name)

    study = optuna.create_study(
        study_name=study_name,
        directions=["maximize", "minimize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=seed),
    )
    baseline = _baseline(layers)
    settings: dict[str, Any] = {"task": task_name, "device": device_name, "space": "cnn-default", "backend": "estimate"}
    if not legacy:
        settings.update(seed=seed, sampler=SAMPLER)
        StudyRecord.put(study, versions=dict(VERSIONS if versions is None else versions))
    StudyRecord.put(
        study, settings=settings, device=device_name, profile=profile, backend="estimate", task=task_name,
        space="cnn-default", baseline=baseline, objectives=["accuracy", "latency_ms", "size_bytes"],
        accuracy_floor=ACCURACY_FLOOR, latency_budget_ms=LATENCY_BUDGET_MS,
    )

    fail_at = set(rng.choice(np.arange(3, n_trials), size=n_failed + n_pruned, replace=False).tolist()) if n_trials > 3 else set()
    fail_slots = sorted(fail_at)[:n_failed]
    complete: list[tuple[int, dict[str, Any]]] = []
    number = 0
    clock = STARTED_AT
    for i in range(n_trials + n_failed + n_pruned):
        params: dict[str, Any] = {}
        for pname, dist in dists.items():
            if isinstance(dist, FloatDistribution):
                # Bias towards moderate pruning: most real searches converge there.
                params[pname] = float(np.clip(round(rng.beta(1.3, 3.0) * 0.7 / 0.05) * 0.05, 0.0, 0.7))
            else:
                params[pname] = dist.choices[rng.choice(len(dist.choices), p=[0.3, 0.5, 0.2] if pname.startswith("bits/") else None)]
        if i in fail_at:
            failed = i in fail_slots
            state = TrialState.FAIL if failed else TrialState.PRUNED
            reason = (
                "ExportError: ONNX outputs differ from PyTorch (max abs diff 3.1e-02 > tolerance 1e-03)"
                if failed
                else f"latency estimate {rng.uniform(4.5, 7):.2f} ms exceeds the budget {LATENCY_BUDGET_MS} ms before fine-tuning"
            )
            trial = create_trial(state=state, params=params, distributions=dists, user_attrs=TrialRecord.attrs(fail_reason=reason))
            study.add_trial(_timed(trial, clock, FAILED_TRIAL_S))
            clock += timedelta(seconds=FAILED_TRIAL_S + BETWEEN_TRIALS_S)
            number += 1
            continue
        result = _evaluate(params, layers, rng)
        constraints = {
            "accuracy_floor": round(ACCURACY_FLOOR - result["accuracy"], 4),
            "latency_budget": round(result["latency_ms"] - LATENCY_BUDGET_MS, 3),
        }
        digest = hashlib.sha256(repr(sorted(params.items())).encode()).hexdigest()
        seconds = round(float(rng.uniform(8, 25)), 2)
        trial = create_trial(
            values=[result["accuracy"], result["latency_ms"], result["size_bytes"]],
            params=params,
            distributions=dists,
            constraints=constraints,
            user_attrs=TrialRecord.attrs(
                latency_source=f"estimate:{device_name}",
                latency_p90_ms=round(result["latency_ms"] * 1.08, 3),
                params=result["params"],
                onnx_sha256=digest,
                artifact=f"runs/{study_name}/trial-{number:04d}/model.onnx",
                layers=result["layers"],
                seconds=seconds,
            ),
        )
        study.add_trial(_timed(trial, clock, seconds))
        clock += timedelta(seconds=seconds + BETWEEN_TRIALS_S)
        complete.append((number, result))
        number += 1

    feasible = [
        (n, r) for n, r in complete if r["accuracy"] >= ACCURACY_FLOOR and r["latency_ms"] <= LATENCY_BUDGET_MS
    ]
    close = [(n, r) for n, r in feasible if r["accuracy"] >= BASELINE_ACCURACY - 0.01]
    pool = close or feasible
    chosen = min(pool, key=lambda nr: nr[1]["latency_ms"])[0] if pool else None
    StudyRecord.put(study, chosen_trial=chosen, chosen_rule="fastest feasible trial within 1.0 point of baseline accuracy")
    return study


def make_empty_study(*, study_name: str = "nothing-finished", n_failed: int = 2) -> optuna.Study:
    """A study whose trials all failed: the report must say so, not crash."""
    study = optuna.create_study(study_name=study_name, directions=["maximize", "minimize", "minimize"])
    StudyRecord.put(study, device="raspberry-pi-4", task="digits-cnn")
    for i in range(n_failed):
        study.add_trial(
            create_trial(state=TrialState.FAIL, user_attrs=TrialRecord.attrs(fail_reason=f"CompressionError: attempt {i} pruned every channel"))
        )
    return study
