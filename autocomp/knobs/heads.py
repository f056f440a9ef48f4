"""``heads/<attention module>``: the fraction of a self-attention module's heads removed (whole heads).

Channel pruning cannot narrow q/k/v projections without breaking the reshape into heads; this
knob removes whole heads through torch-pruning's attention support (``compress.heads``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping


from autocomp.compress.heads import attention_blocks, prune_heads
from autocomp.knobs.base import LayerFacts, TorchWork
from autocomp.knobs.rules import ModuleRatioRules
from autocomp.targets import compressible_layers


class Heads(ModuleRatioRules):
    name = "heads"
    found = staticmethod(attention_blocks)
    what, label = "self-attention module", "attention modules"

    def apply(self, values: Mapping[str, Any], work: TorchWork) -> TorchWork:
        present = dict(work.model.named_modules())  # a removed block's heads went with it
        ratios = {path: ratio for path, ratio in values.items() if ratio > 0 and path in present}
        if not ratios:
            return work
        return replace(work, model=prune_heads(work.model, ratios, work.example_inputs), changed=True)

    def columns(self, values: Mapping[str, Any], facts: LayerFacts) -> dict[str, dict[str, Any]]:
        # q/k/v projections carry their module's head count (kept heads = channels / head size)
        cells = {layer: {"heads": None, "baseline_heads": None} for layer in compressible_layers(facts.teacher)}
        for block in attention_blocks(facts.teacher).values():
            for projection in block.projections:
                channels = facts.channels.get(projection)
                cells[projection] = {
                    "heads": None if channels is None else channels // block.head_size,
                    "baseline_heads": block.num_heads,
                }
        return cells
