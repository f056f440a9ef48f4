"""Head-aware pruning of multi-head self-attention: whole heads go, q, k, v and the output projection together.

Pruning the output features of ``query``/``key``/``value`` one by one breaks
the reshape into heads (``shape '[2, 16, -1, 32]' is invalid``): attention has
to be pruned as attention. torch-pruning knows heads (``num_heads=`` with
``prune_num_heads=True``) and removes the matching input columns of the output
projection through its dependency graph; this module finds the attention
blocks, turns a plan's ratio into a whole number of heads, and updates the
module's head count afterwards so its forward keeps working.

Supported (``LAYOUTS``): Hugging Face BERT-style self-attention (BERT, RoBERTa,
ViT: Linear children ``query``, ``key``, ``value`` and the attributes
``num_attention_heads``, ``attention_head_size``, ``all_head_size``) and
DistilBERT's (``q_lin``, ``k_lin``, ``v_lin``, ``n_heads``,
``attention_head_size``). Both reshape into heads with ``-1`` heads, so a
module with fewer heads runs once its head count is updated.

Not supported: ``torch.nn.MultiheadAttention``. Its head count is tied to the
residual width (``embed_dim = num_heads * head_dim``, one packed
``in_proj_weight``), so a head cannot go without narrowing the whole residual
stream; its feed-forward layers are still pruned and every Linear quantized.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch_pruning as tp
from torch import Tensor, nn

from autocomp.compress.tp_warnings import quiet_unwrapped_parameters
from autocomp.errors import CompressionError, first_line
from autocomp.targets import check_known, check_ratios

@dataclass(frozen=True)
class _Layout:
    projections: tuple[str, str, str]  # q, k, v Linear children
    heads_attr: str  # the head count the module keeps
    size_attr: str  # the head size (never changed: whole heads go)
    width_attr: str | None  # heads x head size, where the module keeps it


LAYOUTS = (
    _Layout(("query", "key", "value"), "num_attention_heads", "attention_head_size", "all_head_size"),  # BERT, RoBERTa, ViT
    _Layout(("q_lin", "k_lin", "v_lin"), "n_heads", "attention_head_size", None),  # DistilBERT
)


@dataclass(frozen=True)
class AttentionBlock:
    """One self-attention module: its path, its q/k/v projection paths and its head layout."""

    path: str
    projections: tuple[str, str, str]
    num_heads: int
    head_size: int
    layout: _Layout


def attention_blocks(model: nn.Module) -> dict[str, AttentionBlock]:
    """Module path -> AttentionBlock for every self-attention module of a known layout, in model order."""
    blocks = {}
    for path, module in model.named_modules():
        children = dict(module.named_children())
        for layout in LAYOUTS:
            if not all(isinstance(children.get(name), nn.Linear) for name in layout.projections):
                continue
            heads, size = getattr(module, layout.heads_attr, None), getattr(module, layout.size_attr, None)
            if isinstance(heads, int) and isinstance(size, int):
                prefix = f"{path}." if path else ""
                projections = tuple(prefix + name for name in layout.projections)
                blocks[path] = AttentionBlock(path, projections, heads, size, layout)  # type: ignore[arg-type]
                break
    return blocks


def heads_kept(num_heads: int, ratio: float) -> int:
    """How many of ``num_heads`` heads a pruning ratio keeps: the nearest whole number, at least one."""
    return max(1, min(num_heads, round(num_heads * (1.0 - ratio))))


def prune_heads(
    model: nn.Module,
    ratios: Mapping[str, float],
    example_inputs: tuple[Tensor, ...],
    *,
    output_transform: Callable[[Any], Tensor] | None = None,
) -> nn.Module:
    """A copy of ``model`` with a fraction of the heads of each named attention block removed.

    ``ratios`` maps an attention module's path (see ``attention_blocks``) to
    the fraction of its heads to remove, in [0, 1); the heads with the smallest
    L2 norm over their q, k, v weights and output-projection columns go, and at
    least one head stays. The residual stream, the head size and every other
    layer are left as they are. ``output_transform`` reduces a model output
    that is not a tensor (a ``ModelOutput``) to one for tracing; by default the
    first tensor in it is used. The input model is never modified.

    Raises PlanError for a path that is not an attention block or a ratio
    outside [0, 1); CompressionError when torch-pruning cannot trace the model.
    """
    ratios = check_ratios("heads/", ratios)
    check_known("heads/", ratios, attention_blocks(model), what="a self-attention module", label="attention modules")
    blocks = attention_blocks(model)
    removed = {path: blocks[path].num_heads - heads_kept(blocks[path].num_heads, ratio) for path, ratio in ratios.items()}
    removed = {path: n for path, n in removed.items() if n > 0}
    pruned = copy.deepcopy(model)
    if not removed:
        return pruned
    modules = dict(pruned.named_modules())
    num_heads = {modules[p]: b.num_heads for b in blocks.values() for p in b.projections}  # the copy has the same paths
    channel_ratios, head_ratios = {}, {}
    for path, n in removed.items():
        block = blocks[path]
        for projection in block.projections:
            # torch-pruning removes ceil(ratio * heads) heads: (n - 0.5) / heads gives exactly n whatever the rounding
            channel_ratios[modules[projection]] = head_ratios[modules[projection]] = (n - 0.5) / block.num_heads
    try:
        with torch.enable_grad(), quiet_unwrapped_parameters():
            pruner = tp.pruner.MetaPruner(
                pruned, tuple(example_inputs), importance=tp.importance.GroupMagnitudeImportance(p=2),
                num_heads=num_heads, prune_num_heads=True, prune_head_dims=False, pruning_ratio=0.0,
                pruning_ratio_dict=channel_ratios, head_pruning_ratio_dict=head_ratios, round_to=None,
                output_transform=output_transform or _summed_output,
            )
            pruner.step()
    except Exception as exc:  # torch-pruning reports tracing failures as assorted exception types
        first = first_line(exc)
        raise CompressionError(f"torch-pruning could not prune the heads of {type(model).__name__} ({type(exc).__name__}: {first})") from exc
    for path in removed:
        attention, layout = modules[path], blocks[path].layout
        query = modules[blocks[path].projections[0]]
        setattr(attention, layout.heads_attr, query.out_features // blocks[path].head_size)
        if layout.width_attr:
            setattr(attention, layout.width_attr, query.out_features)
    return pruned.train(model.training)  # tracing switches the copy to eval mode


def first_tensor(value: Any) -> Tensor | None:
    """A module output's first tensor: itself, or the first of a tuple or of a mapping (a Hugging Face ``ModelOutput``)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, Tensor):
                return item
    return None


def _summed_output(out: Any) -> Tensor:
    """torch-pruning's output transform: a scalar from the model's first output tensor, to trace back from."""
    tensor = first_tensor(out)
    if tensor is None:
        raise CompressionError(f"the model returns a {type(out).__name__} holding no tensor; pass output_transform")
    return tensor.sum()
