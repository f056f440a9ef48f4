"""``autocomp search``, ``autocomp report`` and ``autocomp export``."""

from __future__ import annotations

import functools
import logging
import re
import time
from pathlib import Path
from typing import Optional

import typer
from optuna.trial import TrialState
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text
from rich.table import Table

from autocomp.cli.app import app, console, err_console, styled
from autocomp.cli.checks import THREADS_OPTION, check_range, check_seed, check_threads
from autocomp.cli.board_cmd import BOARD_OPTION, KEY_OPTION, KNOWN_HOSTS_OPTION, PYTHON_OPTION, board_args
from autocomp.cli.setup import Setup
from autocomp.errors import ConfigError
from autocomp.precision import precision_mix
from autocomp.storage import GRACE_S

log = logging.getLogger(__name__)

_SETTINGS = ("task", "device", "space", "backend", "threads")


def _study_name(task: str, device: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{Path(task.split(':')[0]).stem}-{device}").strip("-")


@app.command()
def search(
    device: str = typer.Option(..., "--device", "-d", help="Target device profile (see 'autocomp profiles list')."),
    task: str = typer.Option("digits", help="Built-in task, 'package.module:factory' or 'path/to/file.py:factory'."),
    space: str = typer.Option(
        "auto", help="Search space name (search_spaces/) or path to a YAML file; auto: transformer for a model with "
        "self-attention, else default."
    ),
    trials: int = typer.Option(20, help="Total trials in the study (a resumed study counts its finished ones)."),
    timeout: Optional[float] = typer.Option(None, help="Stop starting new trials after this many seconds."),
    latency_budget_ms: Optional[float] = typer.Option(None, help="Latency budget on the device, ms (a constraint)."),
    min_accuracy: str = typer.Option("-1", help="Accuracy floor: 0.97 or 97% (absolute), or -1 = one point below baseline."),
    sampler: str = typer.Option("tpe", help="Optuna sampler: tpe, nsga2, gp or random."),
    seed: int = typer.Option(0, help="Seed for the sampler and fine-tuning."),
    storage: Optional[str] = typer.Option(
        None, envvar="AUTOCOMP_STORAGE",
        help="Optuna storage URL (default: sqlite file in the run folder; $AUTOCOMP_STORAGE keeps a password out of the process list).",
    ),
    study_name: Optional[str] = typer.Option(None, help="Study name (default: <task>-<device>)."),
    out: Optional[Path] = typer.Option(None, help="Run folder (default: reports/<study-name>/)."),
    backend: str = typer.Option("estimate", help="Latency backend: estimate, local or ssh."),
    board: Optional[str] = BOARD_OPTION,
    key: Optional[Path] = KEY_OPTION,
    known_hosts: Optional[Path] = KNOWN_HOSTS_OPTION,
    python: Optional[str] = PYTHON_OPTION,
    jobs: int = typer.Option(1, help="Processes running trials on this machine: this search and N - 1 workers on its study."),
    threads: Optional[int] = THREADS_OPTION,
    grace_s: int = typer.Option(
        GRACE_S, help="On a database server: seconds without a heartbeat after which a worker's trial is taken as dead "
        "and its plan queued again (every worker of the study uses this one)."
    ),
) -> None:
    """Search compression plans for DEVICE; prints the Pareto front and writes the HTML report.

    Exit codes: 0 done, 1 every trial of this run failed, 2 bad input, 130 interrupted (finished trials kept).
    """
    from autocomp.runlock import exclusive_run
    from autocomp.storage import is_shared
    from autocomp.study import check_storage, default_storage, distributions_sha, make_sampler, open_study, parse_accuracy_spec
    from autocomp.workers import local_workers

    # Everything a user typed is checked before any work (a model trains, a baseline exports).
    check_range("--trials", trials, low=1)
    check_range("--timeout", timeout, low=0, low_open=True)
    check_range("--latency-budget-ms", latency_budget_ms, low=0, low_open=True)
    check_range("--jobs", jobs, low=1)
    check_range("--grace-s", grace_s, low=6)
    check_threads(threads)
    check_seed("--seed", seed)
    parse_accuracy_spec(min_accuracy)
    if jobs > 1:
        from autocomp.host import available_cpus

        if jobs > available_cpus():
            err_console.print(styled(
                "warning:", "yellow",
                f"--jobs {jobs} on {available_cpus()} cores: the processes take turns on them (one torch thread each), so "
                "a trial takes longer and the study gains little; --jobs above the core count pays only when trials wait "
                "on a board",
            ))
    if storage is not None:
        check_storage(storage)
    on_server = storage is not None and is_shared(storage)
    parallel = on_server or jobs > 1  # several processes on the study: heartbeats, and a sampler that knows
    chosen_sampler = make_sampler(sampler, seed=seed, parallel=parallel)
    name = study_name or _study_name(task, device)
    out_dir = (out or Path("reports") / name).resolve()
    storage_url = storage or default_storage(out_dir)
    setup = Setup.load(
        task=task, device=device, space=space, backend=backend, threads=threads, storage=storage_url,
        board=board, key=key, known_hosts=known_hosts, python=python,
    )
    with exclusive_run(out_dir, storage=storage_url, study_name=name, shared=on_server):
        teacher = setup.teacher()
        space, search_space = setup.space_for(teacher)
        # the model must export and the space give parameters for it before a study is written
        from autocomp.export import check_outputs

        check_outputs(teacher, tuple(setup.task.example_inputs()))
        distributions = search_space.distributions(teacher, supported_bits=setup.profile.supported_bits, example_inputs=setup.task.example_inputs())
        settings = {
            "task": task, "device": device, "space": space, "backend": backend, "seed": seed, "sampler": sampler,
            "threads": setup.profile.runtime.threads,
            # what an 'autocomp worker' reads back, so that it needs only the storage and the study name
            "trials": trials, "min_accuracy": min_accuracy, "latency_budget_ms": latency_budget_ms,
            "space_sha256": distributions_sha(distributions), "grace_s": grace_s,
        }
        study = open_study(storage=storage_url, study_name=name, sampler=chosen_sampler, grace_s=grace_s, shared=parallel)
        _check_same_settings(study, settings, name)
        _say_resumed(study, alone=not on_server)
        ctx, baseline = setup.prepare(study, teacher, search_space, out_dir=out_dir, settings=settings, seed=seed, latency_budget_ms=latency_budget_ms)
        helpers = None if jobs == 1 else functools.partial(
            local_workers, jobs - 1, storage=storage_url, study_name=name, out_dir=out_dir,
            stop_at=None if timeout is None else time.time() + timeout, extra_args=board_args(board=board, key=key, known_hosts=known_hosts, python=python),
        )
        outcome, ran = _run_with_progress(ctx, study, trials=trials, timeout=timeout, helpers=helpers)
        final = None if outcome.interrupted else _final_finetune(ctx, study, outcome.chosen)
        chosen = outcome.chosen
        if final is not None and final.get("promoted"):
            from autocomp.final import promotion_text

            chosen = study.trials[final["trial"]]
            console.print(styled("promoted:", "bold", promotion_text(final)))
        _print_front(outcome.study, baseline, size_key=ctx.size_key)
        report_path = _write_report(outcome.study, out_dir)
    if chosen is None:
        console.print(styled("no trial meets the constraints", "yellow", f"({outcome.rule}); try more --trials or a looser floor/budget"))
    else:
        c = chosen
        side = outcome.study.user_attrs.get("confirmed_ms") or {}
        if str(c.number) in side and side.get("baseline"):
            # the figure the choice read: the trial's own timing was taken at another moment of a drifting host
            speed = (
                f"{side[str(c.number)]:.3f} vs {side['baseline']:.3f} ms timed side by side with the baseline "
                f"({side['baseline'] / side[str(c.number)]:.2f}x faster; {c.values[1]:.3f} ms in its own trial)"
            )
        else:
            speed = f"{c.values[1]:.3f} ms ({baseline['latency_ms'] / c.values[1]:.2f}x faster)"
        console.print(
            f"chosen: trial {c.number} ({outcome.rule if c is outcome.chosen else 'promoted by its final fine-tune'}): accuracy {100 * c.values[0]:.2f}%, {speed}, "
            f"{c.values[2] / 1e3:.1f} kB{SIZE_NOTE.get(ctx.size_key, '')} ({baseline[ctx.size_key] / c.values[2]:.2f}x smaller)"
        )
        if final is not None:
            shipped = "ships" if final["shipped"] == "final" else "scored lower, so the trial's model ships"
            console.print(
                f"final fine-tune ({final['steps']} more steps): accuracy {100 * final['trial_accuracy']:.2f}% -> "
                f"{100 * final['accuracy']:.2f}%, {final['latency_ms']:.3f} ms; it {shipped}"
            )
        console.print(f"export it: autocomp export --study {out_dir} --out {out_dir / 'export'}")
    console.print(f"report: {report_path}")
    if outcome.interrupted:
        err_console.print(styled("interrupted:", "yellow", "finished trials are kept; run the same command again to resume"))
        raise typer.Exit(130)
    if ran and all(t.state == TrialState.FAIL for t in ran):
        err_console.print(styled("failed:", "bold red", f"all {len(ran)} trials of this run failed; their reasons are above and in the report"))
        raise typer.Exit(1)


def _final_finetune(ctx, study, chosen):
    """The final fine-tune (the space's ``final_steps``) of each promoted trial it tries and of the chosen one, with progress bars."""
    from autocomp.final import final_finetune

    if ctx.space.finetune.final_steps <= 0:
        return None
    columns = (
        SpinnerColumn(), TextColumn("[bold]final fine-tune {task.description}", markup=False), BarColumn(),
        MofNCompleteColumn(), TimeElapsedColumn(), TrialsLeftColumn(),
    )
    bars: dict[int, object] = {}
    with Progress(*columns, console=console, transient=False) as progress:
        def on_step(step: int, steps: int, trial: int) -> None:
            if trial not in bars:  # one bar per trial tried, so a promotion that fell short stays visible
                bars[trial] = progress.add_task(f"of trial {trial}", total=steps, done_here=0, started_s=time.monotonic())
            progress.update(bars[trial], completed=step, done_here=step)

        return final_finetune(ctx, study, chosen, on_step=on_step)


def _say_resumed(study, *, alone: bool) -> None:
    """A resumed study says what it kept and which trials it closed because their process died."""
    from autocomp.study import close_dead, finished_trials

    closed = close_dead(study, alone=alone)
    kept = finished_trials(study)
    if kept or closed:
        numbers = ", ".join(f"#{n}" for n in closed)
        console.print(
            f"resuming study {study.study_name!r}: {len(kept)} finished trials kept"
            + (f"; closed {len(closed)} left running by a killed process ({numbers})" if closed else "")
        )


def _check_same_settings(study, settings: dict, name: str) -> None:
    """A study resumes only with what its trials were made with (latencies timed at other threads do not mix)."""
    stored = study.user_attrs.get("settings")
    if not stored:
        return
    # studies from before --threads recorded the thread count only in their profile
    stored = {"threads": ((study.user_attrs.get("profile") or {}).get("runtime") or {}).get("threads"), **stored}
    keys = [k for k in _SETTINGS if stored.get(k) is not None or k != "threads"]
    if any(stored.get(k) != settings[k] for k in keys):
        changed = [k for k in keys if stored.get(k) != settings[k]]
        diff = ", ".join(f"{k}={stored.get(k)!r}" for k in changed)
        resume = f"resume it with --threads {stored['threads']}, or " if changed == ["threads"] else ""
        raise ConfigError(f"study {name!r} was created with {diff}; {resume}use another --study-name (or --out) for a new search")


def _run_with_progress(ctx, study, *, trials: int, timeout: float | None, helpers):
    from autocomp.study import choose_trial, finished_trials, run_search

    done_before = len(finished_trials(study))
    if done_before >= trials:
        console.print(f"study already holds {done_before} finished trials (--trials {trials}); raise --trials to run more")
    columns = (
        SpinnerColumn(), TextColumn("[bold]{task.fields[what]}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TrialsLeftColumn(), TextColumn("{task.description}", markup=False),
    )
    ran: list = []
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(
            "", total=trials, completed=min(done_before, trials), done_here=0, started_s=time.monotonic(), what="trials"
        )
        profiling: list = []

        def on_profile(done: int, total: int) -> None:
            # the sensitivity pass: every single-parameter change, scored and priced once per study
            if not profiling:
                profiling.append(progress.add_task(
                    "each change alone: accuracy and estimated latency", total=total, done_here=0,
                    started_s=time.monotonic(), what="sensitivity",
                ))
            progress.update(profiling[0], completed=done, done_here=done)

        def on_end(study_, trial) -> None:
            chosen, _ = choose_trial(study_)
            best = "no feasible trial yet" if chosen is None else (
                f"best: #{chosen.number} {100 * chosen.values[0]:.1f}% {chosen.values[1]:.3f} ms"
            )
            status = trial.state.name.lower()
            reason = trial.user_attrs.get("fail_reason")
            if reason:
                progress.console.print(f"  trial {trial.number} {status}: {reason}", highlight=False, markup=False)
            ran.append(trial)
            # every process's trials: other workers' count too
            progress.update(bar, completed=min(len(finished_trials(study_)), trials), description=best, done_here=len(ran))

        outcome = run_search(ctx, study, n_trials=trials, timeout_s=timeout, helpers=helpers, on_trial_end=on_end, on_profile=on_profile)
        progress.update(bar, completed=min(len(finished_trials(study)), trials))  # the last ones may be other workers'
    return outcome, ran


class TrialsLeftColumn(ProgressColumn):
    """Time left from the trials this run has finished (rich's own estimate needs a sample every 30 s,
    which trials of a minute never give, so it showed -:--:-- for the whole search)."""

    def render(self, task) -> Text:
        done, started = task.fields.get("done_here", 0), task.fields.get("started_s")
        remaining = None if task.total is None else task.total - task.completed
        if not done or started is None or remaining is None:
            return Text("left: after the first one", style="progress.remaining")
        seconds = int((time.monotonic() - started) / done * max(remaining, 0))
        return Text(f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d} left", style="progress.remaining")


SIZE_NOTE = {"zip_bytes": " deflated"}
"""How a size reads: new studies' size objective is the file deflated; older ones' its raw bytes."""


def _print_front(study, baseline: dict, *, size_key: str) -> None:
    from autocomp.study import choose_trial

    _, rule = choose_trial(study)
    chosen = study.user_attrs.get("chosen_trial")  # a promoted trial replaces the rule's (final.py)
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    table = Table(title=f"Pareto front ({len(front)} of {len(study.trials)} trials); * = chosen: {rule}")
    for column in ("trial", "accuracy %", "latency ms", "speedup", f"size kB{SIZE_NOTE.get(size_key, '')}", "width", "mean prune", "precisions", "latency source"):
        table.add_column(column, justify="right")
    table.add_row(
        "baseline", f"{100 * baseline['accuracy']:.2f}", f"{baseline['latency_ms']:.3f}", "1.00x",
        f"{baseline[size_key] / 1e3:.1f}", "1.0", "0.00", "all 32", baseline["latency_source"],
    )
    for trial in front:
        params = trial.params
        prunes = [v for k, v in params.items() if k.startswith("prune/")]
        bits = [v for k, v in params.items() if k.startswith("bits/")]
        mark = "*" if trial.number == chosen else ""
        table.add_row(
            f"{mark}{trial.number}", f"{100 * trial.values[0]:.2f}", f"{trial.values[1]:.3f}",
            f"{baseline['latency_ms'] / trial.values[1]:.2f}x", f"{trial.values[2] / 1e3:.1f}",
            f"{params.get('distill/width', 1.0):g}", f"{sum(prunes) / len(prunes):.2f}" if prunes else "-",
            precision_mix(bits) or "-",
            str(trial.user_attrs.get("latency_source", "")),
        )
    console.print(table)


def _write_report(study, out_dir: Path) -> Path:
    from autocomp.report import write_report

    with console.status("writing the HTML report"):
        return write_report(study, out_dir / "report.html")


STORAGE_OPTION = typer.Option(
    None, "--storage", envvar="AUTOCOMP_STORAGE",
    help="The study's database when it is not the run folder's study.db (a search run with --storage or $AUTOCOMP_STORAGE).",
)


def _open_run(study_dir: Path, study_name: str | None, storage: str | None):
    from autocomp.study import default_storage, load_existing_study

    if storage is not None:
        return load_existing_study(storage, study_name)
    if not (study_dir / "study.db").is_file():
        raise ConfigError(f"{study_dir} holds no study.db; pass the run folder written by 'autocomp search' (reports/<name>)")
    return load_existing_study(default_storage(study_dir), study_name)


@app.command()
def report(
    study: Path = typer.Option(..., "--study", help="Run folder written by 'autocomp search' (reports/<name>)."),
    study_name: Optional[str] = typer.Option(None, help="Study name, when the storage holds several."),
    out: Optional[Path] = typer.Option(None, help="Output HTML file (default: <study>/report.html)."),
    storage: Optional[str] = STORAGE_OPTION,
) -> None:
    """Regenerate the HTML report of a search."""
    loaded = _open_run(study, study_name, storage)
    from autocomp.report import write_report

    path = write_report(loaded, out or study / "report.html", run_dir=study)
    console.print(f"report: {path}", highlight=False)


@app.command()
def export(
    study: Path = typer.Option(..., "--study", help="Run folder written by 'autocomp search' (reports/<name>)."),
    out: Path = typer.Option(..., "--out", help="Folder to write model.onnx, model.pt2, plan.json, metrics.json."),
    trial: Optional[str] = typer.Option(None, help="Trial number, or 'baseline' (default: the chosen trial)."),
    study_name: Optional[str] = typer.Option(None, help="Study name, when the storage holds several."),
    storage: Optional[str] = STORAGE_OPTION,
) -> None:
    """Write the chosen (or a named) trial's model and its metrics."""
    from autocomp.ship import export_trial

    loaded = _open_run(study, study_name, storage)
    written = export_trial(loaded, study, out, trial=trial)
    for path in written:
        console.print(f"wrote {path}", highlight=False)
