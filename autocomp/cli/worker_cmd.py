"""``autocomp worker``: one more process on a study that ``autocomp search`` started on a database server."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Optional

import typer

from autocomp.cli.app import app, console
from autocomp.cli.board_cmd import BOARD_OPTION, KEY_OPTION, KNOWN_HOSTS_OPTION, PYTHON_OPTION, with_board
from autocomp.record import StudyRecord
from autocomp.cli.progress import RichEvents
from autocomp.errors import ConfigError


@app.command()
def worker(
    storage: str = typer.Option(
        ..., envvar="AUTOCOMP_STORAGE",
        help="The study's database, e.g. postgresql://user@db:5432/autocomp (password masked in every output; "
        "from $AUTOCOMP_STORAGE, it stays out of the process list).",
    ),
    study_name: str = typer.Option(..., help="The study 'autocomp search --study-name' started."),
    out: Optional[Path] = typer.Option(None, help="This worker's folder for its trials' files (default: reports/<study>/worker-<host>-<pid>/)."),
    board: Optional[str] = BOARD_OPTION,
    key: Optional[Path] = KEY_OPTION,
    known_hosts: Optional[Path] = KNOWN_HOSTS_OPTION,
    python: Optional[str] = PYTHON_OPTION,
    lead_pid: Optional[int] = typer.Option(None, hidden=True, help="Set by 'autocomp search --jobs': the search this worker serves."),
    stop_at: Optional[float] = typer.Option(None, hidden=True, help="Set by 'autocomp search --jobs --timeout': start no trial after this time (epoch s)."),
    torch_threads: Optional[int] = typer.Option(None, hidden=True, help="Set by 'autocomp search --jobs': torch threads for the trials (the cores shared out)."),
) -> None:
    """Run trials of a shared study until it holds its --trials; everything else is read from the study.

    The task, space, device, backend, threads, floor and trial count are the ones the search stored;
    a worker whose task trains another model, or whose space gives other parameters, is refused.
    The search process chooses, fine-tunes and reports once every trial has ended.
    """
    from autocomp.storage import is_shared
    from autocomp.runlock import exclusive_run
    from autocomp.study import check_storage, distributions_sha, finished_trials, make_sampler, open_study, run_search

    check_storage(storage)
    if lead_pid is not None:
        from autocomp.workers import watch_lead

        watch_lead(lead_pid)
    elif not is_shared(storage):
        raise ConfigError(
            "a worker needs a study on a database server (--storage postgresql://...); on one machine, "
            "'autocomp search --jobs N' runs N processes on its SQLite study"
        )
    study = open_study(storage=storage, study_name=study_name, sampler=make_sampler("random", seed=None), create=False, shared=True)
    settings = StudyRecord.of(study).settings or {}
    if "space_sha256" not in settings:
        raise ConfigError(f"study {study_name!r} was not started by 'autocomp search' of this version (no stored settings); start it with autocomp search --storage")
    # again with the search's sampler and grace (which decides when a trial is dead, for every worker alike);
    # each worker samples with its own seed: with the search's seed, samplers in step propose the same plans
    study = open_study(
        storage=storage, study_name=study_name, sampler=make_sampler(settings["sampler"], seed=None, parallel=True),
        grace_s=settings["grace_s"], create=False, shared=True,
    )
    from autocomp.profiles import load_profile
    from autocomp.setup import Setup

    device = with_board(load_profile(settings["device"]), board=board, key=key, known_hosts=known_hosts, python=python)
    setup = Setup.load(
        task=settings["task"], device=device, space=settings["space"], backend=settings["backend"],
        threads=settings["threads"], storage=storage, events=RichEvents(), server=settings.get("server"), link=settings.get("link"),
    )
    out_dir = (out or Path("reports") / study_name / f"worker-{socket.gethostname()}-{os.getpid()}").resolve()
    with exclusive_run(out_dir, storage=storage, study_name=study_name, shared=True):
        teacher = setup.teacher()  # with every core, as the search built it: a model trained on first use gets the same weights
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        _, space = setup.space_for(teacher)
        distributions = space.distributions(teacher, supported_bits=setup.profile.supported_bits, example_inputs=setup.task.example_inputs())
        if distributions_sha(distributions) != settings["space_sha256"]:
            raise ConfigError(
                f"this worker's space {settings['space']!r} gives other parameters than the study's; install the same "
                "version of the space (and task) as the search's machine"
            )
        ctx, _ = setup.prepare(
            study, teacher, space, out_dir=out_dir, settings=settings, seed=settings["seed"],
            latency_budget_ms=settings.get("latency_budget_ms"), join=True,
        )
        ran: list = []
        outcome = run_search(
            ctx, study, n_trials=int(settings["trials"]), lead=False, on_trial_end=lambda _, t: ran.append(t),
            timeout_s=None if stop_at is None else max(0.0, stop_at - time.time()),
        )
    console.print(f"worker done: {len(ran)} trials here; the study holds {len(finished_trials(study))} of {settings['trials']}")
    if outcome.interrupted:
        raise typer.Exit(130)
