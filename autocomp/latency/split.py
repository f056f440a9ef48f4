"""The latency of a file with a marked cut (``split.mark_cut``), end to end: the edge part on the device, the
activation over the link, the server part on the server.

A file without a mark runs whole on the device and is priced by the device's backend as before; the ``server``
end sends the input and runs the whole file on the server. The two parts are cut from the file
(``split.halves``), each priced by its own backend and profile, and the link adds ``Link.transfer_ms`` of the
bytes the mark states, times the device's batch. The p90 is the parts' p90s and the transfer added up.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autocomp.latency.base import LatencyResult, check_onnx_file


@dataclass(frozen=True)
class SplitResult(LatencyResult):
    """An end-to-end latency and its parts (all in milliseconds; ``bytes_sent`` per inference)."""

    edge_ms: float = 0.0
    transfer_ms: float = 0.0
    server_ms: float = 0.0
    bytes_sent: int = 0


class SplitBackend:
    """Prices a marked file across ``link``: the device part by ``device`` (this profile's backend), the
    server part by ``server`` (a backend) on ``server_profile``."""

    def __init__(self, device: Any, server: Any, server_profile: Any, link: Any) -> None:
        self.device, self.server, self.server_profile, self.link = device, server, server_profile, link
        self.name = device.name  # what the device part is timed by decides whether the search measures or estimates

    def measure(self, onnx_path: Path, profile: Any) -> LatencyResult:
        from autocomp.split import ON_SERVER, halves, marked

        mark = marked(check_onnx_file(onnx_path))
        if mark is None:
            return self.device.measure(onnx_path, profile)
        nbytes = mark.bytes_per_sample * profile.runtime.batch_size
        transfer_ms = self.link.transfer_ms(nbytes)
        if mark.after == ON_SERVER:
            edge = None
            far = self.server.measure(onnx_path, self.server_profile)
        else:
            with tempfile.TemporaryDirectory(prefix="autocomp-split-") as work:
                files = halves(Path(onnx_path), Path(work))
                edge = self.device.measure(files.edge, profile)
                far = self.server.measure(files.server, self.server_profile)
        edge_ms, edge_p90 = (0.0, 0.0) if edge is None else (edge.median_ms, edge.p90_ms)
        parts = [r.source for r in (edge, far) if r is not None]
        estimated = all(part.startswith("estimate") for part in parts)  # the report tells estimates from measurements so
        source = f"split {profile.name} > {self.link.name} > {self.server_profile.name}"
        return SplitResult(
            median_ms=edge_ms + transfer_ms + far.median_ms, p90_ms=edge_p90 + transfer_ms + far.p90_ms,
            runs=min(r.runs for r in (edge, far) if r is not None),
            source=f"estimate:{source}" if estimated else f"{source} ({' + '.join(parts)})",
            edge_ms=edge_ms, transfer_ms=transfer_ms, server_ms=far.median_ms, bytes_sent=nbytes,
        )
