"""The final fine-tune: the chosen plan's model is fine-tuned longer before it ships.

A trial fine-tunes for the space's per-trial budget (60-120 steps); a user's
hand-made recipe fine-tunes the one model it keeps for hundreds. So once the
search has chosen, the chosen trial's own weights continue distilling for
``finetune.final_steps`` more steps, the model is exported, quantized and scored
on its ONNX file again, and its latency is taken by the search's backend. The
study records both the trial's and the final figures (``FINAL``); ``autocomp
export`` ships the final model, unless the longer fine-tune scored lower on the
held-out metric, in which case the trial's model stays the one shipped and the
record says so.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from optuna.trial import FrozenTrial

FINAL = "final"
"""Study attr: the final fine-tune of the chosen trial (see ``final_finetune``)."""


def final_dir(out_dir: Path) -> Path:
    return out_dir / "final"


def final_finetune(
    ctx, study, chosen: FrozenTrial, *, on_step: Callable[[int, int], None] | None = None
) -> dict[str, Any] | None:
    """Fine-tune ``chosen`` for the space's ``final_steps`` more steps, export and score it; stored as ``FINAL``.

    Returns the record, or None when the space asks for no final fine-tune. Done once per chosen
    trial: a resumed search that chose the same trial reuses the record. ``on_step(step, steps)``.
    """
    from autocomp.compress.distill import distill
    from autocomp.objective import plan_structure
    from autocomp.pipeline import build_artifact, score_artifact
    from autocomp.plan import CompressionPlan

    steps = ctx.space.finetune.final_steps
    stored = study.user_attrs.get(FINAL)
    if steps <= 0:
        return None
    if isinstance(stored, dict) and stored.get("trial") == chosen.number and stored.get("steps") == steps:
        return stored
    started = time.perf_counter()
    plan = CompressionPlan.from_params(chosen.params)
    model = plan_structure(ctx, plan)
    trial_onnx = Path(chosen.user_attrs["artifact"])
    model.load_state_dict(torch.load(trial_onnx.parent / "model_state.pt", weights_only=True))
    # the trial's cosine schedule ended at zero; this one starts again from the trial's learning rate
    tuned = distill(
        model, ctx.teacher, ctx.task, config=replace(ctx.finetune, steps=steps, seed=ctx.seed + chosen.number),
        on_step=None if on_step is None else (lambda step, loss, _model: on_step(step, steps)),
    )
    out = final_dir(ctx.out_dir)
    shutil.rmtree(out, ignore_errors=True)
    artifact = build_artifact(ctx.task, tuned, plan, out, recipe=ctx.profile.int8_recipe)
    accuracy, torch_accuracy = score_artifact(ctx.task, tuned, plan, artifact, what="the finally fine-tuned model in PyTorch")
    torch.save(tuned.state_dict(), out / "model_state.pt")
    latency = ctx.backend.measure(artifact.onnx_path, ctx.profile)
    record = {
        "trial": chosen.number, "steps": steps, "accuracy": accuracy, "torch_accuracy": torch_accuracy,
        "latency_ms": latency.median_ms, "latency_p90_ms": latency.p90_ms, "latency_source": latency.source,
        "size_bytes": artifact.stats.size_bytes, "params": artifact.stats.params, "onnx_sha256": artifact.stats.sha256,
        "artifact": str(artifact.onnx_path), "trial_accuracy": chosen.values[0],
        # a longer fine-tune that scores lower on held-out inputs over-fitted the distillation data: ship the trial
        "shipped": "final" if accuracy >= chosen.values[0] else "trial",
        "seconds": time.perf_counter() - started,
    }
    study.set_user_attr(FINAL, record)
    return record
