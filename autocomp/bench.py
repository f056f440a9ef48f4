"""``autocomp bench``: the samplers and the hand-made uniform plans, side by side in one run.

Every method gets the same task, space, device and fine-tuning budget, and the
same wall time: the uniform grid runs first, and each search then gets the
time the grid took (its sensitivity pass included), or ``budget_s`` when given.
The chosen model of every method, the grid's included, gets the same final
fine-tune before it is compared. Each (sampler, seed) is an ordinary study in
one SQLite file, so a killed benchmark resumes where it stopped. Compared by

* hypervolume of the feasible front, in the unit box between a perfect model
  and the reference point (accuracy at the floor, the baseline's latency, the
  baseline's size): each objective is scaled so that 1 is the reference;
* the best latency reached at or above the floor (the configuration
  ``search`` would choose);
* for the chosen models after their final fine-tune, accuracy on the ONNX file and latency
  measured with onnxruntime on this machine at the profile's thread count, all files timed
  in interleaved rounds in the same run, so load hits every method alike;
* the tool's own overhead per trial: wall time minus fine-tuning, evaluation
  and latency measurement (export and quantization count as overhead).
"""

from __future__ import annotations

import math
import resource
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from autocomp.objective import SearchContext
from autocomp.record import Baseline, StudyRecord, TrialRecord
from autocomp.study import (
    DEFAULT_SAMPLER,
    choose_trial,
    finished_trials,
    is_feasible,
    make_sampler,
    open_study,
    prepare_study,
    run_search,
    study_objectives,
)

UNIFORM = "uniform"


@dataclass
class MethodRun:
    """One study of the benchmark: a sampler at one seed, or the uniform grid."""

    method: str
    seed: int | None
    study: optuna.Study
    baseline: Baseline
    floor: float
    wall_s: float = 0.0  # this invocation's search time
    new_trials: frozenset[int] = frozenset()  # trials finished by this invocation (a resumed run skips the rest)
    measured_ms: float | None = None
    final: dict[str, Any] | None = None  # the chosen trial's final fine-tune (``final.final_finetune``)

    @property
    def chosen(self) -> FrozenTrial | None:
        if self.final is not None and self.final.get("promoted"):  # the final fine-tune lifted a faster trial over the floor
            return self.study.trials[self.final["trial"]]
        return choose_trial(self.study)[0]

    @property
    def shipped(self) -> tuple[float, Path] | None:
        """The accuracy and ONNX file this method ships: the final fine-tune's, or the trial's when it scored lower."""
        chosen = self.chosen
        if chosen is None:
            return None
        if self.final is not None and self.final["shipped"] == "final":
            return self.final["accuracy"], Path(self.final["artifact"])
        return chosen.values[0], Path(TrialRecord.of(chosen).artifact)

    def feasible(self) -> list[FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_feasible(t)]


def hypervolume(trials: Sequence[FrozenTrial], *, baseline: Baseline, floor: float, size_key: str = "zip_bytes") -> float:
    """Fraction of the unit box dominated by ``trials`` (feasible ones; see the module doc)."""
    from optuna._hypervolume import compute_hypervolume  # Optuna's WFG algorithm; no public API for it yet

    span = max(1e-12, 1.0 - floor)
    points = []
    for t in trials:
        accuracy, latency_ms, size_bytes = t.values
        point = ((1.0 - accuracy) / span, latency_ms / baseline.latency_ms, size_bytes / getattr(baseline, size_key))
        if all(v < 1.0 for v in point):
            points.append(point)
    if not points:
        return 0.0
    return float(compute_hypervolume(np.asarray(points), np.ones(3)))


