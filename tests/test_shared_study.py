"""One study, several processes, on a real PostgreSQL server started by the test.

A search and a worker share a study: together they finish exactly --trials trials,
each queued plan runs once, both run trials, and the report and export read the
study from the server. A worker SIGKILLed in the middle of a trial leaves it
RUNNING; its heartbeat goes stale, the search closes it FAILED with the reason and
runs its plan again, once. The password is in no output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

from autocomp.record import TrialRecord
from autocomp.storage import stale_reason
from autocomp.study import finished_trials, load_existing_study
from postgres import PASSWORD
from waiting import wait_for
from test_search import SPACE as BASE_SPACE

TESTS = Path(__file__).parent
# trials of a few seconds, so that a worker can be killed inside one
SPACE = BASE_SPACE.replace("finetune: {steps: 8,", "finetune: {steps: 60,")
assert SPACE != BASE_SPACE
GRACE_S = 6


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def _autocomp(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "autocomp", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**_env(), **(env or {})},
    )


def _search_args(pg, tmp_path: Path, name: str, trials: int) -> list[str]:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    return [
        "search", "--device", "local", "--task", f"{TESTS / 'search_tasks.py'}:shapes", "--space", str(space),
        "--trials", str(trials), "--backend", "estimate", "--out", str(tmp_path / "run"), "--storage", pg.url,
        "--study-name", name, "--seed", "1", "--grace-s", str(GRACE_S),
    ]


def _search(pg, tmp_path: Path, name: str, trials: int) -> subprocess.Popen:
    return _autocomp(*_search_args(pg, tmp_path, name, trials))


def _study(pg, name: str) -> optuna.Study | None:
    try:
        return load_existing_study(pg.url, name)
    except Exception:
        return None


def _finish(proc: subprocess.Popen, timeout_s: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, out, err


def _queued_runs(study: optuna.Study) -> Counter:
    """How often each queued plan was taken by a process (a plan re-queued after a death counts again)."""
    return Counter(
        json.dumps(t.system_attrs["fixed_params"], sort_keys=True)
        for t in finished_trials(study) if "fixed_params" in t.system_attrs and TrialRecord.of(t).requeued_from is None
    )


def test_a_search_and_a_worker_finish_one_study_together(pg, tmp_path):
    search = _search(pg, tmp_path, "together", trials=8)
    wait_for(lambda: (s := _study(pg, "together")) is not None and "baseline" in s.user_attrs, timeout_s=300, what="the baseline")
    worker = _autocomp("worker", "--storage", pg.url, "--study-name", "together", "--out", str(tmp_path / "w1"))
    outputs = [_finish(worker), _finish(search)]
    for code, out, err in outputs:
        assert code == 0, err
        assert PASSWORD not in out + err
    assert "worker done:" in outputs[0][1]
    study = _study(pg, "together")
    assert len(finished_trials(study)) == 8
    assert not study.get_trials(states=(TrialState.RUNNING,))
    workers = Counter(TrialRecord.of(t).worker for t in finished_trials(study))
    assert len(workers) == 2, workers  # both processes ran trials
    assert max(_queued_runs(study).values()) == 1  # no queued plan ran twice
    assert PASSWORD not in json.dumps(study.user_attrs, default=str)

    code = subprocess.run(
        [sys.executable, "-m", "autocomp", "export", "--study", str(tmp_path / "run"), "--storage", pg.url,
         "--study-name", "together", "--out", str(tmp_path / "export"), "--trial", str(finished_trials(study)[0].number)],
        capture_output=True, text=True, env=_env(), timeout=300,
    )
    assert code.returncode == 0, code.stderr
    assert (tmp_path / "export" / "model.onnx").is_file()
    assert (tmp_path / "run" / "report.html").is_file()


def test_a_killed_workers_trial_is_closed_and_its_plan_runs_again(pg, tmp_path):
    search = _search(pg, tmp_path, "killed", trials=8)
    wait_for(lambda: (s := _study(pg, "killed")) is not None and "baseline" in s.user_attrs, timeout_s=300, what="the baseline")
    # the URL from the environment, as a user keeps a password out of the process list
    worker = _autocomp("worker", "--study-name", "killed", "--out", str(tmp_path / "w1"), env={"AUTOCOMP_STORAGE": pg.url})

    def worker_fine_tuning():
        study = _study(pg, "killed")
        mine = [
            t for t in (study.get_trials(states=(TrialState.RUNNING,)) if study else [])
            if (TrialRecord.of(t).worker or "").endswith(f":{worker.pid}") and TrialRecord.of(t).phase == "finetune"
        ]
        return mine[0].number if mine else None

    victim = wait_for(worker_fine_tuning, timeout_s=300, what="the worker to fine-tune a trial")
    os.kill(worker.pid, signal.SIGKILL)
    worker.communicate()
    code, out, err = _finish(search)
    assert code == 0, err
    assert PASSWORD not in out + err

    study = _study(pg, "killed")
    dead = study.trials[victim]
    assert dead.state == TrialState.FAIL
    reason = stale_reason(study.user_attrs, victim)
    assert reason and "stopped sending heartbeats during fine-tuning" in reason and "queued again" in reason
    rerun = [t for t in study.trials if TrialRecord.of(t).requeued_from == victim]
    assert len(rerun) == 1 and rerun[0].state.is_finished() and rerun[0].params == dead.params
    assert victim not in {t.number for t in finished_trials(study)}  # the dead trial does not count
    assert len(finished_trials(study)) == 8
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


def test_a_worker_needs_a_study_a_search_started(pg, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "autocomp", "worker", "--storage", pg.url, "--study-name", "nobody"],
        capture_output=True, text=True, env=_env(), timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no study named 'nobody'" in proc.stderr
    assert PASSWORD not in proc.stderr and "***" in proc.stderr
    sqlite = subprocess.run(
        [sys.executable, "-m", "autocomp", "worker", "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--study-name", "x"],
        capture_output=True, text=True, env=_env(), timeout=120,
    )
    assert sqlite.returncode == 2 and "database server" in sqlite.stderr


def test_wrong_credentials_are_one_line_with_the_password_masked(pg, tmp_path):
    wrong = pg.url.replace(PASSWORD, "not-the-pw-9")
    for argv in (
        ["worker", "--study-name", "any"],
        _search_args(pg, tmp_path, "any", trials=1),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "autocomp", *[a if a != pg.url else wrong for a in argv]],
            capture_output=True, text=True, env={**_env(), "AUTOCOMP_STORAGE": wrong}, timeout=300,
        )
        assert proc.returncode == 2, proc.stderr
        err = proc.stderr.strip()
        assert err.count("\n") == 0 and "cannot open study storage" in err and "password authentication failed" in err
        assert "not-the-pw-9" not in proc.stdout + err and PASSWORD not in proc.stdout + err and "***" in err


def test_nsga2_refuses_a_database_that_holds_other_studies(pg, tmp_path):
    from autocomp.storage import engine_url

    optuna.create_study(storage=engine_url(pg.url), study_name="someone-elses", load_if_exists=True)
    argv = [sys.executable, "-m", "autocomp", *_search_args(pg, tmp_path, "nsga", trials=2), "--sampler", "nsga2"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "--sampler nsga2 needs a database of its own" in proc.stderr
    assert "optuna #6066" in proc.stderr and PASSWORD not in proc.stderr


def test_the_search_rides_out_a_database_restart(pg, tmp_path):
    search = _search(pg, tmp_path, "restart", trials=6)

    def fine_tuning():
        study = _study(pg, "restart")
        running = study.get_trials(states=(TrialState.RUNNING,)) if study else []
        return any(TrialRecord.of(t).phase == "finetune" for t in running)

    wait_for(fine_tuning, timeout_s=300, what="a trial to fine-tune")
    err_lines: list[str] = []
    out_lines: list[str] = []  # both pipes drained as the search writes, so that it never blocks on one
    readers = [
        threading.Thread(target=lambda: err_lines.extend(iter(search.stderr.readline, "")), daemon=True),
        threading.Thread(target=lambda: out_lines.extend(iter(search.stdout.readline, "")), daemon=True),
    ]
    for reader in readers:
        reader.start()
    pg.stop()
    try:  # down until the search has hit it and said so
        wait_for(lambda: any("database is unreachable" in line for line in err_lines), timeout_s=120, what="the retry line")
    finally:
        pg.resume()
    search.wait(timeout=600)
    for reader in readers:
        reader.join(timeout=10)
    out, err = "".join(out_lines), "".join(err_lines)
    assert search.returncode == 0, err
    assert "Traceback" not in out + err and PASSWORD not in out + err
    assert "retry 1 of 5" in err
    study = _study(pg, "restart")
    assert len(finished_trials(study)) == 6  # the trial cut short did not count, the search made it up
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
