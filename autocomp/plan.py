"""CompressionPlan: a typed view of one point of the search.

Optuna parameter names are stored in studies, so they are stable:

* ``prune/<module path>``    structured (channel) sparsity ratio in [0, 1)
* ``sparsity/<module path>`` unstructured magnitude sparsity ratio in [0, 1)
* ``heads/<module path>``    fraction of a self-attention module's heads to remove, in [0, 1)
* ``depth/<module path>``    fraction of a stack of attention blocks to remove (whole blocks), in [0, 1)
* ``bits/<module path>``     precision of that layer in the exported graph: 32, 16, 8 (static int8,
                             calibrated) or ``"dyn8"`` (dynamic int8: int8 weights, activations
                             quantized at run time, onnxruntime's ``quantize_dynamic``)
* ``distill/width``          student width multiplier in (0, 1]

Module paths are ``named_modules()`` names of the task's model (``layer1.0.conv1``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from torch import nn

from autocomp.errors import PlanError
from autocomp.precision import SUPPORTED_BITS, precision

PRUNE, SPARSITY, BITS, WIDTH = "prune/", "sparsity/", "bits/", "distill/width"
HEADS, DEPTH = "heads/", "depth/"
COMPRESSIBLE = (nn.Conv2d, nn.Conv1d, nn.Linear)
"""Layer types a plan may name: they own the weights that pruning, sparsity and bit-widths act on."""


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(sorted((mapping or {}).items())))


@dataclass(frozen=True)
class CompressionPlan:
    """Per-layer structured and unstructured sparsity, per-layer bit-widths and a student width."""

    prune: Mapping[str, float] = field(default_factory=dict)
    sparsity: Mapping[str, float] = field(default_factory=dict)
    bits: Mapping[str, int | str] = field(default_factory=dict)
    width: float = 1.0
    heads: Mapping[str, float] = field(default_factory=dict)
    depth: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind, ratios in (("prune", self.prune), ("sparsity", self.sparsity), ("heads", self.heads), ("depth", self.depth)):
            for layer, ratio in ratios.items():
                if not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) < 1.0 or math.isnan(ratio):
                    raise PlanError(f"{kind}/{layer}: ratio {ratio!r} is outside [0, 1); use e.g. 0.5 for half the channels")
        for layer, bits in self.bits.items():
            if precision(bits) is None:
                raise PlanError(f"bits/{layer}: bit-width {bits!r} is not supported; use one of {', '.join(map(str, SUPPORTED_BITS))}")
        if not isinstance(self.width, (int, float)) or not 0.0 < float(self.width) <= 1.0:
            raise PlanError(f"{WIDTH}: width {self.width!r} is outside (0, 1]; 1.0 keeps the original width")
        object.__setattr__(self, "prune", _frozen({k: float(v) for k, v in self.prune.items()}))
        object.__setattr__(self, "sparsity", _frozen({k: float(v) for k, v in self.sparsity.items()}))
        object.__setattr__(self, "heads", _frozen({k: float(v) for k, v in self.heads.items()}))
        object.__setattr__(self, "depth", _frozen({k: float(v) for k, v in self.depth.items()}))
        object.__setattr__(self, "bits", _frozen({k: precision(v) for k, v in self.bits.items()}))
        object.__setattr__(self, "width", float(self.width))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "CompressionPlan":
        """Build a plan from Optuna ``trial.params`` (unknown names are an error, not ignored)."""
        prune, sparsity, bits, heads, depth, width = {}, {}, {}, {}, {}, 1.0
        for name, value in params.items():
            if name == WIDTH:
                width = value
            elif name.startswith(DEPTH):
                depth[name[len(DEPTH) :]] = value
            elif name.startswith(HEADS):
                heads[name[len(HEADS) :]] = value
            elif name.startswith(PRUNE):
                prune[name[len(PRUNE) :]] = value
            elif name.startswith(SPARSITY):
                sparsity[name[len(SPARSITY) :]] = value
            elif name.startswith(BITS):
                bits[name[len(BITS) :]] = value
            else:
                raise PlanError(
                    f"unknown plan parameter {name!r}; expected {PRUNE}<layer>, {SPARSITY}<layer>, {BITS}<layer>, "
                    f"{HEADS}<attention module>, {DEPTH}<block stack> or {WIDTH}"
                )
        return cls(prune=prune, sparsity=sparsity, bits=bits, width=width, heads=heads, depth=depth)

    def to_params(self) -> dict[str, Any]:
        """The Optuna parameter dict for this plan (inverse of ``from_params``)."""
        params: dict[str, Any] = {f"{PRUNE}{k}": v for k, v in self.prune.items()}
        params.update({f"{SPARSITY}{k}": v for k, v in self.sparsity.items()})
        params.update({f"{BITS}{k}": v for k, v in self.bits.items()})
        params.update({f"{HEADS}{k}": v for k, v in self.heads.items()})
        params.update({f"{DEPTH}{k}": v for k, v in self.depth.items()})
        params[WIDTH] = self.width
        return params

    def to_json(self) -> str:
        return json.dumps(self.to_params(), indent=2, sort_keys=True)

    @property
    def is_identity(self) -> bool:
        """True when the plan changes nothing (the baseline)."""
        return (
            self.width == 1.0
            and not any(self.prune.values())
            and not any(self.sparsity.values())
            and not any(self.heads.values())
            and not any(self.depth.values())
            and all(b == 32 for b in self.bits.values())
        )

    def validate(self, model: nn.Module) -> None:
        """Raise PlanError if the plan names a layer the model lacks or one it cannot compress."""
        modules = dict(model.named_modules())
        for kind, layers in (("prune", self.prune), ("sparsity", self.sparsity), ("bits", self.bits)):
            for layer in layers:
                module = modules.get(layer)
                if module is None:
                    near = [name for name in modules if name and isinstance(modules[name], COMPRESSIBLE)]
                    hint = ", ".join(near[:6]) + (", ..." if len(near) > 6 else "")
                    raise PlanError(f"{kind}/{layer}: the model has no layer {layer!r}; compressible layers: {hint}")
                if not isinstance(module, COMPRESSIBLE):
                    raise PlanError(
                        f"{kind}/{layer}: {layer!r} is a {type(module).__name__}; plans name Conv or Linear layers"
                    )
        if not (self.heads or self.depth):
            return
        from autocomp.compress.depth import block_stacks  # compress/ imports this module: not at the top
        from autocomp.compress.heads import attention_blocks

        for prefix, paths, find, what, label in (
            (HEADS, self.heads, attention_blocks, "a self-attention module", "attention modules"),
            (DEPTH, self.depth, block_stacks, "a stack of attention blocks", "stacks"),
        ):
            known = find(model) if paths else {}
            for path in paths:
                if path not in known:
                    raise PlanError(f"{prefix}{path}: {path!r} is not {what} of the model; {label}: {', '.join(known) or 'none'}")


def compressible_layers(model: nn.Module) -> list[str]:
    """Module paths of the layers a plan may name, in model order."""
    return [name for name, module in model.named_modules() if name and isinstance(module, COMPRESSIBLE)]
