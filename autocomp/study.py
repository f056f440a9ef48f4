"""The study: storage, sampler, baseline, the ask/tell loop, and choosing a configuration.

The loop is ask-and-tell rather than ``study.optimize`` so that each failure
mode is recorded the way a user needs it: a trial stopped by our early rule or
rejected by the latency pre-check is PRUNED with its reason, a trial that
raises is FAILED with its reason and the search goes on, and Ctrl-C closes the
running trial as FAILED ("interrupted") and keeps everything finished.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import signal
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState

from autocomp.allocate import queue_proposals, queue_refined
from autocomp.anchors import anchor_plans
from autocomp.errors import AutocompError, ConfigError, first_line
from autocomp.errors import TrialStopped
from autocomp.objective import DIRECTIONS, OBJECTIVES, RAW_SIZE, SearchContext, layer_estimates, layer_rows, phase_name, run_trial
from autocomp.pipeline import run_plan
from autocomp.plan import CompressionPlan
from autocomp.record import Baseline, StudyRecord, TrialRecord
from autocomp.storage import GRACE_S, Heartbeat, close_stale, engine_url, heartbeat_enabled, is_shared, shared_storage, stale_reason, worker_id
from autocomp.tasks import model_fingerprint

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "nsga2", "gp", "random")
DEFAULT_SAMPLER = "tpe"
DEFAULT_TRIALS = 20


def make_sampler(name: str, *, seed: int | None, parallel: bool = False) -> optuna.samplers.BaseSampler:
    """``parallel``: other processes run trials of the same study at once. TPE then treats their running
    trials as bad results (``constant_liar``), so that workers do not all sample the same region."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True, constant_liar=parallel)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=8)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def default_storage(out_dir: Path) -> str:
    return f"sqlite:///{(out_dir / 'study.db').resolve()}"


def masked_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: storage URLs are printed, logged and stored."""
    return re.sub(r"(://[^:/@]*:)[^/]*@", r"\1***@", url)  # up to the authority's last @: a password may hold one


def check_storage(url: str) -> None:
    """Refuse, before any work, a storage URL that is not one, names an unknown database or lacks its driver."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = masked_url(url)
    example = "e.g. sqlite:///runs/study.db or postgresql://user@host:5432/autocomp"
    try:
        parsed = make_url(engine_url(url))
    except (ArgumentError, ValueError):
        raise ConfigError(f"--storage {shown!r} is not a database URL; {example}") from None
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(f"--storage {shown!r}: unknown database kind {parsed.drivername!r}; {example}") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        hint = "pip install 'autocomp[postgres]'" if parsed.get_backend_name() == "postgresql" else "install the database driver"
        raise ConfigError(
            f"--storage {shown!r}: the {parsed.drivername} driver is not installed ({exc.name or exc}); {hint}"
        ) from None


def open_study(
    *, storage: str, study_name: str, sampler: optuna.samplers.BaseSampler, grace_s: int = GRACE_S, create: bool = True,
    shared: bool | None = None,
) -> optuna.Study:
    """Create the study, or load it when it exists (that is how a search resumes; ``create=False``: a
    worker joins only a study a search made). ``shared``: several processes work on it, so with
    heartbeats (``storage``); by default, when it is on a database server."""
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_storage(storage)
    try:
        engine = shared_storage(storage, grace_s=grace_s) if (is_shared(storage) if shared is None else shared) else storage
        if not create and study_name not in optuna.get_all_study_names(engine):
            raise ConfigError(
                f"no study named {study_name!r} in {masked_url(storage)}; start it with 'autocomp search --storage URL "
                f"--study-name {study_name} ...' first"
            )
        study = optuna.create_study(
            study_name=study_name, storage=engine, directions=list(DIRECTIONS), sampler=sampler, load_if_exists=True
        )
    except (ValueError, ImportError, SQLAlchemyError) as exc:
        first = first_line(exc)
        raise ConfigError(f"cannot open study storage {masked_url(storage)!r}: {masked_url(first)}") from None
    if [d.name.lower() for d in study.directions] != list(DIRECTIONS):
        raise ConfigError(f"study {study_name!r} in {masked_url(storage)} was not created by autocomp search (different objectives)")
    if isinstance(sampler, optuna.samplers.NSGAIISampler):
        # NSGA-II caches its generations in study attrs that misbehave with several studies in one database (optuna #6066)
        others = sorted(set(optuna.get_all_study_names(engine)) - {study_name})
        if others:
            raise ConfigError(
                f"--sampler nsga2 needs a database of its own (Optuna's NSGA-II misbehaves beside other studies, optuna "
                f"#6066), and {masked_url(storage)} also holds {', '.join(others[:3])}{' ...' if len(others) > 3 else ''}; "
                "use another database, or --sampler tpe"
            )
    return study


