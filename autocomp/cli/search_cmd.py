"""``autocomp search``, ``autocomp report`` and ``autocomp export``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from optuna.trial import TrialState
from rich.table import Table

from autocomp.cli.app import app, console, err_console, styled
from autocomp.cli.checks import THREADS_OPTION, check_range, check_seed, check_threads
from autocomp.cli.board_cmd import BOARD_OPTION, KEY_OPTION, KNOWN_HOSTS_OPTION, PYTHON_OPTION, board_args, with_board
from autocomp.cli.progress import RichEvents
from autocomp.errors import ConfigError
from autocomp.knobs import plan_text
from autocomp.record import Baseline, StudyRecord, TrialRecord
from autocomp.storage import GRACE_S

log = logging.getLogger(__name__)

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
    server: Optional[str] = typer.Option(None, "--server", help="With a split: space, the device profile of the server part (e.g. local)."),
    link: Optional[str] = typer.Option(None, "--link", help="With a split: space, the link profile to the server (device_profiles/links/, or a .yaml file)."),
    grace_s: int = typer.Option(
        GRACE_S, help="On a database server: seconds without a heartbeat after which a worker's trial is taken as dead "
        "and its plan queued again (every worker of the study uses this one)."
    ),
) -> None:
    """Search compression plans for DEVICE; prints the Pareto front and writes the HTML report.

    Exit codes: 0 done, 1 every trial of this run failed, 2 bad input, 130 interrupted (finished trials kept).
    """
    from autocomp.api import search as run
    from autocomp.profiles import load_profile

    # Everything a user typed is checked before any work (a model trains, a baseline exports).
    check_range("--trials", trials, low=1)
    check_range("--timeout", timeout, low=0, low_open=True)
    check_range("--latency-budget-ms", latency_budget_ms, low=0, low_open=True)
    check_range("--jobs", jobs, low=1)
    check_range("--grace-s", grace_s, low=6)
    check_threads(threads)
    check_seed("--seed", seed)
    if jobs > 1:
        from autocomp.host import available_cpus

        if jobs > available_cpus():
            err_console.print(styled(
                "warning:", "yellow",
                f"--jobs {jobs} on {available_cpus()} cores: the processes take turns on them (one torch thread each), so "
                "a trial takes longer and the study gains little; --jobs above the core count pays only when trials wait "
                "on a board",
            ))
    profile = with_board(load_profile(device), board=board, key=key, known_hosts=known_hosts, python=python)
    with RichEvents() as events:
        result = run(
            device=device, profile=profile, task=task, space=space, trials=trials, timeout_s=timeout, latency_budget_ms=latency_budget_ms,
            min_accuracy=min_accuracy, sampler=sampler, seed=seed, storage=storage, study_name=study_name, out=out,
            backend=backend, jobs=jobs, threads=threads, grace_s=grace_s, server=server, link=link,
            worker_args=board_args(board=board, key=key, known_hosts=known_hosts, python=python), events=events,
        )
    chosen, final, baseline, out_dir = result.chosen, result.final, result.baseline, result.out_dir
    if final is not None and final.get("promoted"):
        from autocomp.final import promotion_text

        console.print(styled("promoted:", "bold", promotion_text(final)))
    _print_front(result.study, baseline, size_key=result.size_key)
    if chosen is None:
        console.print(styled("no trial meets the constraints", "yellow", f"({result.rule}); try more --trials or a looser floor/budget"))
    else:
        c = chosen
        side = StudyRecord.of(result.study).confirmed_ms or {}
        if str(c.number) in side and side.get("baseline"):
            # the figure the choice read: the trial's own timing was taken at another moment of a drifting host
            speed = (
                f"{side[str(c.number)]:.3f} vs {side['baseline']:.3f} ms timed side by side with the baseline "
                f"({side['baseline'] / side[str(c.number)]:.2f}x faster; {c.values[1]:.3f} ms in its own trial)"
            )
        else:
            speed = f"{c.values[1]:.3f} ms ({baseline.latency_ms / c.values[1]:.2f}x faster)"
        console.print(
            f"chosen: trial {c.number} ({result.rule if not (final or {}).get('promoted') else 'promoted by its final fine-tune'}): "
            f"accuracy {100 * c.values[0]:.2f}%, {speed}, "
            + (f"{c.values[2] / 1e3:.1f} kB{SIZE_NOTE.get(result.size_key, '')} ({getattr(baseline, result.size_key) / c.values[2]:.2f}x smaller)"
               if c.values[2] else "nothing stored on the device (it all runs on the server)")
        )
        if final is not None:
            shipped = "ships" if final["shipped"] == "final" else "scored lower, so the trial's model ships"
            console.print(
                f"final fine-tune ({final['steps']} more steps): accuracy {100 * final['trial_accuracy']:.2f}% -> "
                f"{100 * final['accuracy']:.2f}%, {final['latency_ms']:.3f} ms; it {shipped}"
            )
        console.print(f"export it: autocomp export --study {out_dir} --out {out_dir / 'export'}")
    console.print(f"report: {result.report}")
    if result.interrupted:
        err_console.print(styled("interrupted:", "yellow", "finished trials are kept; run the same command again to resume"))
        raise typer.Exit(130)
    if result.ran and all(t.state == TrialState.FAIL for t in result.ran):
        err_console.print(styled("failed:", "bold red", f"all {len(result.ran)} trials of this run failed; their reasons are above and in the report"))
        raise typer.Exit(1)


SIZE_NOTE = {"zip_bytes": " deflated"}
"""How a size reads: new studies' size objective is the file deflated; older ones' its raw bytes."""


def _print_front(study, baseline: Baseline, *, size_key: str) -> None:
    from autocomp.study import choose_trial

    _, rule = choose_trial(study)
    chosen = StudyRecord.of(study).chosen_trial  # a promoted trial replaces the rule's (final.py)
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    table = Table(title=f"Pareto front ({len(front)} of {len(study.trials)} trials); * = chosen: {rule}")
    for column in ("trial", "accuracy %", "latency ms", "speedup", f"size kB{SIZE_NOTE.get(size_key, '')}"):
        table.add_column(column, justify="right")
    table.add_column("plan", min_width=30, overflow="fold")  # what each technique does in it (``knobs.plan_text``)
    table.add_column("latency source", overflow="fold")
    table.add_row(
        "baseline", f"{100 * baseline.accuracy:.2f}", f"{baseline.latency_ms:.3f}", "1.00x",
        f"{getattr(baseline, size_key) / 1e3:.1f}", "uncompressed", baseline.latency_source,
    )
    for trial in front:
        mark = "*" if trial.number == chosen else ""
        table.add_row(
            f"{mark}{trial.number}", f"{100 * trial.values[0]:.2f}", f"{trial.values[1]:.3f}",
            f"{baseline.latency_ms / trial.values[1]:.2f}x", f"{trial.values[2] / 1e3:.1f}",
            plan_text(trial.params) or "unchanged", TrialRecord.of(trial).latency_source or "",
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
