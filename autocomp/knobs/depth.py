"""``depth/<block stack>``: the fraction of a stack of attention blocks removed (whole blocks).

The teacher decides which blocks go (least influence on its hidden state, over fixed training
samples), so a narrower student and a rebuilt trial lose the same ones.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Mapping

import optuna.distributions as od

from autocomp.compress.depth import block_stacks, remove_blocks, removed_blocks
from autocomp.knobs.base import RATIO, TargetKind, LayerFacts, Scope, TorchWork
from autocomp.targets import check_known
from autocomp.knobs.rules import LayerRule, assign, RatioRules, matches
from autocomp.runtime import training_samples
from autocomp.targets import compressible_layers

log = logging.getLogger(__name__)

DEPTH_SAMPLES = 128
"""Training samples the teacher runs on to rank its blocks (deterministic, so a rebuilt trial loses the same blocks)."""


class Depth(RatioRules):
    name = "depth"
    prefix = "depth/"
    stage = "torch"
    value = RATIO
    targets = TargetKind(lambda prefix, paths, model: check_known(prefix, paths, block_stacks(model), what='a stack of attention blocks', label='stacks'))

    def distributions(self, spec: tuple[LayerRule, ...], scope: Scope) -> dict[str, od.BaseDistribution]:
        if not spec:
            return {}
        stacks = [path for path in block_stacks(scope.model) if not matches(path, scope.exclude)]
        if not stacks:
            # a space serves CNNs and transformers alike: a model without block stacks searches no depth
            log.info("search space %r: the model has no stack of attention blocks; depth not searched", scope.space_name)
            return {}
        return assign(self.prefix, spec, stacks, space=scope.space_name, what="stack of attention blocks", label="stacks")

    def apply(self, values: Mapping[str, Any], work: TorchWork) -> TorchWork:
        ratios = {stack: ratio for stack, ratio in values.items() if ratio > 0}
        blocks = removed_blocks(work.teacher, ratios, teacher_samples(work.task))
        return replace(work, model=remove_blocks(work.model, blocks), changed=work.changed or bool(blocks))

    def columns(self, values: Mapping[str, Any], facts: LayerFacts) -> dict[str, dict[str, Any]]:
        # a layer of a removed block has no channels left; its row names the block that went
        removed = [stack for stack, ratio in values.items() if ratio > 0]
        cells = {}
        for layer in compressible_layers(facts.teacher):
            stack = next((s for s in removed if layer.startswith(f"{s}.")), None)
            gone = stack is not None and layer not in facts.channels
            cells[layer] = {"removed_block": f"{stack}.{layer[len(stack) + 1:].split('.')[0]}" if gone else None}
        return cells


def teacher_samples(task: Any) -> list:
    """The samples that rank a teacher's blocks (``DEPTH_SAMPLES`` of the training data, always the same)."""
    return training_samples(task, max_samples=DEPTH_SAMPLES)
