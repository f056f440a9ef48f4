"""The library entry point: ``autocomp.search(...)`` runs what ``autocomp search`` runs and returns the result.

The command line checks its options, calls this, and prints the result; a script or a notebook calls
it the same way::

    import autocomp
    result = autocomp.search(task="digits", device="jetson-nano", trials=20)
    result.chosen.params        # the chosen plan (None: nothing met the constraints)
    result.report               # the HTML report

Every input is checked before any work, with the one-line ``ConfigError`` the CLI shows; what the
search says goes to ``events`` (``autocomp.events``; by default the ``autocomp`` logger).
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from autocomp.errors import ConfigError
from autocomp.events import Events, Quiet
from autocomp.record import Baseline, StudyRecord
from autocomp.storage import GRACE_S

SETTINGS_KEPT = ("task", "device", "space", "backend", "threads", "server", "link")
"""Settings a study resumes only with: its trials were made with them."""


@dataclass(frozen=True)
class SearchResult:
    """What a search leaves: the study (every trial, kept in its storage), the choice and the files."""

    study: Any  # optuna.Study
    chosen: Any  # the chosen FrozenTrial (a promoted one after the final fine-tune), None when none met the rule
    rule: str  # how it was chosen
    baseline: Baseline  # the uncompressed model as measured (``record.Baseline``)
    final: dict[str, Any] | None  # the final fine-tune's record (``StudyRecord.final``), None when the space asks for none
    interrupted: bool
    out_dir: Path
    report: Path | None
    size_key: str  # which size the third objective is (``zip_bytes`` deflated, or ``size_bytes`` raw)
    ran: tuple[Any, ...] = field(default=())  # the trials this process ran, as they ended


def study_name_for(task: str, device: str) -> str:
    """The default study name: ``<task>-<device>`` with anything but letters, digits, ``_.-`` replaced."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{Path(task.split(':')[0]).stem}-{device}").strip("-")


def search(
    *,
    device: str,
    task: str = "digits",
    space: str = "auto",
    trials: int = 20,
    timeout_s: float | None = None,
    latency_budget_ms: float | None = None,
    min_accuracy: str = "-1",
    sampler: str = "tpe",
    seed: int = 0,
    storage: str | None = None,
    study_name: str | None = None,
    out: Path | None = None,
    backend: str = "estimate",
    jobs: int = 1,
    threads: int | None = None,
    grace_s: int = GRACE_S,
    worker_args: Sequence[str] = (),
    report: bool = True,
    events: Events | None = None,
    profile: Any = None,
    server: str | None = None,
    link: str | None = None,
) -> SearchResult:
    """Search compression plans for ``device`` (a profile name or a profile's YAML file) and return the result.

    The arguments are the CLI's options (``autocomp search --help``). ``out``: the run folder (default
    ``reports/<study name>``); ``storage``: an Optuna storage URL (default: ``study.db`` in it). A
    study that exists resumes with its finished trials kept. ``jobs``: processes running trials
    (N - 1 ``autocomp worker`` children, started with ``worker_args``). ``report``: write ``report.html``.
    ``profile``: the device's ``DeviceProfile`` as deployed when it is not the file's (the CLI's --board
    applied); the study records ``device`` as given, which is what its workers load. ``server`` and ``link``
    (a device profile and a link profile) price a space that searches a split (``split:``) end to end.
    Raises ``ConfigError`` for bad input, before any work.
    """
    from autocomp.runlock import exclusive_run
    from autocomp.setup import Setup
    from autocomp.storage import is_shared
    from autocomp.study import check_storage, default_storage, distributions_sha, make_sampler, open_study, parse_accuracy_spec

    events = events or Quiet()
    parse_accuracy_spec(min_accuracy)
    if storage is not None:
        check_storage(storage)
    on_server = storage is not None and is_shared(storage)
    parallel = on_server or jobs > 1  # several processes on the study: heartbeats, and a sampler that knows
    chosen_sampler = make_sampler(sampler, seed=seed, parallel=parallel)
    name = study_name or study_name_for(task, device)
    out_dir = (Path(out) if out is not None else Path("reports") / name).resolve()
    storage_url = storage or default_storage(out_dir)
    setup = Setup.load(
        task=task, device=profile if profile is not None else device, space=space, backend=backend, threads=threads,
        storage=storage_url, events=events, server=server, link=link,
    )
    if setup.space is not None:  # a split space without its server and link fails before the model trains
        check_split({f"{k}/" for k in setup.space.knobs}, link=link)
    with exclusive_run(out_dir, storage=storage_url, study_name=name, shared=on_server):
        teacher = setup.teacher()
        space_name, search_space = setup.space_for(teacher)
        # the model must export and the space give parameters for it before a study is written
        from autocomp.export import check_outputs

        check_outputs(teacher, tuple(setup.task.example_inputs()))
        distributions = search_space.distributions(teacher, supported_bits=setup.profile.supported_bits, example_inputs=setup.task.example_inputs())
        check_split(distributions, link=link)
        settings = {
            "task": task, "device": device, "space": space_name, "backend": backend, "seed": seed, "sampler": sampler,
            "threads": setup.profile.runtime.threads,
            # what an 'autocomp worker' reads back, so that it needs only the storage and the study name
            "trials": trials, "min_accuracy": min_accuracy, "latency_budget_ms": latency_budget_ms,
            "space_sha256": distributions_sha(distributions), "grace_s": grace_s, "server": server, "link": link,
        }
        study = open_study(storage=storage_url, study_name=name, sampler=chosen_sampler, grace_s=grace_s, shared=parallel)
        check_same_settings(study, settings, name)
        _say_resumed(study, events, alone=not on_server)
        ctx, baseline = setup.prepare(study, teacher, search_space, out_dir=out_dir, settings=settings, seed=seed, latency_budget_ms=latency_budget_ms)
        helpers = None
        if jobs > 1:
            from autocomp.workers import local_workers

            helpers = functools.partial(
                local_workers, jobs - 1, storage=storage_url, study_name=name, out_dir=out_dir,
                stop_at=None if timeout_s is None else time.time() + timeout_s, extra_args=list(worker_args),
            )
        outcome, ran = _run(ctx, study, trials=trials, timeout_s=timeout_s, helpers=helpers, events=events)
        final = None if outcome.interrupted else _final_finetune(ctx, study, outcome.chosen, events)
        chosen = outcome.chosen
        if final is not None and final.get("promoted"):
            chosen = study.trials[final["trial"]]
        report_path = None
        if report:
            from autocomp.report import write_report

            with events.status("writing the HTML report"):
                report_path = write_report(outcome.study, out_dir / "report.html")
    return SearchResult(
        study=outcome.study, chosen=chosen, rule=outcome.rule, baseline=baseline, final=final, interrupted=outcome.interrupted,
        out_dir=out_dir, report=report_path, size_key=ctx.size_key, ran=tuple(ran),
    )