def run_bench(
    ctx: SearchContext,
    *,
    storage: str,
    samplers: Sequence[str],
    seeds: Sequence[int],
    trials: int,
    settings: dict[str, Any],
    min_accuracy: str = "-1",
    uniform: Sequence[dict[str, Any]] = (),
    on_trial_end: Callable[[str, FrozenTrial], None] | None = None,
    budget_s: float | None = None,
    final: bool = True,
) -> list[MethodRun]:
    """Run (or resume) every study of the benchmark; returns them with the uniform grid last.

    ``uniform``: the hand-made plans (``anchors.uniform_grid``) evaluated as one more study, first; each
    search then stops starting trials after ``budget_s`` seconds, or (None) after the grid's wall
    time (stored, so a resumed bench keeps it), and at ``trials`` at the most. ``final``: every
    method's chosen trial gets the space's final fine-tune. The baseline is evaluated once and
    shared: every study compares against the same file.
    """
    runs: list[MethodRun] = []
    baseline_record: list[Baseline] = []

    def prepare(study: optuna.Study, run_ctx: SearchContext, method: str) -> tuple[SearchContext, Baseline]:
        if baseline_record and StudyRecord.of(study).baseline is None:
            StudyRecord.put(study, baseline=asdict(baseline_record[0]))
        run_ctx, baseline = prepare_study(run_ctx, study, settings={**settings, "sampler": method}, min_accuracy=min_accuracy)
        baseline_record[:] = [baseline]
        return run_ctx, baseline

    grid = None
    if uniform:
        study = open_study(storage=storage, study_name=UNIFORM, sampler=make_sampler("random", seed=0))
        # exactly the grid, each plan fine-tuned in full as a user's recipe is: no anchors, no sensitivity
        # pass, no proposals, and no early stop (a 75% cut that starts badly may still recover)
        grid_space = replace(ctx.space, proposals=0, finetune=replace(ctx.space.finetune, early_stop_after_steps=0))
        run_ctx, baseline = prepare(study, replace(ctx, space=grid_space, out_dir=ctx.out_dir / "runs" / UNIFORM), UNIFORM)
        if not study.get_trials(deepcopy=False):
            for params in uniform:  # queued, so run_search evaluates exactly these (and resumes them)
                study.enqueue_trial(params)
        grid = _timed_search(run_ctx, study, UNIFORM, None, baseline, n_trials=len(uniform), on_trial_end=_tagged(UNIFORM, on_trial_end), final=final)
        if budget_s is None:
            budget_s = StudyRecord.of(study).bench_wall_s
    for sampler in samplers:
        for seed in seeds:
            name = f"{sampler}-seed{seed}"
            study = open_study(storage=storage, study_name=name, sampler=make_sampler(sampler, seed=seed))
            run_ctx, baseline = prepare(study, replace(ctx, seed=seed, out_dir=ctx.out_dir / "runs" / name), sampler)
            runs.append(_timed_search(
                run_ctx, study, sampler, seed, baseline, n_trials=trials, on_trial_end=_tagged(name, on_trial_end),
                timeout_s=_left(study, budget_s), final=final,
            ))
    return runs + ([grid] if grid is not None else [])


def _left(study: optuna.Study, budget_s: float | None) -> float | None:
    """What is left of a study's time budget (a resumed search has spent some)."""
    if budget_s is None:
        return None
    return max(0.0, budget_s - (StudyRecord.of(study).bench_wall_s or 0.0))


def _timed_search(
    ctx: SearchContext, study: optuna.Study, method: str, seed: int | None, baseline: Baseline, *,
    n_trials: int, on_trial_end, timeout_s: float | None = None, final: bool = True,
) -> MethodRun:
    from autocomp.final import final_finetune

    before = {t.number for t in finished_trials(study)}
    # a study with all its trials runs nothing, and its time stays as it was: the grid's time is the searches'
    # budget, and a resumed bench that added the grid's bookkeeping to it gave every search time for one more trial
    runs = len(before) < n_trials and (timeout_s is None or timeout_s > 0)
    started = time.perf_counter()
    if runs:
        run_search(ctx, study, n_trials=n_trials, on_trial_end=on_trial_end, timeout_s=timeout_s)
    wall_s = time.perf_counter() - started
    new = frozenset(t.number for t in finished_trials(study)) - before
    if runs:
        # a study's time over every invocation that ran: what a resumed search has left, and the grid's budget;
        # it counts even when no trial finished (the sensitivity pass and the pricing can take a whole budget)
        StudyRecord.put(study, bench_wall_s=(StudyRecord.of(study).bench_wall_s or 0.0) + wall_s)
    run = MethodRun(method, seed, study, baseline, ctx.accuracy_floor, wall_s, new)
    if final:
        run.final = final_finetune(ctx, study, run.chosen)
    return run


def _tagged(name: str, callback: Callable[[str, FrozenTrial], None] | None):
    if callback is None:
        return None
    return lambda study, trial: callback(name, trial)


