"""The final fine-tune: the chosen plan's model is fine-tuned longer before it ships.

A trial fine-tunes for the space's per-trial budget (60-400 steps); a user's
hand-made recipe fine-tunes the one model it keeps for hundreds. So once the
search has chosen, the chosen trial's own weights continue distilling for
``finetune.final_steps`` more steps, the model is exported, quantized and scored
on its ONNX file again, and its latency is taken by the search's backend. The
study records both the trial's and the final figures (``StudyRecord.final``); ``autocomp
export`` ships the final model, unless the longer fine-tune scored lower on the
held-out metric, in which case the trial's model stays the one shipped and the
record says so.

The trial's score is a low-fidelity figure: it says where a plan stands after
the per-trial budget, not after the final one. Plans that need more steps (whole
blocks removed) end their trial just under the floor while being much faster.
So before the chosen trial, the final fine-tune is given to the few trials that
are faster than it and under the floor by at most ``finetune.promote.within``
(``promotion_candidates``), fastest first, as Hyperband promotes the best of
a rung to the next fidelity. The first that reaches the floor after its final
fine-tune becomes the chosen trial (its record says ``promoted``, and the study's
``chosen_trial`` and rule change with it); when none does, the chosen trial's own
final fine-tune follows as before. Each try costs one final fine-tune; the record
lists them.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from optuna.trial import FrozenTrial, TrialState

from autocomp.errors import AutocompError, first_line
from autocomp.paths import in_run
from autocomp.record import StudyRecord, TrialRecord

log = logging.getLogger(__name__)


def final_dir(out_dir: Path) -> Path:
    return out_dir / "final"


def promotion_candidates(ctx, study, chosen: FrozenTrial | None) -> list[FrozenTrial]:
    """The trials the final fine-tune may still lift over the floor, fastest first.

    Complete, under the floor by at most ``finetune.promote.within``, faster than the chosen trial
    (both by their own trial's timing; than the baseline when nothing was chosen) and with their
    weights on disk; at most ``finetune.promote.candidates``. Only for the "fastest trial at the
    floor" rule: under a latency budget the choice is the most accurate plan, and speed buys nothing.
    """
    spec = ctx.space.finetune
    floor = ctx.accuracy_floor
    if spec.final_steps <= 0 or spec.promote_candidates <= 0 or floor is None or ctx.latency_budget_ms is not None:
        return []
    if chosen is not None:
        limit_ms = chosen.values[1]
    else:
        baseline = StudyRecord.of(study).baseline
        limit_ms = float("inf") if baseline is None or baseline.latency_ms is None else baseline.latency_ms
    near = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if floor - spec.promote_within <= t.values[0] < floor and t.values[1] < limit_ms
        and (in_run(TrialRecord.of(t).artifact or "", ctx.out_dir).parent / "model_state.pt").is_file()
    ]
    return sorted(near, key=lambda t: t.values[1])[: spec.promote_candidates]


def final_finetune(
    ctx, study, chosen: FrozenTrial | None, *, on_step: Callable[[int, int, int], None] | None = None
) -> dict[str, Any] | None:
    """The final fine-tune: of a promoted faster trial that reaches the floor, else of ``chosen``; stored as ``StudyRecord.final``.

    Returns the record of the model that ships, or None when the space asks for no final fine-tune
    or nothing was chosen and no promotion reached the floor. Done once per choice: a resumed search
    that chose the same trial reuses the record. ``on_step(step, steps, trial_number)``.
    """
    steps = ctx.space.finetune.final_steps
    if steps <= 0:
        return None
    chosen_number = None if chosen is None else chosen.number
    stored = StudyRecord.of(study).final
    if stored is not None and stored.get("chosen_before", stored.get("trial")) == chosen_number and stored.get("steps") == steps:
        if stored.get("promoted"):
            _adopt(study, stored)  # the search that resumed chose again, without the promotion
        return stored if stored.get("trial") is not None else None
    tried: list[dict[str, Any]] = []
    for trial in promotion_candidates(ctx, study, chosen):
        record = _finetune_trial(ctx, trial, steps, on_step)
        reached = record["accuracy"] >= ctx.accuracy_floor
        if reached and _faster_beside(ctx, study, chosen, record):
            record.update(shipped="final", promoted=True, chosen_before=chosen_number, tried=tried)
            StudyRecord.put(study, final=record)
            _adopt(study, record)
            return record
        kept = {k: record[k] for k in ("trial", "trial_accuracy", "accuracy", "seconds", "side_by_side_ms") if k in record}
        tried.append({**kept, "reason": "no faster side by side" if reached else "still under the floor"})
    if chosen is None:
        StudyRecord.put(study, final={"trial": None, "chosen_before": None, "steps": steps, "tried": tried})
        return None
    record = _finetune_trial(ctx, chosen, steps, on_step)
    # a longer fine-tune that scores lower on held-out inputs over-fitted the distillation data: ship the trial
    record.update(shipped="final" if record["accuracy"] >= chosen.values[0] else "trial", chosen_before=chosen_number, tried=tried)
    StudyRecord.put(study, final=record)
    return record


def _faster_beside(ctx, study, chosen: FrozenTrial | None, record: dict[str, Any]) -> bool:
    """With a measuring backend, the promoted model must beat the chosen trial's (the baseline's when none) timed
    side by side, as the choice's own figures were (``study.confirm_fastest``): each trial was timed at its own
    moment of a drifting host. The figures go into ``record``; the estimator prices them all the same way, so
    without a measurement the trials' own figures stand."""
    if not ctx.measures:
        return True
    from autocomp.latency.base import side_by_side

    baseline = StudyRecord.of(study).baseline
    rival = in_run((baseline and baseline.artifact or "") if chosen is None else TrialRecord.of(chosen).artifact, ctx.out_dir)
    if not rival.is_file():
        return True
    try:
        rival_result, promoted_result = side_by_side(ctx.backend, [rival, Path(record["artifact"])], ctx.profile)
    except AutocompError as exc:
        log.warning("the promoted trial could not be timed beside %s (%s); the trials' own timings decide", rival, first_line(exc))
        return True
    name = "baseline" if chosen is None else str(chosen.number)
    record["side_by_side_ms"] = {name: rival_result.median_ms, str(record["trial"]): promoted_result.median_ms}
    return promoted_result.median_ms < rival_result.median_ms


