"""A study shared by several worker processes: Optuna's RDB storage with heartbeats.

On a database server (PostgreSQL) any number of ``autocomp search`` and
``autocomp worker`` processes, on any machines, work on one study. Optuna is the
engine: its RDB storage hands out queued and sampled trials, and its heartbeat
table tells a dead worker's trial from a slow one. A process that is killed or
loses its machine leaves its trial RUNNING; once that trial's last heartbeat is
older than the grace period, whichever process looks next closes it FAILED
(``optuna.storages.fail_stale_trials``) and re-queues its plan once. A slow
worker keeps its heartbeat fresh from a thread, so it is never closed by another.

Optuna starts heartbeats only inside ``study.optimize``; the search's ask/tell
loop (``study.run_search``) records them itself with ``Heartbeat``.

A SQLite file stays the single-machine default: one process per study, and a
resumed search closes what a killed one left at once (``study.close_orphans``).
"""

from __future__ import annotations

import os
import socket
import threading
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from autocomp.record import TrialRecord

# Optuna warns at every ask on a heartbeat storage outside study.optimize; ``Heartbeat`` below is what
# optimize would do, so the warning is wrong here (and would print once per trial).
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

GRACE_S = 120
"""A trial whose worker sent no heartbeat for this long is taken as dead (its plan is re-queued once)."""
STALE_PREFIX = "stale:"
"""Study attr ``stale:<number>``: why that trial was closed. A finished trial cannot take user attrs, and a
study attr per trial is one write, so two workers closing trials at once do not overwrite each other."""


def is_shared(url: str) -> bool:
    """Whether a storage URL names a database server that several processes may share (not a SQLite file)."""
    from sqlalchemy.engine import make_url

    return make_url(url).get_backend_name() != "sqlite"


def engine_url(url: str) -> str:
    """``url`` with a PostgreSQL driver that is installed: a plain ``postgresql://`` means psycopg2 to
    SQLAlchemy, and the driver this project declares is psycopg (3)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername != "postgresql":
        return url
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def shared_storage(url: str, *, grace_s: int = GRACE_S) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage with heartbeats every ``grace_s / 6`` s and dead trials re-queued once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            engine_url(url),
            engine_kwargs={"pool_pre_ping": True},  # a connection the server dropped is replaced, not raised
            heartbeat_interval=max(1, grace_s // 6),
            grace_period=grace_s,
            heartbeat_stale_trial_callback=_requeue_once,
        )


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def heartbeat_enabled(study: optuna.Study) -> bool:
    interval = getattr(study._storage, "get_heartbeat_interval", lambda: None)()
    return interval is not None


class Heartbeat:
    """Record a running trial's heartbeat from a thread until the block ends (what ``study.optimize`` does)."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial) -> None:
        self._storage, self._trial_id = study._storage, trial._trial_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Heartbeat":
        interval = self._storage.get_heartbeat_interval()
        if interval is not None:
            self._thread = threading.Thread(target=self._beat, args=(interval,), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self, interval: int) -> None:
        while True:
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception:  # a database hiccup: the next beat retries; a long outage makes the trial stale
                pass
            if self._stop.wait(interval):
                return


def close_stale(study: optuna.Study) -> None:
    """Close the trials whose worker died (stale heartbeat) as FAILED, and re-queue each plan once."""
    if heartbeat_enabled(study):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def stale_reason(study_attrs: dict[str, Any], number: int) -> str | None:
    """Why trial ``number`` was closed as left by a dead worker (None: it was not)."""
    return study_attrs.get(f"{STALE_PREFIX}{number}")


def _requeue_once(study: optuna.Study, trial: FrozenTrial) -> None:
    from autocomp.objective import phase_name

    record = TrialRecord.of(trial)
    again = record.requeued_from is None
    reason = (
        f"its worker stopped sending heartbeats during {phase_name(record.phase)} (killed, its "
        f"machine lost, or cut off from the database); {'its plan was queued again' if again else 'already a re-run, so not queued again'}"
    )
    study.set_user_attr(f"{STALE_PREFIX}{trial.number}", reason)
    if again:
        # what a queued plan carried goes back into the queue with it
        study.enqueue_trial(trial.params, user_attrs=TrialRecord.attrs(proposal=record.proposal, requeued_from=trial.number))