def measure_chosen(runs: Sequence[MethodRun], *, backend, profile, rounds: int = 3) -> float | None:
    """Time the baseline and every run's chosen model in interleaved rounds; keep each file's lowest median.

    Returns the baseline's latency and sets ``measured_ms`` on each run.
    """
    if not runs:
        return None
    files: dict[str, Path] = {"baseline": Path(runs[0].baseline.artifact)}
    for run in runs:
        shipped = run.shipped
        if shipped is not None:
            files[f"{run.method}-{run.seed}"] = shipped[1]
    best: dict[str, float] = {}
    for _ in range(rounds):
        for key, path in files.items():
            median_ms = backend.measure(path, profile).median_ms
            best[key] = min(best.get(key, math.inf), median_ms)
    for run in runs:
        run.measured_ms = best.get(f"{run.method}-{run.seed}")
    return best["baseline"]


def overhead(runs: Sequence[MethodRun]) -> dict[str, float]:
    """Where the time of the runs' trials went, in seconds summed over the runs that searched here.

    ``other`` is the wall time no trial phase accounts for: the sampler, the
    storage, the early-stopped trials' bookkeeping, per-layer estimates.
    """
    totals = dict.fromkeys(("finetune", "export", "evaluate", "latency"), 0.0)
    wall = 0.0
    for run in runs:
        if not run.new_trials:
            continue
        wall += run.wall_s
        for t in run.study.get_trials(deepcopy=False):
            if t.number not in run.new_trials:
                continue
            for phase, seconds in (TrialRecord.of(t).timings_s or {}).items():
                totals[phase] = totals.get(phase, 0.0) + seconds
    totals["other"] = max(0.0, wall - sum(totals.values()))
    totals["wall"] = wall
    return totals


def result_rows(runs: Sequence[MethodRun], *, baseline_measured_ms: float | None) -> list[dict[str, Any]]:
    """One CSV row per run."""
    rows = []
    for run in runs:
        chosen = run.chosen
        base, record = run.baseline, TrialRecord.of(chosen) if chosen is not None else TrialRecord()
        feasible = run.feasible()
        rows.append(
            {
                "method": run.method,
                "seed": "" if run.seed is None else run.seed,
                "trials": len(finished_trials(run.study)),
                "feasible": len(feasible),
                "hypervolume": hypervolume(feasible, baseline=base, floor=run.floor, size_key=study_objectives(run.study)[2]),
                "chosen_trial": "" if chosen is None else chosen.number,
                "chosen_accuracy": "" if chosen is None else chosen.values[0],
                "chosen_latency_ms": "" if chosen is None else chosen.values[1],
                "chosen_size_bytes": _blank(record.size_bytes),
                "chosen_zip_bytes": _blank(record.zip_bytes),
                "final_accuracy": "" if run.final is None else run.final["accuracy"],
                "shipped_accuracy": "" if run.shipped is None else run.shipped[0],
                "latency_source": _blank(record.latency_source),
                "baseline_accuracy": base.accuracy,
                "baseline_latency_ms": base.latency_ms,
                "baseline_size_bytes": base.size_bytes,
                "measured_ms": "" if run.measured_ms is None else run.measured_ms,
                "baseline_measured_ms": "" if baseline_measured_ms is None else baseline_measured_ms,
                "wall_s": round(run.wall_s, 2),
            }
        )
    return rows


def _blank(value: Any) -> Any:
    """A CSV cell: what the record holds, empty where it holds nothing."""
    return "" if value is None else value


def summarize(rows: Sequence[dict[str, Any]], *, default_sampler: str = DEFAULT_SAMPLER) -> dict[str, Any]:
    """Per method: median hypervolume and best latency over seeds; the issue's targets, met or not."""
    methods: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = methods.setdefault(
            row["method"], {"hypervolume": [], "latency_ms": [], "measured_ms": [], "accuracy": [], "shipped_accuracy": [], "wall_s": []}
        )
        entry["hypervolume"].append(row["hypervolume"])
        entry["wall_s"].append(row["wall_s"])
        if row["chosen_latency_ms"] != "":
            entry["latency_ms"].append(row["chosen_latency_ms"])
            entry["accuracy"].append(row["chosen_accuracy"])
            entry["shipped_accuracy"].append(row.get("shipped_accuracy") or row["chosen_accuracy"])
        if row["measured_ms"] != "":
            entry["measured_ms"].append(row["measured_ms"])
    table = {
        method: {key: (statistics.median(values) if values else None) for key, values in entry.items()}
        | {"runs": len(entry["hypervolume"])}
        for method, entry in methods.items()
    }
    samplers = [m for m in table if m != UNIFORM]
    best_sampler = max(samplers, key=lambda m: table[m]["hypervolume"], default=None)
    return {"methods": table, "best_sampler": best_sampler, "default_sampler": default_sampler}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
