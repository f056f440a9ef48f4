"""Leases on boards through a database that every worker reaches: a pool's boards shared fairly.

A board of a pool (``ssh:`` listing several boards in a device profile) times one
measurement at a time. Before a measurement a worker takes a free board's lease: one
row of the ``autocomp_board_leases`` table in the study's own database (PostgreSQL
for workers on many machines, the study's SQLite file for ``--jobs`` on one), taken
by a single conditional ``UPDATE`` — the database's row locking decides between two
workers, so no two ever hold one board. The lease has an expiry on the database's
clock (one clock for every machine) and is renewed from a thread while the
measurement runs, so a slow measurement keeps its board, and the board of a worker
that died (SIGKILL, machine lost) is free again once its lease expires.

Boards are tried from a random one on, and a waiting worker polls with jitter, so
the workers of a study share the boards without a queue of their own. The board's
own ``flock`` (``latency.ssh``) stays underneath: it also keeps out measurements
made outside this pool.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import uuid
from typing import Iterator, Sequence

from autocomp.errors import DeviceError

log = logging.getLogger(__name__)

TABLE = "autocomp_board_leases"
TTL_S = 30.0
"""A lease not renewed for this long is free (renewed every third of it while held)."""


class Leases:
    """Board leases in the database at ``url`` (an SQLAlchemy URL; the study storage's)."""

    def __init__(self, url: str, *, ttl_s: float = TTL_S, poll_s: float = 0.5) -> None:
        import sqlalchemy as sa

        from autocomp.storage import engine_url

        self.ttl_s, self.poll_s = float(ttl_s), float(poll_s)
        # made now, connected at the first lease: a search builds its backend before its study exists
        self._engine = sa.create_engine(engine_url(url), pool_pre_ping=True)
        self._table = sa.Table(
            TABLE, sa.MetaData(),
            sa.Column("board", sa.String(512), primary_key=True),
            sa.Column("holder", sa.String(512), nullable=True),
            sa.Column("expires_s", sa.Float, nullable=True),  # the database's clock, seconds since the epoch
        )
        self._created = False
        self._rows: set[str] = set()  # boards whose row exists: inserted once per process, not per measurement

    @contextlib.contextmanager
    def hold(self, boards: Sequence[str], *, timeout_s: float, holder: str) -> Iterator[str]:
        """Wait (up to ``timeout_s``) for a free board of ``boards``, hold it while the block runs, free it.

        Yields the board's name. Raises ``DeviceError`` when none came free in time, or when the
        lease could not be renewed and expired under the measurement (it may then have shared the board).
        """
        token = f"{holder}/{uuid.uuid4().hex[:8]}"  # unique per hold: a thread never frees another's lease
        board = self._acquire(boards, token, timeout_s)
        lost = threading.Event()
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(board, token, stop, lost), daemon=True)
        renewer.start()
        try:
            yield board
        finally:
            stop.set()
            renewer.join()
            self._release(board, token)
        if lost.is_set():
            raise DeviceError(
                f"the lease on board {board} expired during the measurement (the database was unreachable for "
                f"more than {self.ttl_s:g} s), so another worker may have used the board at the same time"
            )

    def holders(self) -> dict[str, str]:
        """Board -> holder of every lease in force now (what a pool is doing; the tests check it is empty at the end)."""
        import sqlalchemy as sa

        self._ensure_table()
        with self._engine.connect() as conn:
            now = self._now_s(conn)
            rows = conn.execute(sa.select(self._table).where(self._table.c.holder.is_not(None), self._table.c.expires_s >= now))
            return {r.board: r.holder for r in rows}

    # ---------------------------------------------------------------------------------------------
    def _acquire(self, boards: Sequence[str], token: str, timeout_s: float) -> str:
        import sqlalchemy as sa

        t = self._table
        self._ensure_table()
        if not self._rows.issuperset(boards):
            with self._engine.begin() as conn:
                existing = set(conn.execute(sa.select(t.c.board).where(t.c.board.in_(list(boards)))).scalars())
            for board in set(boards) - existing:
                with contextlib.suppress(sa.exc.IntegrityError):  # another worker inserted it first
                    with self._engine.begin() as conn:
                        conn.execute(sa.insert(t).values(board=board, holder=None, expires_s=None))
            self._rows.update(boards)
        deadline = time.monotonic() + timeout_s
        start = random.randrange(len(boards))
        order = list(boards[start:]) + list(boards[:start])
        while True:
            for board in order:
                with self._engine.begin() as conn:
                    now = self._now_s(conn)
                    taken = conn.execute(
                        sa.update(t)
                        .where(t.c.board == board, sa.or_(t.c.holder.is_(None), t.c.expires_s < now))
                        .values(holder=token, expires_s=now + self.ttl_s)
                    ).rowcount
                if taken == 1:
                    return board
            if time.monotonic() >= deadline:
                raise DeviceError(
                    f"no board of the pool ({', '.join(boards)}) came free within {timeout_s:g} s; "
                    "add boards, or run fewer workers"
                )
            time.sleep(self.poll_s * random.uniform(0.5, 1.5))

    def _renew(self, board: str, token: str, stop: threading.Event, lost: threading.Event) -> None:
        import sqlalchemy as sa

        t = self._table
        while not stop.wait(self.ttl_s / 3):
            try:
                with self._engine.begin() as conn:
                    now = self._now_s(conn)
                    kept = conn.execute(
                        sa.update(t).where(t.c.board == board, t.c.holder == token).values(expires_s=now + self.ttl_s)
                    ).rowcount
            except sa.exc.SQLAlchemyError as exc:  # a hiccup: the next renewal retries before the lease runs out
                log.warning("could not renew the lease on board %s (%s); retrying", board, type(exc).__name__)
                continue
            if kept != 1:
                lost.set()
                return

    def _release(self, board: str, token: str) -> None:
        import sqlalchemy as sa

        t = self._table
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.update(t).where(t.c.board == board, t.c.holder == token).values(holder=None, expires_s=None))
        except sa.exc.SQLAlchemyError as exc:  # the lease then simply expires
            log.warning("could not free the lease on board %s (%s); it is free in %g s", board, type(exc).__name__, self.ttl_s)

    def _ensure_table(self) -> None:
        import sqlalchemy as sa

        if self._created:
            return
        try:
            self._table.create(self._engine, checkfirst=True)
        except sa.exc.SQLAlchemyError:  # two workers creating it at once: the other one's stands
            if not sa.inspect(self._engine).has_table(TABLE):
                raise
        self._created = True

    def _now_s(self, conn) -> float:
        """The database's clock: workers on machines whose clocks differ agree on when a lease expires."""
        import sqlalchemy as sa

        if conn.dialect.name == "postgresql":
            return float(conn.execute(sa.text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")).scalar_one())
        return time.time()  # SQLite: a file on this machine, whose clock every process shares
