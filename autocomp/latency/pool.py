"""A pool of boards of one kind: each measurement on a free board, leased through a shared database.

A device profile whose ``ssh:`` lists several boards gets this backend for ``--backend ssh``.
Every measurement takes a lease (``autocomp.leases``) on a free board of the pool, times the
file there (``latency.ssh``) and frees the board, so N boards time N trials at once and never two
on one board. The leases live in the study's database, so every worker of a study — processes of
``--jobs`` or ``autocomp worker`` on other machines — draws from the same pool; without a study
(``autocomp measure``) they live in a SQLite file in the user's cache, shared by this machine's
processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from autocomp.latency.base import LatencyResult
from autocomp.latency.ssh import SshBackend, board_label

if TYPE_CHECKING:
    from autocomp.profiles import DeviceProfile, SshTarget

LEASE_TIMEOUT_S = 3600.0
"""How long a measurement waits for a free board before its trial fails (the boards are all busy or gone)."""


def local_leases_url() -> str:
    from autocomp.paths import cache_dir

    return f"sqlite:///{cache_dir() / 'board-leases.db'}"


class BoardPool:
    """The ssh backend over several boards; ``leases_url`` is the database the leases live in."""

    name = "ssh"

    def __init__(self, boards: Sequence["SshTarget"], *, leases_url: str | None = None, **ssh_options: Any) -> None:
        from autocomp.leases import Leases
        from autocomp.storage import worker_id

        self._backends = {board_label(b): SshBackend(b, **ssh_options) for b in boards}
        self._leases = Leases(leases_url or local_leases_url())
        self._holder = worker_id()

    def measure(self, onnx_path: Path, profile: "DeviceProfile") -> LatencyResult:
        return self.measure_set([(onnx_path, profile)])[0]

    def measure_set(self, items: Sequence[tuple[Path, "DeviceProfile"]], *, min_s: float = 0.0) -> list[LatencyResult]:
        """The files on one board, under one lease: files compared side by side are timed on the same board
        (one after another, as the single-board backend does; ``min_s`` is for backends that interleave)."""
        with self._leases.hold(list(self._backends), timeout_s=LEASE_TIMEOUT_S, holder=self._holder) as board:
            return [self._backends[board].measure(path, profile) for path, profile in items]