def load_existing_study(storage: str, study_name: str | None = None) -> optuna.Study:
    """Open a finished or running study for reporting/export; one study per storage unless named."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_storage(storage)
    shown = masked_url(storage)
    try:
        names = optuna.get_all_study_names(engine_url(storage))
    except Exception as exc:  # SQLAlchemy raises many kinds for a bad URL or file
        first = first_line(exc)
        raise ConfigError(f"cannot read study storage {shown!r}: {masked_url(first)}") from None
    if not names:
        raise ConfigError(f"no study in {shown}; run 'autocomp search' first")
    if study_name is None:
        if len(names) > 1:
            raise ConfigError(f"{shown} holds several studies ({', '.join(names)}); pass --study-name")
        study_name = names[0]
    elif study_name not in names:
        raise ConfigError(f"no study named {study_name!r} in {shown}; it holds {', '.join(names)}")
    return optuna.load_study(study_name=study_name, storage=engine_url(storage))


@dataclass(frozen=True)
class AccuracyFloor:
    """``--min-accuracy`` as given: an absolute floor in the metric's units, or points below the baseline."""

    text: str
    absolute: float | None = None
    points_below: float | None = None

    def resolve(self, baseline_accuracy: float) -> float:
        """The floor for a study whose baseline scored ``baseline_accuracy``; refuses a floor above it."""
        if self.points_below is not None:
            return baseline_accuracy - self.points_below / 100.0
        assert self.absolute is not None
        if self.absolute > baseline_accuracy:
            raise ConfigError(
                f"--min-accuracy {self.text!r} asks for {self.absolute:.4f}, above the uncompressed baseline's "
                f"{baseline_accuracy:.4f}: no compressed model is expected to reach it; give a floor at or below the "
                "baseline, or -1 for one point below it"
            )
        return self.absolute


def parse_accuracy_spec(text: str) -> AccuracyFloor:
    """``0.97`` or ``97%`` is absolute; ``-1`` (or ``-1pt``) means one point below the baseline.

    Checked before any work: a value that cannot be a floor is refused here,
    not after the baseline has been evaluated.
    """
    stripped = text.strip().lower()
    percent = stripped.endswith("%")
    raw = stripped.removesuffix("pt").removesuffix("%")
    usage = "use 0.97 or 97% (absolute) or -1 (one point below the baseline)"
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"--min-accuracy {text!r} is not a number; {usage}") from None
    if not math.isfinite(value):
        raise ConfigError(f"--min-accuracy {text!r} is not a finite number; {usage}")
    if value < 0:
        if percent or value <= -100:
            raise ConfigError(f"--min-accuracy {text!r}: points below the baseline are written -1 or -0.5 (more than -100); {usage}")
        return AccuracyFloor(text, points_below=-value)
    if percent:
        if value > 100:
            raise ConfigError(f"--min-accuracy {text!r} is above 100%; {usage}")
        return AccuracyFloor(text, absolute=value / 100.0)
    if value > 1.0:
        raise ConfigError(
            f"--min-accuracy {text!r} is outside [0, 1]; write {value:g}% for a percentage or -{value:g} for "
            f"{value:g} points below the baseline"
        )
    return AccuracyFloor(text, absolute=value)


def parse_accuracy_floor(text: str, *, baseline_accuracy: float) -> float:
    """The floor ``text`` gives for a baseline of ``baseline_accuracy`` (see ``parse_accuracy_spec``)."""
    return parse_accuracy_spec(text).resolve(baseline_accuracy)


