"""One search trial: plan -> (cheap latency pre-check) -> compress -> ONNX -> accuracy, latency, size.

Everything a trial learns goes into its record (``record.TrialRecord``: plan, accuracy,
latency with its source, size, parameter count, ONNX hash, artifact path,
per-layer rows) so the report and ``autocomp export`` need nothing else.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import optuna
import torch
from torch import nn

from autocomp import knobs
from autocomp.compress.distill import DistillConfig
from autocomp.errors import AutocompError, TrialStopped
from autocomp.fidelity import screen_rule
from autocomp.latency.base import LatencyBackend, LatencyResult
from autocomp.pipeline import Artifact, build_artifact, compress_model, run_plan
from autocomp.plan import CompressionPlan, compressible_layers
from autocomp.profiles import DeviceProfile
from autocomp.record import TrialRecord
from autocomp.search_space import SearchSpace
from autocomp.tasks import Task, score, torch_predictor

log = logging.getLogger(__name__)

ACCURACY, LATENCY, SIZE = "accuracy", "latency_ms", "zip_bytes"
OBJECTIVES = (ACCURACY, LATENCY, SIZE)
"""A study's objectives; the size is the ONNX file deflated (``runtime.deflated_bytes``)."""
RAW_SIZE = "size_bytes"
"""The size objective of studies written before weight sharing: the file's raw bytes. They resume with it."""
DIRECTIONS = ("maximize", "minimize", "minimize")


PHASE_NAMES = {
    "precheck": "the latency pre-check", "finetune": "fine-tuning", "export": "export and quantization",
    "evaluate": "evaluation", "latency": "the latency measurement",
}


def phase_name(phase: str | None) -> str:
    """How a trial's recorded phase reads in a reason ("fine-tuning"); none recorded yet is its setup."""
    return PHASE_NAMES.get(phase, phase) if phase else "its setup"


@dataclass(frozen=True)
class SearchContext:
    """What stays fixed across the trials of one search."""

    task: Task
    teacher: nn.Module
    space: SearchSpace
    profile: DeviceProfile
    backend: LatencyBackend
    estimator: LatencyBackend
    out_dir: Path
    accuracy_floor: float | None
    latency_budget_ms: float | None
    seed: int = 0
    size_key: str = SIZE  # the study's size objective: ``SIZE``, or ``RAW_SIZE`` for a study that began with it

    @property
    def measures(self) -> bool:
        """True when latencies come from a real run (``--backend local`` or ``ssh``), not the estimator."""
        return self.backend is not self.estimator and self.backend.name != "estimate"

    @property
    def finetune(self) -> DistillConfig:
        return replace(self.space.finetune.distill, seed=self.seed)

    def trial_dir(self, number: int) -> Path:
        return self.out_dir / "trials" / f"{number:04d}"


def layer_rows(plan: CompressionPlan, teacher: nn.Module, artifact: Artifact, layer_ms: dict[str, float]) -> list[dict[str, Any]]:
    """Per-layer facts for the report: each knob's cells for the layer (``Knob.columns``) and what it costs."""
    from autocomp.compress.prune import channel_counts

    facts = knobs.LayerFacts(teacher=teacher, channels=artifact.channels, baseline_channels=channel_counts(teacher))
    cells: dict[str, dict[str, Any]] = {}
    for name, knob in knobs.KNOBS.items():  # every knob, searched or not: the table's columns stay the same
        for layer, values in knob.columns(plan[name], facts).items():
            cells.setdefault(layer, {}).update(values)
    columns = list(dict.fromkeys(column for row in cells.values() for column in row))
    return [
        {
            "layer": layer,
            "channels": artifact.channels.get(layer),
            "baseline_channels": facts.baseline_channels.get(layer),
            **{column: cells.get(layer, {}).get(column) for column in columns},
            "est_latency_ms": layer_ms.get(layer),
        }
        for layer in compressible_layers(teacher)
    ]


