"""Strict YAML loading shared by search spaces and device profiles.

Unknown keys are errors (a typo must not be silently ignored) and every message
names the file, the key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from autocomp.errors import ConfigError


def load_yaml(path: Path, *, what: str) -> dict[str, Any]:
    """Read one YAML mapping, turning I/O and syntax errors into one-line ConfigErrors."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{what} {path} is not valid YAML{where}: {problem}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a YAML mapping (key: value lines), got {type(data).__name__}")
    return data


def check_keys(data: Mapping[str, Any], *, allowed: Iterable[str], where: str, required: Iterable[str] = ()) -> None:
    """Reject unknown and missing keys, naming them and the allowed ones."""
    allowed = list(allowed)
    unknown = [key for key in data if key not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(allowed)}")
    missing = [key for key in required if key not in data]
    if missing:
        raise ConfigError(f"{where}: missing required key {missing[0]!r}")
