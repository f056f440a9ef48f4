"""What a plan may name, and the checks of the values it gives them.

A leaf: the compressors in ``compress/`` check their own arguments with it, and the knobs
(``autocomp.knobs``), which call the compressors, check a plan's values with it, so neither
imports the other's layer to validate.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from torch import nn

from autocomp.errors import PlanError
from autocomp.precision import SUPPORTED_BITS, precision

COMPRESSIBLE = (nn.Conv2d, nn.Conv1d, nn.Linear)
"""Layer types a plan may name: they own the weights that pruning, sparsity and bit-widths act on."""


def compressible_layers(model: nn.Module) -> list[str]:
    """Module paths of the layers a plan may name, in model order."""
    return [name for name, module in model.named_modules() if name and isinstance(module, COMPRESSIBLE)]


def check_ratio(name: str, ratio: Any) -> float:
    """``ratio`` as a float in [0, 1); ``name`` is the plan parameter it came from (for the message)."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or math.isnan(ratio) or not 0.0 <= float(ratio) < 1.0:
        raise PlanError(f"{name}: ratio {ratio!r} is outside [0, 1); use e.g. 0.5 for half the channels")
    return float(ratio)


def check_width(name: str, width: Any) -> float:
    """A student width multiplier in (0, 1]."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or math.isnan(width) or not 0.0 < float(width) <= 1.0:
        raise PlanError(f"{name}: width {width!r} is outside (0, 1]; 1.0 keeps the original width")
    return float(width)


def check_bits(name: str, bits: Any) -> int | str:
    """A precision ``bits/`` may take: 32, 16, 8 or "dyn8"."""
    value = precision(bits)
    if value is None:
        raise PlanError(f"{name}: bit-width {bits!r} is not supported; use one of {', '.join(map(str, SUPPORTED_BITS))}")
    return value


def check_ratios(prefix: str, ratios: Mapping[str, Any]) -> dict[str, float]:
    return {target: check_ratio(prefix + target, ratio) for target, ratio in ratios.items()}


def check_layers(prefix: str, layers: Iterable[str], model: nn.Module) -> None:
    """Raise PlanError for a named layer the model lacks or one that is not a Conv or Linear layer."""
    modules = dict(model.named_modules())
    for layer in layers:
        module = modules.get(layer)
        if module is None:
            near = compressible_layers(model)
            hint = ", ".join(near[:6]) + (", ..." if len(near) > 6 else "")
            raise PlanError(f"{prefix}{layer}: the model has no layer {layer!r}; compressible layers: {hint}")
        if not isinstance(module, COMPRESSIBLE):
            raise PlanError(f"{prefix}{layer}: {layer!r} is a {type(module).__name__}; plans name Conv or Linear layers")


def check_known(prefix: str, paths: Iterable[str], known: Iterable[str], *, what: str, label: str) -> None:
    """Raise PlanError for a path that is not one of ``known`` (``what`` the path must be, ``label`` the list's name)."""
    known = list(known)
    for path in paths:
        if path not in known:
            raise PlanError(f"{prefix}{path}: {path!r} is not {what} of the model; {label}: {', '.join(known) or 'none'}")