def layer_estimates(ctx: SearchContext, onnx_path: Path) -> dict[str, float]:
    try:
        from autocomp.latency.estimate import estimate_layers
    except ImportError:
        return {}
    try:
        return estimate_layers(onnx_path, ctx.profile)
    except AutocompError as exc:
        log.warning("per-layer estimate unavailable: %s", exc)
        return {}


def plan_structure(ctx: SearchContext, plan: CompressionPlan) -> nn.Module:
    """The plan's model as this search builds it (device rounding, the space's order and student), not fine-tuned."""
    return compress_model(
        ctx.task, ctx.teacher, plan, finetune=replace(ctx.finetune, steps=0), round_to=ctx.profile.channel_multiple,
        pipeline=ctx.space.pipeline, student=ctx.space.student, recipe=ctx.profile.int8_recipe,
    )


def precheck_latency(ctx: SearchContext, plan: CompressionPlan, number: int) -> LatencyResult:
    """Estimate the plan's latency before any fine-tuning (structure only; weights do not matter)."""
    model = plan_structure(ctx, plan)
    artifact = build_artifact(
        ctx.task, model, plan, ctx.trial_dir(number) / "precheck", recipe=ctx.profile.int8_recipe, calibration_samples=8
    )
    try:
        return ctx.estimator.measure(artifact.onnx_path, ctx.profile)
    finally:
        shutil.rmtree(artifact.onnx_path.parent)


def screen_score(ctx: SearchContext, plan: CompressionPlan, number: int) -> Callable[[nn.Module], tuple[float, float]]:
    """How the screen scores a snapshot of a trial's student: its ONNX file's metric and estimated latency."""
    from autocomp.runtime import evaluate_onnx

    def score_snapshot(model: nn.Module) -> tuple[float, float]:
        with torch.random.fork_rng(devices=[]):  # the trial's training goes on with its own random stream
            snapshot = knobs.as_deployed(model).eval()  # a copy: the training run keeps its model
            for module in snapshot.modules():
                module._forward_hooks.clear()  # distillation's feature hooks are the training run's, not the file's
            artifact = build_artifact(ctx.task, snapshot, plan, ctx.trial_dir(number) / "screen", recipe=ctx.profile.int8_recipe)
            try:
                return evaluate_onnx(ctx.task, artifact.onnx_path), ctx.estimator.measure(artifact.onnx_path, ctx.profile).median_ms
            finally:
                shutil.rmtree(artifact.onnx_path.parent)

    return score_snapshot


def step_hooks(*hooks: Callable[[int, float, nn.Module], None] | None) -> Callable[[int, float, nn.Module], None] | None:
    """One on-step hook that runs each given one in order (None when none is given)."""
    active = [hook for hook in hooks if hook is not None]
    if not active:
        return None

    def on_step(step: int, loss: float, model: nn.Module) -> None:
        for hook in active:
            hook(step, loss, model)

    return on_step


def early_stop_rule(ctx: SearchContext) -> Callable[[int, float, nn.Module], None] | None:
    """Stop a trial whose accuracy, after the first fine-tuning steps, is hopelessly below the floor."""
    spec = ctx.space.finetune
    if ctx.accuracy_floor is None or spec.early_stop_after_steps <= 0 or spec.early_stop_after_steps >= spec.distill.steps:
        return None

    def on_step(step: int, loss: float, model: nn.Module) -> None:
        if step != spec.early_stop_after_steps:
            return
        accuracy = score(ctx.task, torch_predictor(model), what=f"the student after {step} fine-tuning steps")
        model.train()
        if accuracy < ctx.accuracy_floor - spec.early_stop_max_drop:
            raise TrialStopped(
                f"stopped after {step} fine-tuning steps: accuracy {accuracy:.3f} is more than "
                f"{spec.early_stop_max_drop:.2f} below the floor {ctx.accuracy_floor:.3f}"
            )

    return on_step


