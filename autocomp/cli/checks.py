"""Validation of numeric command-line options at the boundary, before any work.

Typer's own ``min=``/``max=`` messages do not quote the value given, so the
commands declare plain types and check ranges here: one line naming the
option, the value and the allowed range.
"""

from __future__ import annotations

import math

from autocomp.errors import ConfigError

import typer

THREADS_OPTION = typer.Option(
    None, "--threads",
    help="Intra-op threads the model is timed and deployed with (default: the profile's runtime.threads; local: auto, every CPU here).",
)

SEED_LIMIT = 2**32  # numpy's RandomState, behind Optuna's samplers, takes seeds in [0, 2**32)


def check_range(
    option: str,
    value: float | None,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ConfigError unless ``low <= value <= high`` (``<`` where open); None means the option was not given."""
    if value is None:
        return
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ConfigError(f"{option} {_number(value)} is out of range; allowed: {_interval(low, high, low_open, high_open)}")


def check_seed(option: str, value: int) -> None:
    check_range(option, value, low=0, high=SEED_LIMIT, high_open=True)


def check_threads(value: int | None) -> None:
    check_range("--threads", value, low=1, high=1024)


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"{_number(low)} {'<' if low_open else '<='} x {'<' if high_open else '<='} {_number(high)}"
    if low is not None:
        return f"{'>' if low_open else '>='} {_number(low)}"
    if high is not None:
        return f"{'<' if high_open else '<='} {_number(high)}"
    return "a finite number"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"
