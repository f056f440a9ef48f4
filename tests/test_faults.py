"""Fault suite: a search killed (SIGKILL) or interrupted (SIGINT) at random moments loses nothing.

One test run kills the same ``autocomp search`` command again and again, each
time in a chosen phase (the baseline, fine-tuning, export, evaluation, the
latency measurement, between trials), reruns it, and checks after every stop
and at the end that:

* every trial that had finished before a stop is still there, with the same
  state, plan and objective values, and none is run twice;
* the trial a stop cut short is closed FAILED, with the phase it died in as its
  reason, and does not count towards ``--trials``;
* the final study holds exactly ``--trials`` counted trials and nothing RUNNING.

The phase of a running trial is read from the study itself (the ``phase``
user attr that the search records), read-only with sqlite3 while the search
writes it. Kills land a random 0-80 ms (evaluation: 0-5 ms) after the phase is seen, so the exact
moment varies from run to run (seeded by ``AUTOCOMP_FAULT_SEED``, printed).
``-s`` shows the per-stop figures.
"""

from __future__ import annotations

import json
from collections import Counter
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from autocomp.errors import ConfigError
from autocomp.objective import PHASE_NAMES
from autocomp.record import TrialRecord
from autocomp.study import default_storage, load_existing_study
from test_search import SPACE as BASE_SPACE

TESTS = Path(__file__).parent
TRIALS = 12
# the search tests' tiny space with fine-tuning long enough to be hit
SPACE = BASE_SPACE.replace("finetune: {steps: 8,", "finetune: {steps: 20,")
assert SPACE != BASE_SPACE
# The stops of one run, in order: (signal, phase). "baseline" is only possible before the first baseline is stored.
STOPS = [
    (signal.SIGKILL, "baseline"),
    (signal.SIGKILL, "finetune"),
    (signal.SIGKILL, "export"),
    (signal.SIGKILL, "latency"),
    (signal.SIGKILL, "between"),
    (signal.SIGINT, "finetune"),
    (signal.SIGKILL, "evaluate"),
    (signal.SIGKILL, "finetune"),
    (signal.SIGINT, "latency"),
    (signal.SIGKILL, "export"),
    (signal.SIGKILL, "latency"),
    (signal.SIGKILL, "between"),
    (signal.SIGINT, "export"),
    (signal.SIGKILL, "finetune"),
]


# How long after the phase is seen a stop may land: evaluation of the tiny model lasts tens of ms.
MAX_DELAY_S = {"evaluate": 0.005, "between": 0.0}