def run_trial(ctx: SearchContext, trial: optuna.Trial, study: optuna.Study | None = None) -> list[float]:
    """Evaluate one trial's plan and return its objective values; raises to mark it failed or stopped."""
    started = time.perf_counter()
    plan = CompressionPlan.from_params(trial.params)
    TrialRecord.put(trial, plan=plan.to_params())
    if ctx.latency_budget_ms is not None:
        TrialRecord.put(trial, phase="precheck")
        estimate = precheck_latency(ctx, plan, trial.number)
        TrialRecord.put(trial, precheck_latency_ms=estimate.median_ms)
        if estimate.median_ms > ctx.latency_budget_ms:
            raise TrialStopped(
                f"rejected before fine-tuning: estimated {estimate.median_ms:.3f} ms exceeds the "
                f"{ctx.latency_budget_ms:g} ms budget"
            )
    torch.manual_seed(ctx.seed + trial.number)
    fine_tuning = time.perf_counter()
    try:
        result = run_plan(
            ctx.task,
            ctx.teacher,
            plan,
            ctx.trial_dir(trial.number),
            finetune=ctx.finetune,
            recipe=ctx.profile.int8_recipe,
            round_to=ctx.profile.channel_multiple,
            pipeline=ctx.space.pipeline,
            student=ctx.space.student,
            on_step=step_hooks(
                early_stop_rule(ctx),
                None if study is None else screen_rule(ctx, study, trial, score=screen_score(ctx, plan, trial.number)),
            ),
            on_phase=lambda name: TrialRecord.put(trial, phase=name),
        )
    except TrialStopped:  # stopped during fine-tuning: that time is still fine-tuning, not overhead
        TrialRecord.put(trial, timings_s={"finetune": time.perf_counter() - fine_tuning})
        raise
    torch.save(result.model.state_dict(), ctx.trial_dir(trial.number) / "model_state.pt")
    TrialRecord.put(trial, phase="latency")
    measuring = time.perf_counter()
    latency = ctx.backend.measure(result.artifact.onnx_path, ctx.profile)
    timings = {**result.timings_s, "latency": time.perf_counter() - measuring}
    sure = getattr(latency, "confidence", None)  # an estimate says how sure it is (``latency.confidence``)
    TrialRecord.put(
        trial,
        **result.summary(),
        latency_source=latency.source,
        **({} if sure is None else {"latency_sure": sure.text(), "latency_outside": list(sure.outside)}),
        latency_p90_ms=latency.p90_ms,
        latency_runs=latency.runs,
        **_split_parts(latency),
        layers=layer_rows(plan, ctx.teacher, result.artifact, layer_estimates(ctx, result.artifact.onnx_path)),
        seconds=time.perf_counter() - started,
        timings_s=timings,  # where the trial's time went (the benchmark's overhead profile)
    )
    set_constraints(trial, ctx, accuracy=result.accuracy, latency_ms=latency.median_ms)
    return [result.accuracy, latency.median_ms, float(getattr(result.artifact.on_device, ctx.size_key))]


def _split_parts(latency: LatencyResult) -> dict[str, Any]:
    """What a split plan's latency is made of (``latency.split.SplitResult``); nothing for a plan that runs on the device."""
    if not hasattr(latency, "bytes_sent"):
        return {}
    return {"bytes_sent": latency.bytes_sent, "split_ms": {"edge": latency.edge_ms, "transfer": latency.transfer_ms, "server": latency.server_ms}}


def set_constraints(trial: optuna.Trial, ctx: SearchContext, *, accuracy: float, latency_ms: float) -> None:
    """Budgets as Optuna 5 trial constraints (feasible when <= 0), so infeasible trials never sit on the front."""
    if ctx.accuracy_floor is not None:
        trial.set_constraint("accuracy_floor", ctx.accuracy_floor - accuracy)
    if ctx.latency_budget_ms is not None:
        trial.set_constraint("latency_budget", latency_ms - ctx.latency_budget_ms)
