"""CompressionPlan: a typed view of one point of the search, ``{knob: {target: value}}``.

Optuna parameter names are stored in studies, so they are stable: ``<knob>/<target>``, the knob's
prefix and the module path it acts on. The knobs (``autocomp.knobs``) are:

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
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from torch import nn

from autocomp import knobs
from autocomp.errors import PlanError
from autocomp.targets import COMPRESSIBLE, compressible_layers

__all__ = ["COMPRESSIBLE", "CompressionPlan", "compressible_layers"]


@dataclass(frozen=True)
class CompressionPlan:
    """Each knob's values by target: ``{"prune": {"layer1.conv1": 0.5}, "distill": {"width": 0.75}}``.

    Values are checked and normalised by their knob's ``ValueKind`` on construction; a knob a plan
    does not mention changes nothing. ``plan["bits"]`` is one knob's values (empty when absent).
    """

    values: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checked = {}
        for name, targets in sorted(self.values.items()):
            if not targets:
                continue  # a knob with no values is a knob the plan does not mention
            knob = knobs.get(name, where="plan", error=PlanError)
            checked[name] = MappingProxyType(
                {target: knob.value.check(knob.prefix + target, value) for target, value in sorted(targets.items())}
            )
        object.__setattr__(self, "values", MappingProxyType(checked))

    @classmethod
    def of(cls, **by_knob: Mapping[str, Any]) -> "CompressionPlan":
        """``CompressionPlan.of(prune={...}, bits={...}, distill={"width": 0.5})``."""
        return cls(by_knob)

    def __getitem__(self, knob: str) -> Mapping[str, Any]:
        return self.values.get(knob, MappingProxyType({}))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "CompressionPlan":
        """Build a plan from Optuna ``trial.params`` (unknown names are an error, not ignored)."""
        values: dict[str, dict[str, Any]] = {}
        for param, value in params.items():
            knob, target = knobs.knob_of(param)
            values.setdefault(knob.name, {})[target] = value
        return cls(values)

    def to_params(self) -> dict[str, Any]:
        """The Optuna parameter dict for this plan (inverse of ``from_params``)."""
        return {
            knobs.KNOBS[name].prefix + target: value for name, targets in self.values.items() for target, value in targets.items()
        }

    def to_json(self) -> str:
        return json.dumps(self.to_params(), indent=2, sort_keys=True)

    def changes(self, knob: str) -> bool:
        """True when some value of ``knob`` differs from its neutral one (the knob has work to do)."""
        neutral = knobs.KNOBS[knob].value.neutral
        return any(value != neutral for value in self[knob].values())

    @property
    def is_identity(self) -> bool:
        """True when the plan changes nothing (the baseline)."""
        return not any(self.changes(name) for name in self.values)

    def validate(self, model: nn.Module) -> None:
        """Raise PlanError if the plan names something the model lacks, or a layer its knob cannot act on."""
        for name, targets in self.values.items():
            knob = knobs.KNOBS[name]
            knob.targets.check(knob.prefix, targets, model)
