"""A pool of boards shared by the workers of one study, leased through a real PostgreSQL.

Two loopback "boards" (two real sshd on two ports, each with its own TMPDIR, so each has its own
lock and its own log) and three worker processes (``autocomp search --jobs 3``): every measurement
takes a free board's lease, so the boards' own logs show no two measurements at once on one board,
and none ever waited on a board's lock (the lease, not the board, kept the workers apart). A lease
whose holder was SIGKILLed is free again once it expires; one whose holder renews it is never taken.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from autocomp.errors import DeviceError
from autocomp.leases import Leases
from autocomp.record import TrialRecord
from autocomp.study import finished_trials, load_existing_study
from postgres import PASSWORD
from sshd import SshdServer, sshd_available
from test_search import SPACE, cli

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def boards(tmp_path_factory):
    reason = sshd_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the board-pool tests need a real sshd: {reason}")
        pytest.skip(reason)
    servers = [SshdServer(tmp_path_factory.mktemp(f"board{k}")) for k in (1, 2)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def _board_log(server: SshdServer) -> list[dict]:
    path = server.board_tmp / "autocomp-board.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _pool_profile(tmp_path: Path, servers) -> Path:
    from dataclasses import replace

    from autocomp.profiles import load_profile, profile_to_dict

    boards = tuple(s.target() for s in servers)
    data = profile_to_dict(replace(load_profile("local"), name="loopback-pool", ssh=boards[0], pool=boards))
    data["runtime"].update(warmup=3, runs=100000, threads=1)  # measurements long enough for workers to meet at the boards
    path = tmp_path / "loopback-pool.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_three_workers_share_two_boards_never_two_on_one(pg, boards, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    code, stdout, stderr = cli(
        "search", "--device", str(_pool_profile(tmp_path, boards)), "--backend", "ssh", "--jobs", "3",
        "--task", f"{TESTS / 'search_tasks.py'}:shapes", "--space", str(space), "--trials", "9",
        "--out", str(tmp_path / "run"), "--storage", pg.url, "--study-name", "pool", "--seed", "1",
    )  # fmt: skip
    assert code == 0, stderr
    assert PASSWORD not in stdout + stderr
    study = load_existing_study(pg.url, "pool")
    done = finished_trials(study)
    assert len(done) == 9 and all(t.state == TrialState.COMPLETE for t in done), [t.user_attrs.get("fail_reason") for t in done]
    labels = {f"ssh:{s.user}@127.0.0.1:{s.port}" for s in boards}
    assert {t.user_attrs["latency_source"] for t in done} <= labels
    workers = Counter(TrialRecord.of(t).worker for t in done)
    assert len(workers) >= 2, workers  # the children ran trials too
    logs = {s.port: _board_log(s) for s in boards}
    assert all(logs.values()), {port: len(log) for port, log in logs.items()}  # both boards timed
    for port, log in logs.items():
        spans = sorted((m["started"], m["ended"]) for m in log)
        overlaps = [(a, b) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]
        assert not overlaps, f"board :{port} timed two measurements at once: {overlaps}"
        # the lease kept the workers apart: none reached a board another measurement held
        assert max(m["lock_wait_s"] for m in log) < 0.5, log
        assert {m["outcome"] for m in log} == {"done"}
    assert sum(len(log) for log in logs.values()) >= 10  # the baseline and every trial at least
    assert not Leases(pg.url).holders()  # every lease freed at the end


def _hold_in_child(url: str, board: str, ttl_s: float) -> subprocess.Popen:
    """A process that takes ``board``'s lease and then hangs, renewing it, until it is killed."""
    code = (
        "import sys, time\n"
        "from autocomp.leases import Leases\n"
        f"hold = Leases({url!r}, ttl_s={ttl_s}).hold([{board!r}], timeout_s=30, holder='child')\n"
        "hold.__enter__()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_dead_workers_board_is_free_once_its_lease_expires(pg):
    ttl_s = 3.0
    child = _hold_in_child(pg.url, "board-a", ttl_s)
    leases = Leases(pg.url, ttl_s=ttl_s, poll_s=0.1)
    try:
        # alive, it renews: twice its lease's length later the board is still its
        with pytest.raises(DeviceError, match="no board of the pool"):
            with leases.hold(["board-a"], timeout_s=2 * ttl_s, holder="test"):
                pass
        assert list(leases.holders().values())[0].startswith("child/")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    killed_at = time.monotonic()
    with leases.hold(["board-a"], timeout_s=30, holder="test") as board:
        waited_s = time.monotonic() - killed_at
        assert board == "board-a"
        assert leases.holders()["board-a"].startswith("test/")
    assert waited_s <= ttl_s + 2, waited_s  # free once the dead holder's lease ran out, not later
    assert "board-a" not in leases.holders()  # freed at the end of the block


def test_two_holders_never_get_one_board(pg):
    """The conditional UPDATE decides: two leases at once on a one-board pool, the second waits."""
    leases = Leases(pg.url, ttl_s=5, poll_s=0.05)
    with leases.hold(["board-b", "board-c"], timeout_s=5, holder="one") as first:
        with leases.hold(["board-b", "board-c"], timeout_s=5, holder="two") as second:
            assert {first, second} == {"board-b", "board-c"}
            with pytest.raises(DeviceError, match="no board of the pool"):
                with leases.hold(["board-b", "board-c"], timeout_s=0.5, holder="three"):
                    pass
