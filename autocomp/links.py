"""Network links between a device and a server: ``device_profiles/links/*.yaml`` -> frozen ``Link``.

An edge/cloud split sends one activation per inference over a link. Its time is priced as

    transfer_ms = rtt_ms + bytes * 8 / (bandwidth_mbps * 1000)

one round trip (the request out, the answer back: the answer, a few logits, is small beside the
activation) plus the activation at the link's achieved bandwidth. ``error_pct`` is how far a real
transfer may sit from that figure, as the link's source states it. Every number carries its source,
as a device profile's do. Links are found where device profiles are, in a ``links/`` folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from autocomp.errors import ConfigError
from autocomp.yamlio import check_keys, load_yaml

SCHEMA_VERSION = 1
_KEYS = ("schema_version", "name", "description", "bandwidth_mbps", "rtt_ms", "error_pct", "cost_per_mb", "source")
_REQUIRED = ("schema_version", "name", "description", "bandwidth_mbps", "rtt_ms", "error_pct", "source")


@dataclass(frozen=True)
class Link:
    name: str
    description: str
    bandwidth_mbps: float  # achieved throughput, megabits (10^6 bits) per second
    rtt_ms: float  # one round trip
    error_pct: float  # how far a real transfer may sit from ``transfer_ms`` (the source's spread)
    source: str
    cost_per_mb: float | None = None  # what sending 10^6 bytes costs, in the user's currency; None: not priced
    path: Path | None = None

    def transfer_ms(self, nbytes: float) -> float:
        """Milliseconds to send ``nbytes`` and have the answer back: one round trip plus the bytes at the bandwidth."""
        return self.rtt_ms + nbytes * 8 / (self.bandwidth_mbps * 1000)


def _shipped() -> dict[str, Path]:
    from autocomp.paths import yaml_files
    from autocomp.profiles import builtin_profile_dirs

    return yaml_files(folder / "links" for folder in builtin_profile_dirs())


def list_links() -> list[str]:
    return sorted(_shipped())


def load_link(name_or_path: str | Path) -> Link:
    """A link by name (``wifi-20mbps``) or from a ``.yaml`` file; an unknown one lists the known ones."""
    from autocomp.paths import given_file

    text = str(name_or_path)
    path = given_file(text, what="link profile")
    if path is None:
        shipped = _shipped()
        if text not in shipped:
            raise ConfigError(f"unknown link {text!r}; known links: {', '.join(shipped) or 'none'}")
        path = shipped[text]
    return parse_link(load_yaml(path, what="link profile"), path=path)


def _positive(data: Mapping[str, Any], key: str, where: str, *, zero: bool = False) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{where}: {key} must be a {'non-negative' if zero else 'positive'} number, got {value!r}")
    return float(value)


def parse_link(data: Any, *, path: Path | None = None) -> Link:
    where = f"link profile {path}" if path else "link profile"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(_REQUIRED)}")
    check_keys(data, allowed=_KEYS, where=where, required=_REQUIRED)
    if data["schema_version"] != SCHEMA_VERSION:
        raise ConfigError(f"{where}: schema_version {data['schema_version']!r} is not {SCHEMA_VERSION}")
    for key in ("name", "description", "source"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise ConfigError(f"{where}: {key} must be a non-empty string (every number needs its source)")
    cost = data.get("cost_per_mb")
    return Link(
        name=data["name"], description=data["description"], source=data["source"],
        bandwidth_mbps=_positive(data, "bandwidth_mbps", where), rtt_ms=_positive(data, "rtt_ms", where, zero=True),
        error_pct=_positive(data, "error_pct", where), cost_per_mb=None if cost is None else _positive(data, "cost_per_mb", where, zero=True),
        path=path,
    )
