"""Unstructured magnitude sparsity per layer, with ``torch.nn.utils.prune``.

Zeroing individual weights makes no runtime faster on the boards autocomp
targets (see STACK.md); it pays only where a runtime or a compressor downstream
exploits zeros (file compression, sparse kernels). It is applied in two steps
so that fine-tuning keeps the zeros:

1. ``apply_sparsity`` attaches a fixed mask to each named layer's weight
   (``weight_orig`` * ``weight_mask``); training updates ``weight_orig`` but the
   masked positions stay zero in the weight the layer uses.
2. ``make_sparsity_permanent`` folds the masks into plain weights before export,
   so an ONNX file carries one weight tensor per layer, not two.
"""

from __future__ import annotations

import copy
import logging
from typing import Mapping

from torch import Tensor, nn
from torch.nn.utils import prune

from autocomp.targets import COMPRESSIBLE, check_layers, check_ratios

log = logging.getLogger(__name__)


def apply_sparsity(model: nn.Module, ratios: Mapping[str, float]) -> nn.Module:
    """A copy of ``model`` in which each named layer's ``round(ratio * weight.numel())`` smallest weights are masked to zero.

    ``ratios`` maps a Conv/Linear module path to its sparsity ratio in [0, 1);
    magnitudes are ranked within each layer (never globally, which can zero a
    whole layer). Ratio 0 leaves a layer without a mask. Biases are not
    touched. The masks stay attached so that fine-tuning keeps the zeros; call
    ``make_sparsity_permanent`` before export. Raises PlanError for an unknown
    or non-Conv/Linear layer or a ratio outside [0, 1).
    """
    ratios = check_ratios("sparsity/", ratios)
    check_layers("sparsity/", ratios, model)
    sparse = clone_model(model)
    modules = dict(sparse.named_modules())
    for layer, ratio in ratios.items():
        if ratio == 0.0:
            continue
        module = modules[layer]
        amount = round(ratio * module.weight.numel())
        # An int amount is an exact count; a float would be rounded by torch's own rule.
        prune.l1_unstructured(module, "weight", amount=amount)
        log.info("sparsity %s: %d of %d weights masked (ratio %.3f)", layer, amount, module.weight.numel(), ratio)
    return sparse


def make_sparsity_permanent(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every pruning mask folded into its parameter (no ``*_orig`` / ``*_mask`` left)."""
    permanent = clone_model(model)
    for module in permanent.modules():
        # A module may carry masks on several parameters; each hook names one.
        names = [hook._tensor_name for hook in module._forward_pre_hooks.values() if isinstance(hook, prune.BasePruningMethod)]
        for name in names:
            prune.remove(module, name)
    return permanent


def clone_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)`` that also works while sparsity masks are attached.

    A masked layer's ``weight`` is ``weight_orig * weight_mask``, a non-leaf
    tensor that ``deepcopy`` refuses. It is recomputed before every forward, so
    the copy gets a detached snapshot of it; the input model is not touched.
    """
    memo: dict[int, object] = {}
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                derived = getattr(module, hook._tensor_name, None)
                if isinstance(derived, Tensor) and not derived.is_leaf:
                    memo[id(derived)] = derived.detach().clone()
    return copy.deepcopy(model, memo)


def sparsity_of(model: nn.Module) -> dict[str, float]:
    """Fraction of exactly-zero weights in each compressible layer (for reports and tests)."""
    return {
        name: float((module.weight == 0).sum()) / module.weight.numel()
        for name, module in model.named_modules()
        if name and isinstance(module, COMPRESSIBLE)
    }
