"""A result cache for any latency backend, keyed by (ONNX bytes, profile, backend).

The profile part is ``DeviceProfile.fingerprint()``, which covers the cost-model
coefficients and the calibration, so a new calibration never reads stale
figures. Entries are small JSON files under ``cache_dir()/latency``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import fields
from pathlib import Path

from autocomp.errors import LatencyError
from autocomp.latency.base import LatencyResult, check_onnx_file


def _result_from_dict(data: dict) -> LatencyResult:
    from autocomp.latency.estimate import EstimateResult

    base = {f.name for f in fields(LatencyResult)}
    if set(data) - base:
        known = {f.name for f in fields(EstimateResult)}
        values = {k: v for k, v in data.items() if k in known}
        values["outside"] = tuple(values.get("outside") or ())  # JSON has made it a list
        return EstimateResult(**values)
    return LatencyResult(**{k: data[k] for k in base})


class CachedBackend:
    """Wrap ``inner`` so that the same file on the same profile is measured once."""

    def __init__(self, inner, *, directory: Path | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self._directory = directory
        self.hits = 0
        self.misses = 0

    @property
    def directory(self) -> Path:
        if self._directory is None:
            from autocomp.paths import cache_dir

            self._directory = cache_dir() / "latency"
        self._directory.mkdir(parents=True, exist_ok=True)
        return self._directory

    def key(self, onnx_path: Path, profile) -> str:
        digest = hashlib.sha256()
        try:
            with open(onnx_path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as exc:
            check_onnx_file(onnx_path)  # a missing file gets the message every backend gives
            raise LatencyError(f"cannot read ONNX file {onnx_path}: {exc.strerror or exc}") from exc
        extra = getattr(self.inner, "cache_key", "")
        digest.update(f"|{profile.fingerprint()}|{self.inner.name}|{extra}".encode())
        return digest.hexdigest()

    def lookup(self, onnx_path: Path, profile) -> LatencyResult | None:
        path = self.directory / f"{self.key(onnx_path, profile)}.json"
        try:
            return _result_from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def measure(self, onnx_path: Path, profile) -> LatencyResult:
        key = self.key(onnx_path, profile)
        path = self.directory / f"{key}.json"
        try:
            result = _result_from_dict(json.loads(path.read_text()))
            self.hits += 1
            return result
        except (OSError, ValueError, TypeError):
            pass  # a miss, or an unreadable entry: measure again
        result = self.inner.measure(onnx_path, profile)
        self.misses += 1
        handle, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(handle, "w") as out:
            json.dump(result.to_dict(), out)
        os.replace(tmp, path)  # atomic: parallel trials never read half a file
        return result
