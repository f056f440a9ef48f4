"""``depth/<block stack>``: the fraction of a stack of attention blocks removed (whole blocks).

The teacher decides which blocks go (least influence on its hidden state, over fixed training
samples), so a narrower student and a rebuilt trial lose the same ones.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from autocomp.compress.depth import block_stacks, remove_blocks, removed_blocks
from autocomp.knobs.base import LayerFacts, TorchWork
from autocomp.knobs.rules import ModuleRatioRules
from autocomp.runtime import training_samples
from autocomp.targets import compressible_layers

DEPTH_SAMPLES = 128
"""Training samples the teacher runs on to rank its blocks (deterministic, so a rebuilt trial loses the same blocks)."""


class Depth(ModuleRatioRules):
    name = "depth"
    found = staticmethod(block_stacks)
    what, label, skip_absent = "stack of attention blocks", "stacks", True

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