def record_baseline(ctx: SearchContext, study: optuna.Study) -> Baseline:
    """Evaluate the uncompressed model once per study (export, ONNX accuracy, latency) and store it.

    A stored baseline is reused only for the same trained model (its weights'
    fingerprint) and only if its metric is finite; the fingerprint is what
    ``autocomp export`` checks the teacher against later.
    """
    fingerprint = model_fingerprint(ctx.teacher)
    stored = study.user_attrs.get("baseline")
    if stored is not None:
        return _revalidated(stored, fingerprint=fingerprint, study_name=study.study_name)
    plan = CompressionPlan()
    result = run_plan(
        ctx.task, ctx.teacher, plan, ctx.out_dir / "baseline", finetune=ctx.finetune, recipe=ctx.profile.int8_recipe
    )
    latency = ctx.backend.measure(result.artifact.onnx_path, ctx.profile)
    baseline = Baseline.attrs(
        **result.summary(),
        latency_ms=latency.median_ms,
        latency_p90_ms=latency.p90_ms,
        latency_source=latency.source,
        **({"latency_sure": latency.confidence.text()} if hasattr(latency, "confidence") else {}),
        layers=layer_rows(plan, ctx.teacher, result.artifact, layer_estimates(ctx, result.artifact.onnx_path)),
        teacher_sha256=fingerprint,
    )
    StudyRecord.put(study, baseline=baseline)
    return Baseline.read(baseline)


def joined_study(ctx: SearchContext, study: optuna.Study) -> tuple[SearchContext, Baseline]:
    """A worker's context on a study a search prepared: its baseline (checked against this worker's
    trained model) and floor as stored; nothing is written."""
    stored, floor = study.user_attrs.get("baseline"), StudyRecord.of(study).accuracy_floor
    if stored is None or floor is None:
        raise ConfigError(
            f"study {study.study_name!r} has no baseline yet; start the workers after 'autocomp search' has printed its baseline"
        )
    baseline = _revalidated(stored, fingerprint=model_fingerprint(ctx.teacher), study_name=study.study_name)
    return replace(ctx, accuracy_floor=floor), baseline


