"""Per-layer sensitivity and latency-aware allocation: plans proposed along the front, not sampled blindly.

HAQ, HAWQ, AMC, NetAdapt and ModelOpt's AutoQuantize all start from what each
layer can take. Here, once per study:

1. **Sensitivity profile** (``sensitivity_profile``): for every search parameter
   (a coupled pruning group, an attention module's heads, a layer's precision,
   the student width) and each value it may take, the model with *only that
   change* is built without fine-tuning, exported, quantized, scored on its
   ONNX file with the task's own metric, and priced by the device's estimator.
   No fine-tuning makes a change look worse than a trial will find it (a
   trial recovers most of a pruning's drop), but it ranks the changes, which
   is all the allocation needs, in about a second per option.
2. **Allocation** (``propose``): accuracy drops and latency savings are taken
   as additive. A greedy path (HAQ's knapsack, relaxed) starts at the baseline
   and each step takes the move that saves the most estimated milliseconds per
   point of predicted accuracy lost, until every parameter is at its fastest
   value. For a ladder of latency targets between the path's fastest plan and
   the baseline, the first plan on the path under the target is proposed.

3. **Pricing** (``price_proposals``): each proposed plan is built without
   fine-tuning and timed beside the baseline, as proposed and in fp32, since
   savings profiled alone do not add up on the plan; the faster is queued.

The proposals are queued as trials after the hand-made anchors, each with its
prediction in its user attrs; every one still gets the full fine-tune, export
and ONNX score, so the prediction's error is recorded, never assumed.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import asdict, dataclass, replace
import pathlib
from typing import Any, Callable, Mapping, Sequence

import optuna.distributions as od

from autocomp.errors import AutocompError, first_line
from autocomp.latency.base import side_by_side
from autocomp import knobs
from autocomp.knobs.base import WHOLE_MODEL
from autocomp.plan import CompressionPlan
from autocomp.record import StudyRecord, TrialRecord

log = logging.getLogger(__name__)

MIN_FRACTION = 0.02
"""A predicted latency never goes below this fraction of the baseline's (see ``propose``)."""
MAX_RATIOS = 4
"""Ratios profiled per pruning parameter: its range's grid thinned to at most this many values."""


@dataclass(frozen=True)
class Option:
    """One parameter set to one value, everything else at the baseline; ``error`` when it could not be built."""

    param: str
    value: Any
    accuracy: float = math.nan
    latency_ms: float = math.nan  # the device's estimator
    error: str = ""
    measured_ms: float = math.nan  # a knob's whole change only, with the search's own backend when it is not the estimator
    baseline_measured_ms: float = math.nan  # the baseline file, timed side by side with it (interleaved where the backend can)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Proposal:
    """A plan from the greedy path with what the profile predicts for it."""

    params: dict[str, Any]
    predicted_accuracy: float
    predicted_latency_ms: float
    priced: str = ""  # what ``price_proposals`` measured: its file beside the baseline's (and its fp32 twin)


def identity_value(name: str, dist: od.BaseDistribution) -> Any:
    """The value of ``name`` that changes nothing (or the gentlest one its distribution allows)."""
    keep = knobs.knob_of(name)[0].value.neutral
    if isinstance(dist, od.CategoricalDistribution):
        if keep in dist.choices:
            return keep
        numbers = [c for c in dist.choices if isinstance(c, (int, float))]
        return min(numbers, key=lambda c: abs(c - keep)) if numbers else dist.choices[0]
    return min(max(keep, dist.low), dist.high)  # ratios: the lowest is the least change


def candidate_values(name: str, dist: od.BaseDistribution) -> list[Any]:
    """The values profiled for ``name``: every categorical choice; a ratio range's grid, thinned."""
    keep = identity_value(name, dist)
    if isinstance(dist, od.CategoricalDistribution):
        return [v for v in dist.choices if v != keep]
    step = getattr(dist, "step", None) or (dist.high - dist.low) / MAX_RATIOS
    grid = [dist.low + i * step for i in range(1, int(round((dist.high - dist.low) / step)) + 1)]
    if len(grid) > MAX_RATIOS:  # evenly thinned, the highest ratio always kept
        grid = [grid[round((i + 1) * len(grid) / MAX_RATIOS) - 1] for i in range(MAX_RATIOS)]
    return [round(v, 10) for v in grid if v != keep]


UNIFORM = "*"
"""Suffix of a uniform option's param (``bits/*``): every parameter of that kind at one value."""


