"""``sparsity/<layer>``: unstructured magnitude sparsity, the zeros kept through fine-tuning by masks.

It makes a file smaller only once compressed, and faster only on a runtime with sparse kernels
(a profile's ``unstructured_sparsity_speedup``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import optuna.distributions as od

from autocomp.compress.sparsity import apply_sparsity, make_sparsity_permanent
from autocomp.knobs.base import LAYERS, LayerFacts, Scope, TorchWork
from autocomp.knobs.rules import LayerRule, assign, RatioRules
from autocomp.targets import compressible_layers


class Sparsity(RatioRules):
    name = "sparsity"
    holds = True
    targets = LAYERS

    def distributions(self, spec: tuple[LayerRule, ...], scope: Scope) -> dict[str, od.BaseDistribution]:
        return assign(self.prefix, spec, list(scope.layers), space=scope.space_name, what="compressible layer", label="layers")

    def apply(self, values: Mapping[str, Any], work: TorchWork) -> TorchWork:
        present = dict(work.model.named_modules())
        ratios = {layer: ratio for layer, ratio in values.items() if ratio > 0 and layer in present}
        if not ratios:
            return work
        # the masks keep the zeros while the student fine-tunes; folded into the weights after it
        return replace(work, model=apply_sparsity(work.model, ratios), changed=True, finish=(*work.finish, make_sparsity_permanent))

    def columns(self, values: Mapping[str, Any], facts: LayerFacts) -> dict[str, dict[str, Any]]:
        return {layer: {"sparsity_ratio": values.get(layer, 0.0)} for layer in compressible_layers(facts.teacher)}
