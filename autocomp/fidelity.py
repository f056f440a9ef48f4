"""Multi-fidelity trials: screen every plan after a short fine-tune, finish only those that could reach the front.

Optuna cannot prune multi-objective trials, so this is our own rule, in the
spirit of asynchronous successive halving (ASHA) with one rung: after
``finetune.screen.after_steps`` of a trial's fine-tuning steps, a snapshot of
the student is exported and quantized as the plan says, scored on that ONNX
file and priced by the device's estimator. The point (accuracy, latency) joins
the study's rung of screened points, and the trial goes on to its full budget
only when

* it was queued (an anchor or a proposal: every one gets a real fine-tune), or
* its accuracy plus the largest gain made after the screen by finished trials that
  screened no higher still reaches the accuracy floor (judged once two such trials
  exist: a trial that screened higher says nothing about how far a worse start
  recovers, and the plans screened out never show it), and either fewer than
  ``min_screened`` plans have been screened (nothing to compare with yet) or it is in
  the best ``keep`` share of the rung by Pareto dominance (how many screened points
  are at least as accurate and as fast, one of them strictly).

A plan screened out is PRUNED with the reason; it counts towards ``--trials``
and costs the short fine-tune, an export and a score instead of the whole
budget, so a given wall time evaluates more plans. Training goes on in the same
optimizer run (the snapshot is a copy; its export draws nothing from the
trial's random stream), so a promoted trial ends exactly where an unscreened
one would. Accuracy and latency are the objectives compared (the choice rule's
two); size does not move with fine-tuning and does not decide a screen.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import optuna
from optuna.trial import TrialState

from autocomp.record import TrialRecord

@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str


def dominated_by(point: tuple[float, float], others: Sequence[tuple[float, float]]) -> int:
    """How many of ``others`` (accuracy, latency_ms) are at least as accurate and as fast as ``point``, one strictly."""
    accuracy, latency_ms = point
    return sum(
        1 for a, ms in others
        if a >= accuracy and ms <= latency_ms and (a > accuracy or ms < latency_ms)
    )


def screen_decision(
    point: tuple[float, float],
    rung: Sequence[tuple[float, float]],
    *,
    keep: float,
    min_screened: int,
    queued: bool = False,
    floor: float | None = None,
    gains: Sequence[tuple[float, float]] = (),
) -> Decision:
    """Promote ``point`` (this trial's screen) to the full budget, given the points screened before it.

    ``gains``: (screened accuracy, accuracy gain to the end of its fine-tune) of finished promoted trials.
    """
    if queued:
        return Decision(True, "queued plan: always fine-tuned in full")
    comparable = [gain for screened, gain in gains if screened <= point[0]]
    if floor is not None and len(comparable) >= 2 and point[0] + max(comparable) < floor:
        return Decision(False, (
            f"accuracy {point[0]:.4f} plus the largest gain finished trials that screened no higher made after "
            f"it ({max(comparable):+.4f}) stays below the floor {floor:.4f}"
        ))
    if len(rung) < min_screened:
        return Decision(True, f"only {len(rung)} plans screened before it (fewer than {min_screened})")
    everyone = [*rung, point]
    counts = sorted(dominated_by(p, [q for q in everyone if q is not p]) for p in everyone)
    allowed = counts[max(0, math.ceil(keep * len(everyone)) - 1)]
    mine = dominated_by(point, rung)
    if mine <= allowed:
        return Decision(True, f"dominated by {mine} of {len(rung)} screened plans: within the best {keep:.0%}")
    return Decision(False, f"dominated by {mine} of {len(rung)} screened plans: outside the best {keep:.0%}")


@dataclass(frozen=True)
class Rung:
    points: list[tuple[float, float]]  # every other trial's screened (accuracy, latency_ms)
    gains: list[tuple[float, float]]  # each finished promoted trial's (screened accuracy, gain after the screen)
    queued: bool  # this trial was queued with ``enqueue_trial`` (an anchor, a proposal), not sampled


def rung_of(study: optuna.Study, number: int) -> Rung:
    """What trial ``number`` is screened against."""
    points, gains, queued = [], [], False
    for trial in study.get_trials(deepcopy=False):
        record = TrialRecord.of(trial).screen
        if trial.number == number:
            queued = "fixed_params" in trial.system_attrs  # Optuna's mark on a trial taken from the queue
            continue
        if record is None:
            continue
        points.append((float(record["accuracy"]), float(record["latency_ms"])))
        if trial.state == TrialState.COMPLETE and trial.values:
            gains.append((float(record["accuracy"]), trial.values[0] - float(record["accuracy"])))
    return Rung(points, gains, queued)


def screen_rule(
    ctx: Any, study: optuna.Study, trial: optuna.Trial, *, score: Callable[[Any], tuple[float, float]],
) -> Callable[[int, float, Any], None] | None:
    """The on-step hook that screens ``trial`` at the space's screen step (None when the space does not screen).

    ``score(model)`` exports, scores and prices a snapshot of the student: (accuracy, latency_ms).
    Raises ``errors.TrialScreened`` from the fine-tuning loop when the trial is screened out.
    """
    from autocomp.errors import TrialScreened
    from autocomp.pipeline import torch_stages
    from autocomp.plan import CompressionPlan

    spec = ctx.space.finetune
    if spec.screen_after_steps <= 0 or spec.screen_after_steps >= spec.distill.steps:
        return None
    if len(torch_stages(ctx.space.pipeline, CompressionPlan.from_params(trial.params))) > 1:
        return None  # fine-tuned in two parts (prune, then narrow; fp32, then QAT): one snapshot does not stand for the plan

    def on_step(step: int, loss: float, model: Any) -> None:
        if step != spec.screen_after_steps:
            return
        started = time.perf_counter()
        accuracy, latency_ms = score(model)
        rung = rung_of(study, trial.number)
        decision = screen_decision(
            (accuracy, latency_ms), rung.points, keep=spec.screen_keep, min_screened=spec.screen_min,
            queued=rung.queued, floor=ctx.accuracy_floor, gains=rung.gains,
        )
        TrialRecord.put(trial, screen={  # the screened point and the decision
            "steps": step, "of_steps": spec.distill.steps, "accuracy": accuracy, "latency_ms": latency_ms,
            "promoted": decision.promoted, "reason": decision.reason, "seconds": time.perf_counter() - started,
        })
        if not decision.promoted:
            raise TrialScreened(
                f"screened out after {step} of {spec.distill.steps} fine-tuning steps: accuracy {accuracy:.4f} at "
                f"{latency_ms:.3f} ms (estimated), {decision.reason}"
            )

    return on_step