def check_split(distributions: Iterable[str], *, link: str | None) -> None:
    """A space that searches a split needs the server and the link it is priced across, and only such a space takes
    them. ``distributions``: the parameter names (or the knobs' prefixes) the space gives."""
    searched = any(name.startswith("split/") for name in distributions)
    if searched and link is None:
        raise ConfigError("the space searches where to cut the model (split:); give the server and the link: --server NAME --link NAME")
    if link is not None and not searched:
        raise ConfigError("--server and --link price a split, and the space searches none; add a split: section (see 'autocomp splits')")


def check_same_settings(study, settings: dict, name: str) -> None:
    """A study resumes only with what its trials were made with (latencies timed at other threads do not mix)."""
    record = StudyRecord.of(study)
    if not record.settings:
        return
    # studies from before --threads recorded the thread count only in their profile
    stored = {"threads": ((record.profile or {}).get("runtime") or {}).get("threads"), **record.settings}
    keys = [k for k in SETTINGS_KEPT if stored.get(k) is not None or k != "threads"]
    if any(stored.get(k) != settings[k] for k in keys):
        changed = [k for k in keys if stored.get(k) != settings[k]]
        diff = ", ".join(f"{k}={stored.get(k)!r}" for k in changed)
        resume = f"resume it with --threads {stored['threads']}, or " if changed == ["threads"] else ""
        raise ConfigError(f"study {name!r} was created with {diff}; {resume}use another --study-name (or --out) for a new search")


def _say_resumed(study, events: Events, *, alone: bool) -> None:
    """A resumed study says what it kept and which trials it closed because their process died."""
    from autocomp.study import close_dead, finished_trials

    closed = close_dead(study, alone=alone)
    kept = finished_trials(study)
    if kept or closed:
        numbers = ", ".join(f"#{n}" for n in closed)
        events.say(
            f"resuming study {study.study_name!r}: {len(kept)} finished trials kept"
            + (f"; closed {len(closed)} left running by a killed process ({numbers})" if closed else "")
        )


def _run(ctx, study, *, trials: int, timeout_s: float | None, helpers, events: Events):
    from autocomp.study import finished_trials, run_search

    done_before = len(finished_trials(study))
    if done_before >= trials:
        events.say(f"study already holds {done_before} finished trials (--trials {trials}); raise --trials to run more")
    events.progress("trials", min(done_before, trials), trials)
    ran: list = []

    def on_end(study_, trial) -> None:
        ran.append(trial)
        # every process's trials count: other workers' too
        events.progress("trials", min(len(finished_trials(study_)), trials), trials)
        events.trial_ended(study_, trial)

    outcome = run_search(
        ctx, study, n_trials=trials, timeout_s=timeout_s, helpers=helpers, on_trial_end=on_end,
        on_profile=lambda done, total: events.progress("sensitivity", done, total),
    )
    events.progress("trials", min(len(finished_trials(study)), trials), trials)  # the last ones may be other workers'
    return outcome, ran


def _final_finetune(ctx, study, chosen, events: Events):
    """The final fine-tune (the space's ``final_steps``) of each promoted trial it tries and of the chosen one."""
    from autocomp.final import final_finetune

    if ctx.space.finetune.final_steps <= 0:
        return None
    return final_finetune(ctx, study, chosen, on_step=lambda step, steps, trial: events.progress(f"final fine-tune of trial {trial}", step, steps))
