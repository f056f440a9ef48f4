"""The latency interface every backend implements."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from autocomp.profiles import DeviceProfile


@dataclass(frozen=True)
class LatencyResult:
    """Latency of one ONNX file on one device, at batch 1 unless the profile says otherwise.

    ``source`` says where the figure comes from: ``estimate:<profile>``, ``local`` or ``ssh:<board>``.
    """

    median_ms: float
    p90_ms: float
    runs: int
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LatencyBackend(Protocol):
    """What every backend implements. A backend may also offer ``measure_set(items, *, progress=None)``,
    which times many ``(onnx_path, profile)`` pairs together and returns their results in order:
    calibration and the latency benchmark use it where present (the local backend interleaves the
    files in one process, see ``autocomp.latency.local``) and ``measure`` file by file elsewhere."""

    name: str

    def measure(self, onnx_path: Path, profile: "DeviceProfile") -> LatencyResult: ...