def _kind(param: str) -> str:
    """The knob's prefix (``bits/``), or the parameter itself for a knob with one parameter (``distill/width``)."""
    knob = knobs.knob_of(param)[0]
    return param if knob.targets is WHOLE_MODEL else knob.prefix


def sensitivity_profile(
    ctx, distributions: Mapping[str, od.BaseDistribution], *, baseline_onnx: pathlib.Path,
    progress: Callable[[int, int], None] | None = None,
) -> list[Option]:
    """Score and price every single-parameter change, and each knob's uniform change (see ``propose``).

    ``ctx`` is the search's ``SearchContext``; ``baseline_onnx`` is the study's baseline file
    (``record_baseline`` writes it): a precision change is that file quantized, with no export. A change that cannot be built is kept with its error, so the report
    shows it and the allocation never uses it. ``progress(done, total)`` after each.
    """
    from autocomp.objective import plan_structure
    from autocomp.pipeline import build_artifact
    from autocomp.runtime import evaluate_onnx

    base = {name: identity_value(name, dist) for name, dist in distributions.items()}
    todo = [({name: value}, name, value) for name, dist in distributions.items() for value in candidate_values(name, dist)]
    by_kind: dict[str, dict[Any, dict[str, Any]]] = {}
    for change, name, value in todo:
        if _kind(name) != name:
            by_kind.setdefault(_kind(name), {}).setdefault(value, {}).update(change)
    todo += [(change, kind + UNIFORM, value) for kind, values in by_kind.items() for value, change in values.items() if len(change) > 1]
    work = ctx.out_dir / "sensitivity"  # one option's files at a time
    kept = ctx.out_dir / "sensitivity-timed"  # the files of the changes timed for real, until they are
    single = {kind for kind, values in by_kind.items() if all(len(change) == 1 for change in values.values())}
    options, timed = [], []
    for done, (change, name, value) in enumerate(todo, 1):
        plan = CompressionPlan.from_params({**base, **change})
        try:
            if all(_stage(param) == "onnx" for param in change):  # the baseline file, rewritten: no export
                path = _onnx_stage(ctx, plan, baseline_onnx, work)
            else:
                path = build_artifact(ctx.task, plan_structure(ctx, plan), plan, work, recipe=ctx.profile.int8_recipe, calibration_samples=32).onnx_path
            accuracy, estimate_ms = evaluate_onnx(ctx.task, path), ctx.estimator.measure(path, ctx.profile).median_ms
            options.append(Option(name, value, accuracy, estimate_ms))
            # a knob's whole change (every layer of it, or its one parameter: depth) is also timed for real,
            # which rescales its layers' estimated savings
            if ctx.measures and (name.endswith(UNIFORM) or _kind(name) in single):
                kept.mkdir(parents=True, exist_ok=True)
                timed.append((len(options) - 1, shutil.copy(path, kept / f"{len(timed)}.onnx")))
        except AutocompError as exc:
            log.info("sensitivity of %s=%s: %s", name, value, first_line(exc))
            options.append(Option(name, value, error=first_line(exc)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if progress:
            progress(done, len(todo))
    if timed:
        try:
            baseline_ms, *measured = (r.median_ms for r in side_by_side(ctx.backend, [baseline_onnx, *(path for _, path in timed)], ctx.profile))
            for (index, _), ms in zip(timed, measured):
                options[index] = replace(options[index], measured_ms=ms, baseline_measured_ms=baseline_ms)
        except AutocompError as exc:
            log.warning("the sensitivity pass could not time its changes (%s); their savings stay the estimator's", first_line(exc))
        finally:
            shutil.rmtree(kept, ignore_errors=True)
    return options


@dataclass(frozen=True)
class Path:
    """The greedy path from the baseline to every knob at its fastest: (plan, predicted drop, ms saved) per step."""

    steps: tuple[tuple[dict[str, Any], float, float], ...]
    baseline_accuracy: float
    baseline_latency_ms: float
    unit: float = 1.0  # estimator ms -> the measured unit (1.0 when nothing was measured)

    def proposal(self, step: tuple[dict[str, Any], float, float], *, drop_scale: float = 1.0) -> Proposal:
        plan, drop, saved = step
        # savings of overlapping knobs (a narrower student and its layers' pruning) can add up past the whole
        latency_ms = max(self.baseline_latency_ms - saved, MIN_FRACTION * self.baseline_latency_ms) * self.unit
        return Proposal(plan, max(0.0, self.baseline_accuracy - drop * drop_scale), latency_ms)


def greedy_path(
    options: Sequence[Option],
    distributions: Mapping[str, od.BaseDistribution],
    *,
    baseline_accuracy: float,
    baseline_latency_ms: float,
    baseline_measured_ms: float | None = None,
    removes: Mapping[tuple[str, Any], Sequence[str]] | None = None,
) -> Path:
    """Each step takes the move that saves the most milliseconds per point of predicted accuracy lost.

    A drop is the option's accuracy below the baseline; where the profile holds a knob's uniform
    option (``bits/*`` = 8: every layer at int8), that value's single drops are rescaled to sum to
    the uniform drop, so compounding errors count. Savings are the estimator's; where the uniform
    option was also timed (``measured_ms``, with ``baseline_measured_ms``), that value's savings are
    rescaled to the measured fraction saved (static int8 that the estimator prices fast and the
    device runs slowly saves nothing), and predicted latencies are in the measured unit.

    ``removes`` maps a depth move (``("depth/blocks", 0.5)``) to the blocks it removes: once it is
    taken, the parameters of layers inside them are moot, so their drops and savings no longer count
    (the removal's own profile holds them) and moves on them are never proposed.
    """
    table: dict[str, dict[Any, tuple[float, float]]] = {}  # param -> value -> (accuracy drop, ms saved)
    uniform: dict[tuple[str, Any], float] = {}  # (kind, value) -> accuracy drop with every parameter of the kind at it
    timing: dict[tuple[str, Any], float] = {}  # (kind, value) -> measured fraction saved / estimated fraction saved
    measured = baseline_measured_ms is not None and baseline_measured_ms > 0
    for option in options:
        if option.error:
            continue
        drop = max(0.0, baseline_accuracy - option.accuracy)
        estimated = (baseline_latency_ms - option.latency_ms) / baseline_latency_ms
        # the baseline timed beside the option, else the one the search timed (studies from before the former)
        reference = option.baseline_measured_ms
        if not math.isfinite(reference):
            reference = baseline_measured_ms if measured else math.nan
        if math.isfinite(option.measured_ms) and math.isfinite(reference) and estimated > 0:
            timing[(_kind(option.param), option.value)] = (1.0 - option.measured_ms / reference) / estimated
        if option.param.endswith(UNIFORM):
            uniform[(_kind(option.param), option.value)] = drop
        elif option.param in distributions:
            table.setdefault(option.param, {})[option.value] = (drop, baseline_latency_ms - option.latency_ms)
    # Drops do not add up: each layer alone at static int8 cost an encoder nothing measurable, all of
    # them together wrecked it. Each knob value's single drops are rescaled to sum to its uniform drop.
    for (kind, value), total in uniform.items():
        members = [name for name in table if _kind(name) == kind and value in table[name]]
        singles = sum(table[name][value][0] for name in members)
        for name in members:
            drop, saved = table[name][value]
            share = drop / singles if singles > 1e-6 else 1.0 / len(members)
            table[name][value] = (total * share, saved)
    for name, values in table.items():  # measured savings, where the knob's whole change was timed
        for value, (drop, saved) in values.items():
            values[value] = (drop, saved * timing.get((_kind(name), value), 1.0))
    removes = removes or {}

    def moot(plan: Mapping[str, Any]) -> set[str]:
        gone = tuple(f"{block}." for (name, value), blocks in removes.items() if plan.get(name) == value for block in blocks)
        return {name for name in plan if name.split("/", 1)[-1].startswith(gone)} if gone else set()

    def totals(plan: Mapping[str, Any]) -> tuple[float, float]:
        # predicted (accuracy drop, ms saved): the live parameters' profiled changes, added up
        gone = moot(plan)
        live = [table[name][plan[name]] for name in table if name not in gone and plan[name] in table[name]]
        return sum(d for d, _ in live), sum(s for _, s in live)

    current = {name: identity_value(name, dist) for name, dist in distributions.items()}
    steps = [(dict(current), 0.0, 0.0)]
    drop_now, saved_now = 0.0, 0.0
    while True:
        best = None
        gone = moot(current)
        for name, values in table.items():
            if name in gone:
                continue
            for value in values:
                if value == current[name]:
                    continue
                drop, saved = totals({**current, name: value})
                gain, cost = saved - saved_now, drop - drop_now
                if gain <= 0:
                    continue
                score = (gain / max(cost, 1e-6), gain)  # ms per point lost; a free move first, the bigger one first
                if best is None or score > best[0]:
                    best = (score, name, value, drop, saved)
        if best is None:
            break
        _, name, value, drop_now, saved_now = best
        current[name] = value
        steps.append((dict(current), drop_now, saved_now))
    unit = baseline_measured_ms / baseline_latency_ms if measured else 1.0
    return Path(tuple(steps), baseline_accuracy, baseline_latency_ms, unit)


def propose(path: Path, *, count: int, min_accuracy: float | None = None) -> list[Proposal]:
    """``count`` plans on the path, at latency targets evenly spaced between its fastest plan and the baseline
    (the path's very end, every knob at its limit, is left out), fastest first.

    ``min_accuracy``: the path ends at its last plan predicted (before fine-tuning) at or above it. The
    search passes the floor minus the early-stop margin: a plan predicted below that is one the early
    stop would end after its first steps (on digits, plans predicted at 0% ended at 10-44% after 20 steps).
    """
    steps = path.steps
    if min_accuracy is not None:
        reachable = [i for i, step in enumerate(steps) if path.baseline_accuracy - step[1] >= min_accuracy]
        steps = steps[: reachable[-1] + 1] if reachable else steps[:1]
    fastest = steps[-1][2]
    if count <= 0 or len(steps) == 1 or fastest <= 0:
        return []
    proposals: list[Proposal] = []
    for k in range(count, 0, -1):
        target_saved = fastest * k / (count + 1)
        first = next(i for i, step in enumerate(steps) if step[2] >= target_saved - 1e-9)
        # two targets on one step of the path: the next step (a faster plan) instead of a duplicate
        free = [s for s in steps[first:] + steps[:first][::-1] if all(q.params != s[0] for q in proposals)]
        if free and free[0][2] > 0:  # the baseline itself is never proposed
            proposals.append(path.proposal(free[0]))
    return sorted(proposals, key=lambda p: p.predicted_latency_ms)


def refine(path: Path, finished: Sequence[tuple[Proposal, float]], *, floor: float, taken: Sequence[dict[str, Any]]) -> Proposal | None:
    """The fastest plan on the path predicted to meet ``floor`` once the predictor is re-fitted on trials.

    ``finished`` pairs proposals with the accuracy their trial reached after fine-tuning. A trial
    recovers much of a change's drop without fine-tuning, so the drops are scaled by the median of
    real / predicted drop over them (clipped to [0.05, 2]). Plans already ``taken`` (or their fp32
    twins) are passed over for the next fastest; None when none is left.
    """
    ratios = sorted(
        (path.baseline_accuracy - real) / (path.baseline_accuracy - p.predicted_accuracy)
        for p, real in finished if path.baseline_accuracy - p.predicted_accuracy > 1e-4
    )
    if not ratios:
        return None
    scale = min(2.0, max(0.05, ratios[len(ratios) // 2]))
    # a step is passed over when it ran, or its fp32 twin did: the two files ``price_proposals`` chooses from
    meeting = [
        s for s in path.steps
        if s[2] > 0 and path.baseline_accuracy - s[1] * scale >= floor and s[0] not in taken and _at_fp32(s[0]) not in taken
    ]
    if not meeting:
        return None
    return path.proposal(max(meeting, key=lambda s: s[2]), drop_scale=scale)


def queue_proposals(
    ctx, study, distributions: Mapping[str, od.BaseDistribution], *, progress: Callable[[int, int], None] | None = None
) -> list[Proposal]:
    """Profile (or reuse the stored profile), propose ``ctx.space.proposals`` plans and enqueue them, once per study."""
    import time

    count = ctx.space.proposals
    # stored once: the profile's options (a resumed study reuses them), then how many were queued
    if count <= 0 or StudyRecord.of(study).proposals_queued is not None:
        return []
    if StudyRecord.of(study).sensitivity is None:
        started = time.perf_counter()
        options = sensitivity_profile(ctx, distributions, baseline_onnx=baseline_file(study), progress=progress)
        StudyRecord.put(study, sensitivity=[o.to_dict() for o in options], sensitivity_s=time.perf_counter() - started)
    path, unit = _path(ctx, study, distributions)
    StudyRecord.put(study, sensitivity_baseline_ms=path.baseline_latency_ms)  # the report's "latency saved"
    floor, margin = ctx.accuracy_floor, ctx.space.finetune.early_stop_max_drop
    proposals = price_proposals(
        ctx, propose(path, count=count, min_accuracy=None if floor is None else floor - margin), distributions,
        baseline_onnx=baseline_file(study), baseline_ms=path.baseline_latency_ms * path.unit,
    )
    for proposal in proposals:
        _enqueue(study, proposal, unit=unit, round_=1)
    StudyRecord.put(study, proposals_queued=len(proposals))
    return proposals


def queue_refined(ctx, study, distributions: Mapping[str, od.BaseDistribution]) -> Proposal | None:
    """Once every first-round proposal has finished: one more, the fastest plan on the path predicted
    to meet the floor after re-fitting the predictor on them (``refine``). Once per study."""
    record = StudyRecord.of(study)
    if not record.proposals_queued or record.proposal_refined is not None or ctx.accuracy_floor is None:
        return None
    from optuna.trial import TrialState

    queued = [(t, TrialRecord.of(t).proposal) for t in study.get_trials(deepcopy=False)]
    queued = [(t, prediction) for t, prediction in queued if prediction is not None]
    if any(not t.state.is_finished() for t, _ in queued):
        return None
    path, unit = _path(ctx, study, distributions)
    finished = [
        (Proposal(t.params, prediction["accuracy"], prediction["latency_ms"]), t.values[0])
        for t, prediction in queued if t.state == TrialState.COMPLETE
    ]
    proposal = refine(path, finished, floor=ctx.accuracy_floor, taken=[t.params for t in study.get_trials(deepcopy=False)])
    if proposal is not None:
        priced = price_proposals(ctx, [proposal], distributions, baseline_onnx=baseline_file(study), baseline_ms=path.baseline_latency_ms * path.unit)
        proposal = priced[0] if priced else None  # none when it was no faster than the baseline
    if proposal is not None:
        _enqueue(study, proposal, unit=unit, round_=2)
    StudyRecord.put(study, proposal_refined=proposal is not None)
    return proposal


def price_proposals(
    ctx, proposals: Sequence[Proposal], distributions: Mapping[str, od.BaseDistribution], *,
    baseline_onnx: pathlib.Path, baseline_ms: float,
) -> list[Proposal]:
    """The proposals priced for real before any is fine-tuned; reduced precisions kept only where they pay.

    The path adds up each change's savings as profiled alone, on the unpruned model; the plan they make
    runs otherwise. Int8 (static or dynamic) adds a fixed cost per layer, the activation's quantize and
    the int32 rescale, while the MatMul it speeds up shrinks with the pruning around it: on digits-vit
    (AMD EPYC, 2 threads) a proposal with its heads and FFN pruned ran 0.283 ms as profiled, at dyn8 and
    int8, and 0.239 ms in fp32, side by side. So each proposal is built without fine-tuning (weights do
    not change latency) and exported as proposed and, where it has reduced precisions, with every layer
    at fp32; the files are timed with the baseline's, side by side where the search measures, by the
    estimator where it does not. Per proposal the faster file is queued (fp32 on a tie, since it loses
    no accuracy), its predicted latency is its own figure in the baseline's unit (``baseline_ms``), and
    one that is no faster than the baseline is dropped (fine-tuning will not make it faster). Duplicates
    this makes are dropped too. Where pricing fails, the proposals go as the path made them.
    """
    from autocomp.objective import plan_structure
    from autocomp.pipeline import build_artifact

    if not proposals:
        return []
    # a space that leaves fp32 out of some layer's choices has no fp32 twin to offer
    twins = all(
        identity_value(name, dist) == knobs.knob_of(name)[0].value.neutral for name, dist in distributions.items() if _stage(name) == "onnx"
    )
    work = ctx.out_dir / "proposal-pricing"
    files, owners = [baseline_onnx], []  # owners[i]: (proposal index, params) of files[i + 1]
    try:
        for index, proposal in enumerate(proposals):
            plan = CompressionPlan.from_params(proposal.params)
            model = plan_structure(ctx, plan)
            variants = [proposal.params]
            if twins and _at_fp32(proposal.params) != proposal.params:
                variants.append(_at_fp32(proposal.params))
            for k, params in enumerate(variants):
                variant = CompressionPlan.from_params(params)
                artifact = build_artifact(ctx.task, model, variant, work / f"{index}-{k}", recipe=ctx.profile.int8_recipe, calibration_samples=32)
                files.append(artifact.onnx_path)
                owners.append((index, params))
        if ctx.measures:
            timings = [r.median_ms for r in side_by_side(ctx.backend, files, ctx.profile)]
        else:
            timings = [ctx.estimator.measure(path, ctx.profile).median_ms for path in files]
    except AutocompError as exc:
        log.warning("could not price the proposals (%s); they are queued as the profile proposed them", first_line(exc))
        return list(proposals)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base_ms, priced = timings[0], {}
    for (index, params), ms in zip(owners, timings[1:]):
        priced.setdefault(index, []).append((ms, params))
    out: list[Proposal] = []
    for index, proposal in enumerate(proposals):
        options = priced[index]
        ms, params = min(options, key=lambda o: (o[0], o[1] != _at_fp32(o[1])))  # the faster; fp32 on a tie
        note = f"{ms:.3f} ms beside the baseline's {base_ms:.3f} ms"
        if len(options) == 2:
            other = next(m for m, p in options if p is not params)
            note += f" in fp32 (as profiled {other:.3f} ms)" if params != proposal.params else f" as profiled (fp32 {other:.3f} ms)"
        if ms >= base_ms:
            log.info("proposal dropped: %s, no faster than the baseline", note)
            continue
        if all(q.params != params for q in out):
            out.append(replace(proposal, params=params, predicted_latency_ms=ms / base_ms * baseline_ms, priced=note))
    return out


def _at_fp32(params: Mapping[str, Any]) -> dict[str, Any]:
    """The plan with every ONNX-stage knob (precision) at its neutral value (fp32)."""
    return {name: knobs.knob_of(name)[0].value.neutral if _stage(name) == "onnx" else value for name, value in params.items()}


def _stage(param: str) -> str:
    return knobs.knob_of(param)[0].stage


def _onnx_stage(ctx, plan: CompressionPlan, onnx_path: pathlib.Path, out_dir: pathlib.Path) -> pathlib.Path:
    """The plan's ONNX-stage knobs applied to an exported file (the baseline's, for a precision-only change)."""
    from autocomp.pipeline import onnx_stage

    out_dir.mkdir(parents=True, exist_ok=True)
    work = knobs.OnnxWork(task=ctx.task, model=ctx.teacher, onnx_path=onnx_path, out_dir=out_dir, recipe=ctx.profile.int8_recipe, calibration_samples=32)
    return onnx_stage(plan, work, pipeline=ctx.space.pipeline).onnx_path


def baseline_file(study) -> pathlib.Path:
    """The study's baseline ONNX file (a bench's studies share one, in the first study's folder)."""
    return pathlib.Path(StudyRecord.of(study).baseline.artifact)


def _path(ctx, study, distributions: Mapping[str, od.BaseDistribution]) -> tuple[Path, str]:
    record = StudyRecord.of(study)
    options, baseline = [Option(**o) for o in record.sensitivity], record.baseline
    baseline_ms = ctx.estimator.measure(baseline_file(study), ctx.profile).median_ms
    timed = any(math.isfinite(o.measured_ms) for o in options)
    path = greedy_path(
        options, distributions, baseline_accuracy=baseline.accuracy, baseline_latency_ms=baseline_ms,
        baseline_measured_ms=baseline.latency_ms if timed else None, removes=depth_removals(ctx, distributions),
    )
    return path, baseline.latency_source if timed else f"estimate:{ctx.profile.name}"


def depth_removals(ctx, distributions: Mapping[str, od.BaseDistribution]) -> dict[tuple[str, Any], list[str]]:
    """(depth param, value) -> the blocks the pipeline removes for it (the teacher's choice, as ``compress_model`` makes it)."""
    from autocomp.compress.depth import removed_blocks
    from autocomp.knobs.depth import teacher_samples

    depth = knobs.KNOBS["depth"].prefix
    params = [(name, dist) for name, dist in distributions.items() if name.startswith(depth)]
    if not params:
        return {}
    samples = teacher_samples(ctx.task)
    return {
        (name, value): removed_blocks(ctx.teacher, {name[len(depth):]: value}, samples)
        for name, dist in params for value in candidate_values(name, dist)
    }


def _enqueue(study, proposal: Proposal, *, unit: str, round_: int) -> None:
    prediction = {"accuracy": proposal.predicted_accuracy, "latency_ms": proposal.predicted_latency_ms, "latency_unit": unit, "round": round_}
    if proposal.priced:
        prediction["priced"] = proposal.priced
    study.enqueue_trial(proposal.params, user_attrs=TrialRecord.attrs(proposal=prediction), skip_if_exists=True)
