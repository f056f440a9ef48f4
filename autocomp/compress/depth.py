"""Depth pruning of a transformer: whole blocks of a stack of identical residual blocks go.

Head and feed-forward pruning leave every block's glue in place (LayerNorms,
the reshapes into heads, Softmax, the residual adds), and on a small encoder
that glue is about half of onnxruntime's kernel time: only fewer blocks remove
it. NVIDIA's Minitron / ModelOpt prune depth beside width for that reason.

A *stack* is an ``nn.Sequential`` or ``nn.ModuleList`` of two or more modules
of one class that each hold a self-attention module (``heads.attention_blocks``):
Hugging Face ``encoder.layer``, DistilBERT's ``transformer.layer``, a ViT's
``blocks``. Such blocks map a hidden state to one of the same shape, so any of
them can go. Which go is decided by the teacher, on real inputs: a block whose
output is closest to its input (Block Influence, ``1 - cos(input, output)``,
ShortGPT 2024) changes least and goes first.

The blocks that stay keep their module paths (``encoder.layer.3`` stays
``encoder.layer.3``), so the plan's head and feed-forward parameters, the
layer table and the sensitivity profile keep naming the same layers; the
parameters of a removed block are simply moot.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from autocomp.compress.heads import attention_blocks, first_tensor
from autocomp.errors import PlanError
from autocomp.targets import check_known, check_ratios


class KeptBlocks(nn.ModuleList):
    """A ModuleList whose remaining blocks keep their original names; ``stack[i]`` is the i-th remaining one."""

    def __getitem__(self, idx: Any) -> Any:
        if isinstance(idx, slice):
            return nn.ModuleList(list(self._modules.values())[idx])
        return list(self._modules.values())[idx]


def block_stacks(model: nn.Module) -> dict[str, int]:
    """Module path -> number of blocks, for every stack of identical attention blocks, in model order."""
    owners = list(attention_blocks(model))
    stacks = {}
    for path, module in model.named_modules():
        if not path or not isinstance(module, (nn.Sequential, nn.ModuleList)):
            continue  # the model itself is never a stack: something must stay around the blocks
        children = list(module.named_children())
        if len(children) < 2 or len({type(child) for _, child in children}) != 1:
            continue
        prefix = f"{path}." if path else ""
        if all(any(owner.startswith(f"{prefix}{name}.") for owner in owners) for name, _ in children):
            stacks[path] = len(children)
    return stacks


def blocks_kept(num_blocks: int, ratio: float) -> int:
    """How many of ``num_blocks`` blocks a depth ratio keeps: the nearest whole number, at least one."""
    return max(1, min(num_blocks, round(num_blocks * (1.0 - ratio))))


def block_influence(model: nn.Module, stack: str, samples: Sequence[tuple[Tensor, ...]]) -> dict[str, float]:
    """Block path -> mean ``1 - cos(input, output)`` of its hidden states over ``samples`` (its influence)."""
    container = dict(model.named_modules())[stack]
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}

    def hook(name: str):
        def record(_module: nn.Module, args: tuple, output: Any) -> None:
            inp, out = first_tensor(args), first_tensor(output)
            if inp is None or out is None or inp.shape != out.shape:
                raise PlanError(f"depth/{stack}: block {name} changes its hidden state's shape; only shape-keeping blocks can be removed")
            cos = torch.nn.functional.cosine_similarity(inp.flatten(0, -2).float(), out.flatten(0, -2).float(), dim=-1)
            sums[name] = sums.get(name, 0.0) + float((1.0 - cos).sum())
            counts[name] = counts.get(name, 0) + cos.numel()

        return record

    prefix = f"{stack}." if stack else ""
    handles = [child.register_forward_hook(hook(prefix + name)) for name, child in container.named_children()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for batch in samples:
                model(*batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: sums[name] / counts[name] for name in sums}


def removed_blocks(
    teacher: nn.Module, ratios: Mapping[str, float], samples: Sequence[tuple[Tensor, ...]]
) -> list[str]:
    """The block paths a plan's depth ratios remove: in each stack, the blocks of least influence in the teacher."""
    ratios = check_ratios("depth/", ratios)
    check_known("depth/", ratios, block_stacks(teacher), what="a stack of attention blocks", label="stacks")
    stacks = block_stacks(teacher)
    removed: list[str] = []
    for stack, ratio in ratios.items():
        drop = stacks[stack] - blocks_kept(stacks[stack], ratio)
        if drop:
            influence = block_influence(teacher, stack, samples)
            removed += sorted(sorted(influence, key=influence.__getitem__)[:drop], key=list(influence).index)
    return removed


def remove_blocks(model: nn.Module, blocks: Sequence[str]) -> nn.Module:
    """A copy of ``model`` without the named blocks; the others keep their paths. The input is not modified."""
    pruned = copy.deepcopy(model)
    if not blocks:
        return pruned
    modules = dict(pruned.named_modules())
    by_stack: dict[str, set[str]] = {}
    for block in blocks:
        stack, _, name = block.rpartition(".")
        by_stack.setdefault(stack, set()).add(name)
    for stack, names in by_stack.items():
        container = modules[stack]
        kept = OrderedDict((name, child) for name, child in container.named_children() if name not in names)
        if isinstance(container, nn.Sequential):
            replacement: nn.Module = nn.Sequential(kept)
        else:
            replacement = KeptBlocks()
            for name, child in kept.items():
                replacement.add_module(name, child)
        parent_path, _, attr = stack.rpartition(".")
        setattr(modules[parent_path] if parent_path else pruned, attr, replacement)
    return pruned
