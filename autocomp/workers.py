"""``autocomp search --jobs N``: N processes on one study, the search and N - 1 ``autocomp worker`` children.

Each trial runs in a process of its own, so nothing one trial does to its process (export's
redirection of stdout, quantization's working directory, torch's thread pool) can touch another's,
and the study's storage (Optuna's RDB storage with heartbeats, ``autocomp.storage``) hands out
the trials — the same engine as for workers on other machines. A child writes its output to
``worker-<k>.log`` in the search's folder, reads everything else from the study, and stops when
the search that started it is gone (``watch_lead``), so a killed search leaves no process behind
working on a study that nobody will choose from. The machine's cores are shared out: each process
fine-tunes with cores / N torch threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, Sequence

log = logging.getLogger(__name__)

STOP_WAIT_S = 120.0
"""How long the search waits for its children to end their trials once the study is full or interrupted."""


@contextlib.contextmanager
def local_workers(
    count: int, interrupted: threading.Event, *, storage: str, study_name: str, out_dir: Path,
    stop_at: float | None = None, extra_args: Sequence[str] = (),
) -> Iterator[list[subprocess.Popen]]:
    """Start ``count`` worker processes on the study while the block runs; wait for them at its end.

    ``storage`` reaches them in the environment, never on a command line. ``stop_at`` (seconds since
    the epoch): the search's --timeout, after which they start no trial. ``extra_args``: the board
    options (--board, --key, ...) the search was given. When ``interrupted`` is set at the end they
    are interrupted too (their running trials closed as such). A child that fails is reported with its log.
    """
    import torch

    from autocomp.host import available_cpus

    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    # the cores shared out: N processes each running as many threads as there are cores spend their time
    # switching (OpenMP threads spin while they wait) instead of fine-tuning. Only the trials' threads: a
    # task that trains its model on first use gets other weights at another thread count, and the study
    # refuses a worker whose model differs, so each child builds its model first (``worker --torch-threads``)
    threads = max(1, available_cpus() // (count + 1))
    env = {**os.environ, "AUTOCOMP_STORAGE": storage}
    own_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    done = threading.Event()
    watcher = threading.Thread(target=_say_failures, args=(procs, logs, done), daemon=True)
    try:
        for k in range(1, count + 1):
            path = out_dir / f"worker-{k}.log"
            logs.append(path)
            with open(path, "a") as sink:  # appended: a resumed search keeps the earlier runs' output; the child holds its own descriptor
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "autocomp", "worker", "--study-name", study_name,
                     "--out", str(out_dir / f"worker-{k}"), "--lead-pid", str(os.getpid()), "--torch-threads", str(threads),
                     *(["--stop-at", repr(stop_at)] if stop_at is not None else []), *extra_args],
                    stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, env=env,
                ))
        watcher.start()
        yield procs
    except BaseException:
        interrupted.set()
        raise
    finally:
        torch.set_num_threads(own_threads)
        if interrupted.is_set():  # Ctrl-C or a failure here: the children close their trials as interrupted
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if watcher.is_alive():
            done.set()
            watcher.join()


def _say_failures(procs: list[subprocess.Popen], logs: list[Path], done: threading.Event, poll_s: float = 1.0) -> None:
    """Say at once (not at the end of the search) when a worker process stops with an error, and why."""
    told: set[int] = set()
    while True:
        last_pass = done.wait(poll_s)  # one more look once the search is done with them
        for proc, path in zip(procs, logs):
            code = proc.poll()
            if code is None or code in (0, 130, -signal.SIGINT) or proc.pid in told:
                continue
            told.add(proc.pid)
            lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
            log.warning("worker process %d stopped (exit code %s): %s (its output: %s)", proc.pid, code, lines[-1] if lines else "no output", path)
        if last_pass:
            return


def watch_lead(lead_pid: int, *, poll_s: float = 1.0) -> None:
    """In a child: interrupt this process (as Ctrl-C would) when the search that started it is gone."""

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(poll_s):
            if os.getppid() != lead_pid:  # the lead died: this process was handed to another parent
                os.kill(os.getpid(), signal.SIGINT)
                return

    threading.Thread(target=watch, daemon=True).start()