def _adopt(study, record: dict[str, Any]) -> None:
    """A promoted trial becomes the study's chosen one (the report, ``autocomp export`` and a bench read it)."""
    StudyRecord.put(study, chosen_trial=record["trial"])
    rule, promoted = StudyRecord.of(study).chosen_rule or "fastest trial", promotion_text(record)
    if promoted not in rule:
        StudyRecord.put(study, chosen_rule=f"{rule}; {promoted}")


def promotion_text(record: dict[str, Any]) -> str:
    """One line on a promoted trial: where its trial left it, where the final fine-tune took it, what it replaced."""
    before = "nothing was chosen" if record["chosen_before"] is None else f"it replaces trial {record['chosen_before']}"
    side = dict(record.get("side_by_side_ms") or {})  # {rival: ms, promoted trial: ms}, from _faster_beside
    ms = side.pop(str(record["trial"]), None)
    beside = "".join(
        f" ({ms:.3f} vs {other:.3f} ms side by side with {'the baseline' if name == 'baseline' else 'trial ' + name})"
        for name, other in side.items()
    )
    return (
        f"trial {record['trial']} was faster{beside} but {100 * record['trial_accuracy']:.2f}% after its trial, under the "
        f"floor; after {record['steps']} more steps it scores {100 * record['accuracy']:.2f}%, so {before}"
    )


def _finetune_trial(ctx, trial: FrozenTrial, steps: int, on_step) -> dict[str, Any]:
    """Continue distilling ``trial``'s weights for ``steps`` steps, export, score and time the model."""
    from autocomp.objective import plan_structure
    from autocomp.pipeline import build_artifact, finetune_further, score_artifact
    from autocomp.plan import CompressionPlan

    started = time.perf_counter()
    plan = CompressionPlan.from_params(trial.params)
    model = plan_structure(ctx, plan)
    trial_onnx = in_run(TrialRecord.of(trial).artifact, ctx.out_dir)
    model.load_state_dict(torch.load(trial_onnx.parent / "model_state.pt", weights_only=True))
    # the trial's cosine schedule ended at zero; this one starts again from the trial's learning rate, under
    # the trial's masks, shared values and fake quantization (``finetune_further``)
    tuned = finetune_further(
        ctx.task, ctx.teacher, plan, model, finetune=replace(ctx.finetune, steps=steps, seed=ctx.seed + trial.number),
        pipeline=ctx.space.pipeline, recipe=ctx.profile.int8_recipe,
        on_step=None if on_step is None else (lambda step, loss, _model: on_step(step, steps, trial.number)),
    )
    out = final_dir(ctx.out_dir)
    shutil.rmtree(out, ignore_errors=True)
    artifact = build_artifact(ctx.task, tuned, plan, out, recipe=ctx.profile.int8_recipe, pipeline=ctx.space.pipeline)
    accuracy, torch_accuracy = score_artifact(ctx.task, tuned, artifact, what="the finally fine-tuned model in PyTorch")
    torch.save(tuned.state_dict(), out / "model_state.pt")
    latency = ctx.backend.measure(artifact.onnx_path, ctx.profile)
    return {
        "trial": trial.number, "steps": steps, "accuracy": accuracy, "torch_accuracy": torch_accuracy,
        "latency_ms": latency.median_ms, "latency_p90_ms": latency.p90_ms, "latency_source": latency.source,
        **artifact.summary(), "trial_accuracy": trial.values[0],
        "seconds": time.perf_counter() - started,
    }
