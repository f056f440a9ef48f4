"""``prune/<layer>``: structured (channel) pruning, dependency-aware through torch-pruning.

With the model traced, a group of layers that share output channels (a residual stream) is one
parameter, named after its first layer; groups that touch an excluded layer or feed the model's
outputs get none (``compress.prune.coupled_groups``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import optuna.distributions as od

from autocomp.compress.prune import coupled_groups, prune_channels
from autocomp.knobs.base import LAYERS, LayerFacts, Scope, TorchWork
from autocomp.knobs.rules import LayerRule, assign, RatioRules
from autocomp.targets import compressible_layers


class Prune(RatioRules):
    name = "prune"
    targets = LAYERS

    def distributions(self, spec: tuple[LayerRule, ...], scope: Scope) -> dict[str, od.BaseDistribution]:
        targets = list(scope.layers)
        if spec and scope.example_inputs is not None:
            allowed = set(scope.layers)
            groups = coupled_groups(scope.model, tuple(scope.example_inputs))
            targets = [group[0] for group in groups if set(group) <= allowed]
        return assign(self.prefix, spec, targets, space=scope.space_name, what="compressible layer", label="layers",
                      listing=list(scope.layers))

    def apply(self, values: Mapping[str, Any], work: TorchWork) -> TorchWork:
        present = dict(work.model.named_modules())  # a block depth pruning removed took its layers along
        ratios = {layer: ratio for layer, ratio in values.items() if ratio > 0 and layer in present}
        model = prune_channels(work.model, ratios, work.example_inputs, round_to=work.round_to) if ratios else work.model
        return replace(work, model=model, changed=work.changed or bool(ratios))

    def columns(self, values: Mapping[str, Any], facts: LayerFacts) -> dict[str, dict[str, Any]]:
        return {layer: {"prune_ratio": values.get(layer, 0.0)} for layer in compressible_layers(facts.teacher)}
