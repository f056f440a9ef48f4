"""The latency interface every backend implements."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from autocomp.errors import LatencyError, first_line

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


def check_onnx_file(onnx_path: Path) -> Path:
    """``onnx_path`` if it is a loadable ONNX model that passes ``onnx.checker``; else LatencyError in one line.

    Every backend calls this before pricing or timing: an empty protobuf parses
    as an empty model, so without it a zero-byte file would be "measured".
    """
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise LatencyError(f"ONNX file {path} does not exist; give the path of an exported .onnx model")
    size = path.stat().st_size
    if size == 0:
        raise LatencyError(f"ONNX file {path} is empty (0 bytes); re-export the model or copy the file again")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: a truncated or non-ONNX file
        raise LatencyError(
            f"{path} is not an ONNX model ({size} bytes that do not parse: {type(exc).__name__}); "
            "it may be truncated or another format: re-export it"
        ) from None
    if not model.graph.node:
        raise LatencyError(f"{path} holds no ONNX graph (no nodes in {size} bytes); it is not an exported model")
    try:
        onnx.checker.check_model(str(path) if size >= 2**31 else model)
    except Exception as exc:
        first = first_line(exc, limit=200)
        raise LatencyError(f"{path} fails onnx.checker ({first}); re-export it with a supported opset") from None
    return path


SIDE_BY_SIDE_S = 10.0
"""Least seconds of timed blocks in a ``side_by_side`` set (see there)."""


def side_by_side(backend: Any, paths: Sequence[Path], profile: "DeviceProfile") -> list[LatencyResult]:
    """The files timed together: interleaved in one process where the backend can (``measure_set``), else in
    turn; never from a result cache (``inner``), since a cached figure was timed at another moment. A shared
    host's speed drifts by more between two separate timings than the savings being compared.

    The interleaved set spreads over at least ``SIDE_BY_SIDE_S``: each file's figure is its fastest block,
    and at 2 threads on a 2-core host a neighbour on the other core slows the files with big, parallel
    kernels most, so a window of 2 s can see the largest file only in slow stretches (BERT's baseline:
    1.088 ms in a search's 2 s confirming set; 0.44-0.46 ms in separate processes and 0.50-0.58 ms in
    2 s sets minutes later). A longer window gives every file more chances at a quiet stretch; it
    narrows that risk, it does not remove it.
    """
    inner = getattr(backend, "inner", backend)
    if hasattr(inner, "measure_set"):
        return inner.measure_set([(path, profile) for path in paths], min_s=SIDE_BY_SIDE_S)
    return [inner.measure(path, profile) for path in paths]
