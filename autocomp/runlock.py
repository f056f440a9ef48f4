"""One search process per study at a time, enforced with OS file locks.

A resumed search closes the trials it finds RUNNING as killed, and the
baseline is written into the run folder: both are only right when no other
process is working on the same study. So a second ``autocomp search`` on the
same run folder, or on the same SQLite storage and study name, is refused in
one line. On a database server, workers share a study (``autocomp.storage``)
and only the run folder stays one process's.

``fcntl.flock`` locks are released by the kernel when their process dies, so
a SIGKILLed search never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path
from typing import IO, Iterator

from autocomp.errors import ConfigError
from autocomp.paths import cache_dir

LOCK_NAME = ".autocomp.lock"


@contextlib.contextmanager
def exclusive_run(out_dir: Path, *, storage: str, study_name: str, shared: bool = False) -> Iterator[None]:
    """Hold the run folder's lock and the study's lock for the block; ConfigError if another process holds either.

    ``shared``: the study is on a database server, where workers share it by design (heartbeats tell
    their trials apart, ``autocomp.storage``): only the run folder is locked, one process each.

    ``out_dir`` is created when missing, and removed again when the block fails
    before anything but the lock was written there (a rejected first run leaves
    no folder behind).
    """
    created = not out_dir.exists()
    if not created and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder; give a folder for the run (it is created if missing)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the run folder {out_dir}: {exc.strerror or exc}; choose another --out") from None
    study_lock = cache_dir() / "locks" / f"{hashlib.sha256(f'{storage}|{study_name}'.encode()).hexdigest()[:24]}.lock"
    study_lock.parent.mkdir(parents=True, exist_ok=True)
    failed = False
    try:
        with _locked(out_dir / LOCK_NAME, f"run folder {out_dir}"), (
            contextlib.nullcontext() if shared else _locked(study_lock, f"study {study_name!r}")
        ):
            yield
    except BaseException:
        failed = True
        raise
    finally:
        if failed and created and {p.name for p in out_dir.iterdir()} <= {LOCK_NAME}:
            shutil.rmtree(out_dir, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path, what: str) -> Iterator[IO[str]]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before this module existed
        yield None  # type: ignore[misc]
        return
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(
                f"another autocomp search ({holder}) is running on the {what}; wait for it to finish, "
                "or use another --out and --study-name for a separate search"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield handle
    finally:
        handle.close()
