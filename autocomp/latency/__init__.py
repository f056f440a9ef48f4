"""Latency backends behind one interface: ``measure(onnx_path, profile) -> LatencyResult``.

``get_backend(name, profile=...)`` builds one: ``estimate`` (the profile's cost
model), ``local`` (onnxruntime here, in a child process) or ``ssh`` (a real
board; needs the ``ssh`` extra). Measured backends are wrapped in a result
cache keyed by the file's bytes, the profile fingerprint and the backend.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Mapping

from autocomp.errors import ConfigError
from autocomp.latency.base import LatencyBackend, LatencyResult

BACKENDS = ("estimate", "local", "ssh")

__all__ = ["BACKENDS", "LatencyBackend", "LatencyResult", "get_backend"]


def get_backend(
    name: str,
    *,
    profile,
    cache: bool = True,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    leases_url: str | None = None,
    **options: Any,
) -> LatencyBackend:
    """The backend called ``name`` for ``profile``; ``cache=False`` always measures afresh.

    ``shapes`` fixes symbolic input dimensions (default: batch from the profile,
    1 elsewhere). ``ssh`` times on the profile's ``ssh`` board (the CLI's
    --board/--key/--known-hosts replace it first), or on a free board of its
    pool (``latency.pool``; ``leases_url``: the study's database, where the
    leases live). The estimate is not
    cached on disk: it is cheaper than reading a cache entry.
    """
    if name == "estimate":
        from autocomp.latency.estimate import EstimateBackend

        return EstimateBackend(shapes=shapes, **options)
    if name == "local":
        from autocomp.latency.local import LocalBackend

        backend: Any = LocalBackend(shapes=shapes, **options)
    elif name == "ssh":
        target = profile.ssh
        if target is None:
            raise ConfigError(
                f"the ssh backend needs a board: pass --board USER@HOST[:PORT] or add an ssh: section to profile {profile.name!r}"
            )
        if importlib.util.find_spec("paramiko") is None:  # optional: checked here, before any work that needs a board
            raise ConfigError("the ssh backend needs paramiko, which is not installed; install it with: pip install 'autocomp[ssh]'")
        if shapes:
            raise ConfigError("the ssh backend does not take --shape yet; give the model fixed input dimensions")
        if profile.pool:
            from autocomp.latency.pool import BoardPool

            backend = BoardPool(profile.pool, leases_url=leases_url, **options)
        else:
            from autocomp.latency.ssh import SshBackend

            backend = SshBackend(target, **options)
    else:
        raise ConfigError(f"unknown latency backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if cache:
        from autocomp.latency.cache import CachedBackend

        return CachedBackend(backend)
    return backend