def _read(db: Path, query: str) -> list[tuple]:
    """A read-only query on the search's sqlite file (empty while it does not exist or is being created)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(query).fetchall()
    except sqlite3.Error:
        return []


def _running_phase(db: Path, *, orphans: list[int]) -> str | None:
    """The phase of the trial this process runs (not of one a killed process left RUNNING, until it is closed)."""
    rows = _read(
        db,
        "SELECT t.number, a.value_json FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
        "WHERE t.state = 'RUNNING' AND a.key = 'phase'",
    )
    live = [value for number, value in rows if number not in orphans]
    return json.loads(live[0]) if live else None


def _has_baseline(db: Path) -> bool:
    return bool(_read(db, "SELECT 1 FROM study_user_attributes WHERE key = 'baseline'"))


def _has_study(db: Path) -> bool:
    return bool(_read(db, "SELECT 1 FROM studies"))


def _assert_says_closed(stdout: str, orphans: list[int]) -> None:
    """The resumed run says which trials it closed."""
    numbers = ", ".join(f"#{n}" for n in orphans)
    assert f"closed {len(orphans)} left running by a killed process ({numbers})" in stdout, stdout[:2000]


def _finished_count(db: Path) -> int:
    """Trials that ended by themselves (a resumed run closing a killed trial is not a trial ending)."""
    rows = _read(db, "SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')")
    return rows[0][0] if rows else 0


def _snapshot(out: Path) -> dict[int, tuple]:
    """Finished trials: number -> (state, params, values, fail reason).

    Opened read-write, as the next search opens it: a process killed inside a write leaves a hot
    journal, which only a writer rolls back (a read-only connection reports the file as locked).
    """
    if not (out / "study.db").is_file():
        return {}
    try:
        study = load_existing_study(default_storage(out), "t")
    except ConfigError:  # killed before the study was created
        return {}
    return {
        t.number: (t.state, t.params, t.values, t.user_attrs.get("fail_reason"))
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished()
    }


def _stop_in(
    proc: subprocess.Popen, db: Path, phase: str, sig: int, rng: random.Random, *, orphans: list[int], timeout_s: float = 240
) -> bool:
    """Send ``sig`` once the search is in ``phase``; False if the search ended first."""
    deadline = time.monotonic() + timeout_s
    finished_at_start = _finished_count(db)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if phase == "baseline":
            hit = _has_study(db) and not _has_baseline(db)
        elif phase == "between":
            hit = _finished_count(db) > finished_at_start  # a trial has just been told: the next one is being asked
        else:
            hit = _running_phase(db, orphans=orphans) == phase
        if hit:
            time.sleep(rng.uniform(0.0, MAX_DELAY_S.get(phase, 0.08)))
            proc.send_signal(sig)
            return True
        time.sleep(0.01)
    raise AssertionError(f"the search never reached phase {phase!r} in {timeout_s:.0f} s")


def test_killed_and_interrupted_searches_lose_no_finished_trial(tmp_path):
    seed = int(os.environ.get("AUTOCOMP_FAULT_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(seed)
    print(f"\nfault suite seed {seed} (AUTOCOMP_FAULT_SEED={seed} repeats this run's kill delays)")
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    out = tmp_path / "run"
    db = out / "study.db"
    command = [
        sys.executable, "-m", "autocomp", "search", "--device", "local", "--task", f"{TESTS / 'search_tasks.py'}:shapes",
        "--space", str(space), "--trials", str(TRIALS), "--backend", "local", "--out", str(out), "--study-name", "t",
        "--seed", "3",
    ]
    # its own cache: latency results are cached by file, and a cached file's measurement cannot be hit
    env = {**os.environ, "PYTHONPATH": str(TESTS), "AUTOCOMP_CACHE_DIR": str(tmp_path / "cache")}
    kept: dict[int, tuple] = {}
    baseline: dict | None = None
    stops: list[dict] = []
    for sig, phase in STOPS:
        if phase == "baseline" and baseline is not None:
            continue
        before = _snapshot(out)
        orphans = [n for (n,) in _read(db, "SELECT number FROM trials WHERE state = 'RUNNING' ORDER BY number")]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        try:
            sent = _stop_in(proc, db, phase, sig, rng, orphans=orphans)
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            proc.kill()
        assert "Traceback" not in stderr, stderr[-3000:]
        if orphans and proc.returncode != -signal.SIGKILL:  # a SIGKILLed process's buffered stdout is lost
            _assert_says_closed(stdout, orphans)
        if not sent:  # the study finished before this phase came round
            assert proc.returncode == 0, stderr[-2000:]
            break
        if sig == signal.SIGINT:
            assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
            assert "interrupted" in stderr
        else:
            assert proc.returncode == -signal.SIGKILL
        after = _snapshot(out)
        # what had finished before this stop is untouched
        for number, record in before.items():
            assert after.get(number) == record, (number, record, after.get(number))
        stops.append({"signal": signal.Signals(sig).name, "aimed_at": phase, "new_finished": len(after) - len(before)})
        kept.update(after)
        if _has_baseline(db):
            study = load_existing_study(default_storage(out), "t")
            if baseline is None:
                baseline = study.user_attrs["baseline"]
            assert study.user_attrs["baseline"] == baseline  # evaluated once, never redone or changed

    # the same command, run to the end
    orphans = [n for (n,) in _read(db, "SELECT number FROM trials WHERE state = 'RUNNING' ORDER BY number")]
    final = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]
    if orphans:
        _assert_says_closed(final.stdout, orphans)
    study = load_existing_study(default_storage(out), "t")
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    by_number = {t.number: t for t in trials}
    assert len(by_number) == len(trials)
    for number, (state, params, values, reason) in kept.items():
        trial = by_number[number]
        assert (trial.state, trial.params, trial.values, trial.user_attrs.get("fail_reason")) == (state, params, values, reason)
    closed = [t for t in trials if TrialRecord.of(t).interrupted]
    counted = [t for t in trials if not TrialRecord.of(t).interrupted]
    assert len(counted) == TRIALS, [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in trials]
    assert all(t.state != TrialState.FAIL for t in counted), [t.user_attrs.get("fail_reason") for t in counted]
    for trial in closed:
        assert trial.state == TrialState.FAIL
        reason = trial.user_attrs["fail_reason"]
        assert reason.startswith(("the process running this trial was killed during ", "interrupted by the user during ")), reason
        assert trial.user_attrs["fail_reason"].rsplit(" during ", 1)[1] in {*PHASE_NAMES.values(), "its setup"}, reason
    assert study.user_attrs["baseline"] == baseline
    kills = sum(s["signal"] == "SIGKILL" for s in stops)
    interrupts = sum(s["signal"] == "SIGINT" for s in stops)
    assert kills >= 10 and interrupts >= 2, stops
    hit = Counter(t.user_attrs["fail_reason"].rsplit(" during ", 1)[1] for t in closed)
    phases = sorted(hit)
    print(
        f"fault suite: {kills} SIGKILLs and {interrupts} SIGINTs ({sum(s['aimed_at'] == 'baseline' for s in stops)} during "
        f"the baseline); {len(counted)} trials kept (of {TRIALS} asked), {len(closed)} cut-short trials closed with "
        f"their phase ({', '.join(f'{p}: {n}' for p, n in sorted(hit.items()))}), {len(kept)} finished trials checked "
        "after every stop, trials lost: 0"
    )
    assert {"fine-tuning", "export and quantization", "the latency measurement"} <= set(phases), phases
    optuna.logging.set_verbosity(optuna.logging.WARNING)