def distributions_sha(distributions: dict[str, Any]) -> str:
    """A fingerprint of a space as it applies to a model: a worker with another version of it is refused."""
    import hashlib

    text = repr(sorted((name, optuna.distributions.distribution_to_json(d)) for name, d in distributions.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def _revalidated(stored: Any, *, fingerprint: str, study_name: str) -> Baseline:
    baseline = Baseline.read(stored)
    if baseline.accuracy is None or not math.isfinite(baseline.accuracy):
        accuracy = stored.get("accuracy") if isinstance(stored, dict) else stored
        raise ConfigError(
            f"study {study_name!r} holds a baseline with accuracy {accuracy!r}, which is not a finite number; "
            "start a new search with another --study-name or --out"
        )
    recorded = baseline.teacher_sha256
    if recorded is not None and recorded != fingerprint:
        raise ConfigError(
            f"study {study_name!r} was searched on another trained model (weights {recorded[:12]}, the task now builds "
            f"{fingerprint[:12]}): its trials do not apply to this one; start a new search with another --study-name or --out"
        )
    return baseline


def prepare_study(ctx: SearchContext, study: optuna.Study, *, settings: dict[str, Any], min_accuracy: str) -> tuple[SearchContext, Baseline]:
    """What every search does before its first trial: the baseline (once), the accuracy
    floor taken from it, and the settings the report and ``export`` read back.

    Returns the context with its floor, and the baseline's record.
    """
    from autocomp.profiles import profile_to_dict
    from autocomp.tasks import task_name

    spec = parse_accuracy_spec(min_accuracy)  # before the baseline: a bad value costs nothing
    baseline = record_baseline(ctx, study)
    floor = spec.resolve(baseline.accuracy)
    objectives = study_objectives(study)
    StudyRecord.put(
        study,
        settings=settings,
        versions=versions(),
        device=ctx.profile.name,
        # the key path stays out of study storage (which board timed a trial is in its latency source)
        profile={k: v for k, v in profile_to_dict(ctx.profile, as_run=True).items() if k != "ssh"},
        backend=settings["backend"],
        task=task_name(ctx.task),
        space=settings["space"],
        objectives=objectives,
        accuracy_floor=floor,
        latency_budget_ms=ctx.latency_budget_ms,
    )
    return replace(ctx, accuracy_floor=floor, size_key=objectives[2]), baseline


def study_objectives(study: optuna.Study) -> list[str]:
    """The objectives a study was begun with (a resumed one keeps them); a new study gets ``OBJECTIVES``."""
    recorded = StudyRecord.of(study).objectives
    if recorded:
        return list(recorded)
    began = any(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    return [*OBJECTIVES[:2], RAW_SIZE] if began else list(OBJECTIVES)


def versions() -> dict[str, str]:
    """The versions a study was run with (shown in the report: results move with them)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("autocomp", "torch", "onnx", "onnxruntime", "optuna", "torch-pruning"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


@dataclass
class SearchOutcome:
    study: optuna.Study
    chosen: FrozenTrial | None
    rule: str
    interrupted: bool


def close_orphans(study: optuna.Study) -> list[int]:
    """Mark trials left RUNNING by a killed process as FAILED, with the phase it died in; returns their numbers.

    Only safe with one search process per study at a time, which ``autocomp.runlock`` enforces.
    """
    closed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        during = f" during {phase_name(TrialRecord.of(trial).phase)}"
        # a trial another process ran is frozen here: its record is written through the storage
        for key, value in TrialRecord.attrs(fail_reason=f"the process running this trial was killed{during}", interrupted=True).items():
            study._storage.set_trial_user_attr(trial._trial_id, key, value)
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        closed.append(trial.number)
    return closed


def close_dead(study: optuna.Study, *, alone: bool = False) -> list[int]:
    """Close the trials a dead process left RUNNING; returns the numbers closed at once.

    On a shared study only trials whose heartbeat went stale (``storage.close_stale``; other
    workers' trials run on, and the closed ones are re-queued); on a one-process study, or when
    this process is ``alone`` on it (a search on its SQLite file before its --jobs start), every
    RUNNING trial (``close_orphans``).
    """
    if heartbeat_enabled(study) and not alone:
        close_stale(study)
        return []
    return close_orphans(study)


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that count towards --trials: complete, stopped or failed by themselves (not killed or interrupted)."""
    attrs = study.user_attrs
    return [t for t in study.get_trials(deepcopy=False) if _counts(t, attrs)]


def _counts(trial: FrozenTrial, study_attrs: dict[str, Any]) -> bool:
    return trial.state.is_finished() and not TrialRecord.of(trial).interrupted and stale_reason(study_attrs, trial.number) is None


def is_feasible(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.COMPLETE and all(v <= 0 for v in trial.constraints.values())


CONFIRM_TRIALS = 5
"""After a measured search, this many fastest feasible trials are timed again beside the baseline
(``StudyRecord.confirmed_ms``: ``{"baseline": ms, "<trial number>": ms}``); the choice reads those figures."""


def confirm_fastest(ctx: SearchContext, study: optuna.Study) -> dict[str, float] | None:
    """Time the ``CONFIRM_TRIALS`` fastest feasible trials again, interleaved with the baseline, and store it.

    Each trial was timed once, at its own moment; on a shared host that moment's speed differs by more
    than the gap between the best plans, so the fastest figure is often the luckiest timing (a plan
    measured 2.27x in its trial ran 1.45x timed beside the baseline). Only for the "fastest trial" rule
    and a backend that measures; nothing is stored when there is nothing to compare or timing fails.
    """
    StudyRecord.put(study, confirmed_ms=None)  # an earlier run's figures lack this run's trials
    record = StudyRecord.of(study)
    if not ctx.measures or record.latency_budget_ms is not None:
        return None
    feasible = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_feasible(t)]
    fastest = [t for t in sorted(feasible, key=lambda t: t.values[1]) if Path(TrialRecord.of(t).artifact or "").is_file()]
    fastest = fastest[:CONFIRM_TRIALS]
    baseline = Path((record.baseline and record.baseline.artifact) or "")
    if not fastest or not baseline.is_file():
        return None
    from autocomp.latency.base import side_by_side

    try:
        results = side_by_side(ctx.backend, [baseline, *(Path(TrialRecord.of(t).artifact) for t in fastest)], ctx.profile)
    except AutocompError as exc:
        log.warning("the fastest trials could not be timed again beside the baseline (%s); each trial's own timing decides", first_line(exc))
        return None
    confirmed = {"baseline": results[0].median_ms, **{str(t.number): r.median_ms for t, r in zip(fastest, results[1:])}}
    StudyRecord.put(study, confirmed_ms=confirmed)
    return confirmed


def choose_trial(study: optuna.Study) -> tuple[FrozenTrial | None, str]:
    """The configuration to ship, and the rule that chose it (printed and stored)."""
    record = StudyRecord.of(study)
    budget, floor = record.latency_budget_ms, record.accuracy_floor
    feasible = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_feasible(t)]
    if budget is not None:
        rule = f"most accurate trial within the {budget:g} ms latency budget"
        if floor is not None:
            rule += f" and at or above {100 * floor:.1f}% accuracy"
        return max(feasible, key=lambda t: (t.values[0], -t.values[1]), default=None), rule
    rule = "fastest trial" + (f" at or above {100 * floor:.1f}% accuracy" if floor is not None else "")
    confirmed = record.confirmed_ms or {}
    retimed = [t for t in feasible if str(t.number) in confirmed]
    if retimed and "baseline" in confirmed:  # timed again side by side: those figures decide
        rule += f", the {len(retimed)} fastest timed again side by side with the baseline"
        latency_ms = {t.number: confirmed[str(t.number)] for t in retimed}
        candidates, baseline_ms = retimed, confirmed["baseline"]
    else:
        latency_ms = {t.number: t.values[1] for t in feasible}
        candidates, baseline_ms = feasible, record.baseline and record.baseline.latency_ms
    chosen = min(candidates, key=lambda t: (latency_ms[t.number], -t.values[0]), default=None)
    if chosen is not None and isinstance(baseline_ms, (int, float)) and latency_ms[chosen.number] >= baseline_ms:
        # the baseline is not a trial, but it is the alternative: a "fastest" plan slower than it is no answer
        rule += f", faster than the baseline ({baseline_ms:.3f} ms): none is, keep the baseline"
        chosen = None
    return chosen, rule


TrialCallback = Callable[[optuna.Study, FrozenTrial], None]
DATABASE_RETRIES = 5
"""Consecutive failed attempts (waits of 2, 4, ... 32 s) before a search gives up on its database."""


def _database_errors() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return (OperationalError, InterfaceError, optuna.exceptions.StorageInternalError)


DATABASE_ERRORS = _database_errors()


def run_search(
    ctx: SearchContext,
    study: optuna.Study,
    *,
    n_trials: int,
    timeout_s: float | None = None,
    helpers: Callable[[threading.Event], contextlib.AbstractContextManager] | None = None,
    on_trial_start: Callable[[int], None] | None = None,
    on_trial_end: TrialCallback | None = None,
    on_profile: Callable[[int, int], None] | None = None,
    lead: bool = True,
) -> SearchOutcome:
    """Run trials until the study holds ``n_trials`` finished ones (resuming counts earlier ones).

    A new study queues the hand-made anchors first, then (when the space asks for ``proposals``)
    the plans the sensitivity profile proposes (``allocate.queue_proposals``; ``on_profile(done,
    total)`` follows that pass). ``timeout_s`` counts from the call, so that pass is part of it.

    On a shared storage (``autocomp.storage``) other processes work on the same study: the trials
    they run count too, each trial sends heartbeats, and dead workers' trials are closed and
    re-queued. ``lead``: this is the search, not a worker: it queues the plans above and, once
    no trial is left running anywhere, confirms and chooses; a worker only runs trials.
    ``helpers``: the other processes of this search (``workers.local_workers``, ``--jobs``), started
    once the plans above are queued and waited for before the choice; they are given the event
    that says this search was interrupted.
    """
    started = time.monotonic()
    distributions = ctx.space.distributions(
        ctx.teacher, supported_bits=ctx.profile.supported_bits, example_inputs=ctx.task.example_inputs()
    )
    if not distributions:
        raise ConfigError(f"search space {ctx.space.name!r} gives no parameters for this model; nothing to search")
    _check_same_choices(study, distributions)
    shared = heartbeat_enabled(study)
    close_dead(study)
    if lead and not study.get_trials(deepcopy=False):
        for params in anchor_plans(distributions, supported_bits=ctx.profile.supported_bits, fast_bits=ctx.profile.fast_bits):
            study.enqueue_trial(params, skip_if_exists=True)
    if lead and len(finished_trials(study)) < n_trials:
        queue_proposals(ctx, study, distributions, progress=on_profile)
    deadline = None if timeout_s is None else started + timeout_s
    interrupted = threading.Event()
    claimed = [len(finished_trials(study))]

    def taken() -> int:
        """Trials that count or may count: this process's claims, or on a shared study every worker's."""
        if not shared:
            return claimed[0]
        close_stale(study)
        return len(finished_trials(study)) + len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def claim() -> bool:
        if interrupted.is_set() or taken() >= n_trials or (deadline is not None and time.monotonic() >= deadline):
            return False
        claimed[0] += 1
        return True

    def one_trial() -> None:
        trial = study.ask(distributions)
        if shared:
            if _surplus(study, trial, n_trials):
                return
            TrialRecord.put(trial, worker=worker_id())
        if on_trial_start:
            on_trial_start(trial.number)
        with Heartbeat(study, trial):
            frozen = _evaluate(ctx, study, trial, interrupted)
        queue_refined(ctx, study, distributions)
        if on_trial_end and frozen is not None:
            on_trial_end(study, frozen)

    def worker() -> None:
        outages = 0
        while True:
            try:
                if not claim():
                    return
                one_trial()
                outages = 0
            except DATABASE_ERRORS as exc:
                if not shared:  # a SQLite file does not go away and come back; nothing would close the trial
                    raise
                # the database went away: the trial in hand stays RUNNING, its heartbeat stops, and it is
                # closed and re-queued as a dead worker's once the database is back (``storage``)
                outages += 1
                if outages > DATABASE_RETRIES:
                    raise AutocompError(
                        f"the study's database is unreachable after {DATABASE_RETRIES} retries ({masked_url(first_line(exc))}); "
                        "finished trials are kept; run the same command again when it is back"
                    ) from None
                wait_s = min(60, 2 ** outages)
                log.warning("the study's database is unreachable (%s); retry %d of %d in %d s", masked_url(first_line(exc)), outages, DATABASE_RETRIES, wait_s)
                if interrupted.wait(wait_s):
                    return

    with helpers(interrupted) if helpers is not None else contextlib.nullcontext():
        while True:
            try:
                with _interrupt_flag(interrupted):
                    worker()
                    if not (shared and lead) or interrupted.is_set():
                        break
                    _wait_for_others(study, interrupted)
            except KeyboardInterrupt:
                interrupted.set()
            # a trial closed meanwhile as a dead worker's (this process's own, cut off by a database outage,
            # included) left its plan queued and the study short: run on
            if interrupted.is_set() or taken() >= n_trials or (deadline is not None and time.monotonic() >= deadline):
                break
    if not lead:
        return SearchOutcome(study, None, "", interrupted.is_set())
    if not interrupted.is_set():
        confirm_fastest(ctx, study)
    chosen, rule = choose_trial(study)
    StudyRecord.put(study, chosen_trial=None if chosen is None else chosen.number, chosen_rule=rule)
    return SearchOutcome(study, chosen, rule, interrupted.is_set())


def _surplus(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> bool:
    """On a shared study, two workers can both see one trial left and both ask: the later one is
    closed unrun (not counted), its queued plan queued again, so the study ends with exactly ``n_trials``."""
    mine = study._storage.get_trial(trial._trial_id)
    attrs = study.user_attrs
    earlier = [
        t for t in study.get_trials(deepcopy=False)
        if t.number != mine.number and t.datetime_start is not None
        and (t.datetime_start, t.number) < (mine.datetime_start, mine.number)
        and (t.state == TrialState.RUNNING or _counts(t, attrs))
    ]
    if len(earlier) < n_trials:
        return False
    TrialRecord.put(trial, fail_reason=f"not run: the study had its {n_trials} trials when this worker asked", interrupted=True)
    study.tell(trial, state=TrialState.FAIL)
    fixed = mine.system_attrs.get("fixed_params")
    if fixed:
        record = TrialRecord.of(mine)  # what a queued plan carried goes back into the queue with it
        study.enqueue_trial(fixed, user_attrs=TrialRecord.attrs(proposal=record.proposal, requeued_from=record.requeued_from))
    return True


def _wait_for_others(study: optuna.Study, interrupted: threading.Event) -> None:
    """Before choosing, let the trials other workers still run end (or go stale and be closed)."""
    interval = study._storage.get_heartbeat_interval() or 1
    while not interrupted.is_set() and study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        log.info("waiting for the trials other workers run")
        close_stale(study)
        time.sleep(interval)


@contextlib.contextmanager
def _interrupt_flag(interrupted: threading.Event) -> Iterator[None]:
    """Ctrl-C sets ``interrupted`` as well as raising KeyboardInterrupt.

    The flag survives a library that catches the KeyboardInterrupt and raises
    something else (or nothing): the trial is then still closed as interrupted
    and no further trial starts. Only the main thread can own signal handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _check_same_choices(study: optuna.Study, distributions: dict[str, Any]) -> None:
    """Optuna refuses a categorical parameter whose choices changed within a study: say so before any trial."""
    for trial in study.get_trials(deepcopy=False):
        for name, old in trial.distributions.items():
            new = distributions.get(name)
            if isinstance(old, optuna.distributions.CategoricalDistribution) and isinstance(
                new, optuna.distributions.CategoricalDistribution
            ) and old.choices != new.choices:
                raise ConfigError(
                    f"study {study.study_name!r} searched {name} over {list(old.choices)}, and the space now gives "
                    f"{list(new.choices)} (the space or the device changed); start a new search with another "
                    "--study-name or --out"
                )
        if trial.distributions:
            return


def _close_interrupted(study: optuna.Study, trial: optuna.Trial) -> None:
    """Record the trial Ctrl-C cut short as FAIL, with its phase; if the storage refuses now, leave it.

    A Ctrl-C can land inside one of this process's own storage writes, and on SQLite the write that
    closes the trial then met "database is locked" (seen once in about ten fault-suite runs under
    load). That must not turn an interrupt into a crash: the trial stays RUNNING, and the next run
    closes it as left by a stopped process, as it does after a kill.
    """
    from sqlalchemy.exc import SQLAlchemyError

    try:
        during = f" during {phase_name(TrialRecord.of(trial).phase)}"
        TrialRecord.put(trial, fail_reason=f"interrupted by the user{during}", interrupted=True)
        study.tell(trial, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # Ctrl-C landed just after the trial was told: it stays finished, with its result
    except (optuna.exceptions.StorageInternalError, SQLAlchemyError) as exc:
        log.warning("trial %d could not be marked interrupted (%s); the next run closes it", trial.number, first_line(exc))


def _evaluate(ctx: SearchContext, study: optuna.Study, trial: optuna.Trial, interrupted: threading.Event) -> FrozenTrial | None:
    """Run one trial and tell the study how it ended; never lets one trial end the search."""
    try:
        values = run_trial(ctx, trial, study)
        if any(math.isnan(v) for v in values):
            raise AutocompError(f"objective values contain NaN: {values}")
        return study.tell(trial, values)
    except TrialStopped as exc:
        TrialRecord.put(trial, fail_reason=str(exc))
        return study.tell(trial, state=TrialState.PRUNED)
    except KeyboardInterrupt:
        interrupted.set()
        _close_interrupted(study, trial)
        raise
    except Exception as exc:  # any trial failure is recorded with its reason; the search goes on
        if interrupted.is_set():  # Ctrl-C that a library turned into its own error (torch's argument parser does)
            _close_interrupted(study, trial)
            raise KeyboardInterrupt from exc
        reason = str(exc).splitlines()[0] if isinstance(exc, AutocompError) else f"{type(exc).__name__}: {exc}".splitlines()[0]
        log.warning("trial %d failed: %s", trial.number, reason)
        log.debug("trial %d traceback:\n%s", trial.number, traceback.format_exc())
        TrialRecord.put(trial, fail_reason=reason[:500])
        return study.tell(trial, state=TrialState.FAIL)
