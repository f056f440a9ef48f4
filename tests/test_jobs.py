"""``autocomp search --jobs N``: N processes on one SQLite study, none left behind when the search stops.

The search starts N - 1 ``autocomp worker`` children; their trials and the search's share one study
(Optuna's RDB storage with heartbeats on the SQLite file). SIGKILL the search in the middle: its
children notice their parent is gone and stop. SIGINT the search alone: it interrupts them. The same
command run again keeps every finished trial, closes the ones the dead processes left running, and
completes the study.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from optuna.trial import TrialState

from autocomp.record import TrialRecord
from autocomp.study import default_storage, finished_trials, load_existing_study
from sshd import find_processes
from waiting import wait_for
from test_search import SPACE as BASE_SPACE

TESTS = Path(__file__).parent
SPACE = BASE_SPACE.replace("finetune: {steps: 8,", "finetune: {steps: 60,")  # trials of a few seconds
assert SPACE != BASE_SPACE


def _children_of(lead_pid: int) -> list[int]:
    """The worker processes a search started (their command line names it with --lead-pid)."""
    return find_processes(f"--lead-pid {lead_pid} ")


def _study(out: Path):
    try:
        return load_existing_study(default_storage(out), "jobs")
    except Exception:
        return None


def _started(argv: list[str], out: Path) -> tuple[subprocess.Popen, list[int]]:
    """The search running, with its 2 workers, once one of them has finished a trial."""
    lead = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children = wait_for(lambda: _children_of(lead.pid) if len(_children_of(lead.pid)) == 2 else None, timeout_s=120, what="2 workers")
    before = len(finished_trials(_study(out))) if _study(out) else 0

    def a_child_finished_a_trial():
        study = _study(out)
        return study is not None and any(
            (TrialRecord.of(t).worker or "").endswith(f":{pid}") for t in finished_trials(study)[before:] for pid in children
        )

    wait_for(a_child_finished_a_trial, timeout_s=300, what="a trial run by a worker process")
    return lead, children


def _stopped(lead: subprocess.Popen, children: list[int], how: signal.Signals) -> int:
    """Signal the search alone (not its process group); its workers must stop soon after, by themselves."""
    try:
        lead.send_signal(how)
        lead.communicate(timeout=120)
        # well before they could have finished the study
        wait_for(lambda: not any(_alive(pid) for pid in children), timeout_s=20, what="the workers to stop")
    finally:
        if lead.poll() is None:
            lead.kill()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    return lead.returncode


def test_jobs_are_processes_and_a_stopped_search_leaves_none_behind(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    out = tmp_path / "run"
    def argv(trials: int) -> list[str]:
        return [
            sys.executable, "-m", "autocomp", "search", "--device", "local", "--task", f"{TESTS / 'search_tasks.py'}:shapes",
            "--space", str(space), "--trials", str(trials), "--backend", "estimate", "--out", str(out), "--study-name", "jobs",
            "--seed", "1", "--jobs", "3",
        ]  # fmt: skip

    # a study far larger than the stopped runs can finish, however fast this machine is today
    assert _stopped(*_started(argv(200), out), signal.SIGKILL) == -signal.SIGKILL  # killed: the workers notice
    killed_kept = len(finished_trials(_study(out)))
    assert _stopped(*_started(argv(200), out), signal.SIGINT) == 130  # Ctrl-C: the search interrupts its workers
    kept = len(finished_trials(_study(out)))
    assert killed_kept < kept < 200
    # resumed with a few more trials to go (the stored --trials follows the new search, its workers' too)
    resumed = subprocess.run(argv(kept + 6), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming study 'jobs': {kept} finished trials kept" in resumed.stdout
    study = _study(out)
    done = finished_trials(study)
    assert len(done) == kept + 6
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert len(Counter(TrialRecord.of(t).worker for t in done)) >= 3  # a worker of each stopped run, and the last search
    assert "chosen: trial" in resumed.stdout or "no trial meets the constraints" in resumed.stdout


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"
