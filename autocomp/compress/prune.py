"""Structured (channel) pruning: remove whole output channels of Conv/Linear layers with torch-pruning.

Removing channels makes a model genuinely smaller and faster on every runtime
(unlike unstructured sparsity). Every removal has to be mirrored in the layers
that consume those channels - the next conv's input, BatchNorm and LayerNorm
parameters, depthwise convs, the other branch of a residual add - and
torch-pruning's dependency graph works that out from one traced forward pass.
This module adds what a compression *plan* needs on top of it:

* plan names are ``named_modules()`` paths and are validated (``CompressionPlan``);
* layers whose output channels are the model's outputs (the classifier) cannot
  be output-pruned, and a plan naming one is a ``PlanError``; nor can the
  q/k/v projections of self-attention, whose channels go only as whole heads
  (``autocomp.compress.heads``);
* a ratio is turned into an exact channel count, rounded to ``round_to``;
* layers whose output channels are *coupled* (a residual stream, a depthwise
  conv and the 1x1 conv feeding it, transformer layers writing the residual
  stream) form one group that is pruned as a unit. When a plan gives different
  ratios to layers of one group, the **largest** ratio wins (see
  ``prune_channels``).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
import torch_pruning as tp
from torch import Tensor, nn

from autocomp.compress.sparsity import clone_model
from autocomp.errors import CompressionError, PlanError, first_line
from autocomp.compress.tp_warnings import quiet_unwrapped_parameters
from autocomp.export import not_tensors
from autocomp.targets import COMPRESSIBLE, check_layers, check_ratios

PRUNE = "prune/"  # the plan parameter prefix, for messages

log = logging.getLogger(__name__)

# Modules that consume their input channels and produce new ones: a channel
# dependency never passes through them, so a walk towards the graph's outputs stops there.
_CHANNEL_MIXERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.LSTM)


@dataclass(frozen=True)
class _Structure:
    """What the dependency graph says about a model, in module paths (model order)."""

    groups: tuple[tuple[str, ...], ...]
    """Compressible layers whose output channels are removed together."""
    output_layers: frozenset[str]
    """Compressible layers whose output channels reach a model output unchanged."""

    def group_of(self, layer: str) -> tuple[str, ...]:
        for group in self.groups:
            if layer in group:
                return group
        return (layer,)


def prune_channels(
    model: nn.Module,
    ratios: Mapping[str, float],
    example_inputs: tuple[Tensor, ...],
    *,
    round_to: int = 8,
    ignored_layers: Iterable[str] = (),
) -> nn.Module:
    """A copy of ``model`` with a fraction of each named layer's output channels removed.

    ``ratios`` maps a Conv/Linear module path to the fraction of its output
    channels to remove, in [0, 1). The channels with the smallest L2 norm
    across the whole dependency group go. ``example_inputs`` is one batch of
    model inputs (several tensors for multi-input models) used to trace the
    graph. ``ignored_layers`` are module paths whose output channels must stay.

    Channel counts: the number kept is ``out_channels * (1 - ratio)`` rounded to
    the nearest multiple of ``round_to`` (halves round up, at least one
    multiple), so a small ratio on a narrow layer may remove nothing. Where no
    multiple of ``round_to`` below the layer's width exists (a layer of 8 or
    fewer channels with ``round_to=8``) the count is rounded to a whole channel
    instead. ``round_to=1`` disables rounding.

    Coupled layers: when several named layers share one group of output
    channels (e.g. every conv writing one residual stream), the group is
    pruned once with the **largest** of their ratios. A ratio is the plan's
    request for that layer and pruning a group partially is impossible, so the
    most aggressive request is honoured exactly; a 0.0 elsewhere in the group
    does not veto it. Layers the plan does not name do not take part.
    ``coupled_groups`` lists the groups, so a search space can give each group
    one parameter instead.

    Raises PlanError for an unknown or non-Conv/Linear layer, a ratio outside
    [0, 1), or a layer whose channels are the model's outputs (or are coupled to
    them, or to an ignored layer); CompressionError when torch-pruning cannot
    prune a valid plan. The input model is never modified.
    """
    ratios = check_ratios(PRUNE, ratios)
    check_layers(PRUNE, ratios, model)
    _check_round_to(round_to)
    ignored = _checked_ignored(model, ignored_layers)
    requested = {layer: ratio for layer, ratio in ratios.items() if ratio > 0.0}
    heads = _attention_projections(model)
    named = sorted(set(requested) & set(heads))
    if named:
        layer = named[0]
        raise PlanError(
            f"prune/{layer}: {layer!r} projects attention heads, and pruning its channels breaks the reshape into "
            f"heads; prune whole heads with heads/{heads[layer]} instead"
        )
    ignored = ignored | frozenset(heads)  # a group coupled to a head projection cannot be channel-pruned either
    if not requested:
        return clone_model(model)
    _refuse_masked(model)
    pruned = copy.deepcopy(model)
    structure = _analyze(pruned, example_inputs)
    targets = _group_targets(pruned, structure, requested, ignored=ignored, round_to=round_to)
    _apply(pruned, targets, example_inputs, structure=structure, ignored=ignored)
    return pruned


def prune_to_width(
    model: nn.Module, width: float, example_inputs: tuple[Tensor, ...], *, round_to: int = 8
) -> nn.Module:
    """A copy of ``model`` in which every prunable hidden layer keeps about ``width`` of its output channels.

    This builds a distillation student from a trained teacher when the task
    cannot build a narrower model itself. Every compressible layer except those
    feeding the model's outputs is pruned by ``1 - width`` with the rounding of
    ``prune_channels``. ``width`` is in (0, 1]; 1.0 returns an unchanged copy.
    """
    if not isinstance(width, (int, float)) or math.isnan(width) or not 0.0 < float(width) <= 1.0:
        raise PlanError(f"distill/width: width {width!r} is outside (0, 1]; 1.0 keeps the original width")
    _check_round_to(round_to)
    if width == 1.0:
        return clone_model(model)
    _refuse_masked(model)
    pruned = copy.deepcopy(model)
    structure = _analyze(pruned, example_inputs)
    blocked = _output_bound(structure) | frozenset(_attention_projections(model))  # attention narrows by heads
    ratios = {
        layer: 1.0 - float(width)
        for group in structure.groups
        if not blocked.intersection(group)
        for layer in group
    }
    targets = _group_targets(pruned, structure, ratios, ignored=frozenset(), round_to=round_to)
    _apply(pruned, targets, example_inputs, structure=structure, ignored=frozenset())
    return pruned


def channel_counts(model: nn.Module) -> dict[str, int]:
    """Output channels (Conv) or ``out_features`` (Linear) of each compressible layer, in model order."""
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        if name and isinstance(module, COMPRESSIBLE):
            counts[name] = int(module.out_features if isinstance(module, nn.Linear) else module.out_channels)
    return counts


def coupled_groups(model: nn.Module, example_inputs: tuple[Tensor, ...]) -> list[tuple[str, ...]]:
    """The compressible layers of ``model`` grouped by shared output channels, in model order.

    Layers in one group are always pruned together (``prune_channels`` uses the
    largest ratio a plan gives any of them). Groups that feed the model's
    outputs are left out: they cannot be pruned. Single-layer groups are included.
    """
    _refuse_masked(model)
    probe = copy.deepcopy(model)
    structure = _analyze(probe, example_inputs)
    blocked = _output_bound(structure) | frozenset(_attention_projections(model))  # pruned as heads, not channels
    return [group for group in structure.groups if not blocked.intersection(group)]


# --- internals -------------------------------------------------------------------------------


def _check_round_to(round_to: int) -> None:
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise PlanError(f"round_to {round_to!r} must be a positive integer; 1 keeps exact channel counts")


def _checked_ignored(model: nn.Module, ignored_layers: Iterable[str]) -> frozenset[str]:
    modules = dict(model.named_modules())
    ignored = frozenset(ignored_layers)
    for layer in sorted(ignored):
        if layer not in modules or not layer:
            raise PlanError(f"ignored layer {layer!r}: the model has no such module")
    return ignored


def _refuse_masked(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if hasattr(module, "weight_mask"):
            raise CompressionError(
                f"{name!r} carries an unstructured sparsity mask; prune channels before apply_sparsity, "
                "or call make_sparsity_permanent first"
            )


def _tensors_only(out: object) -> bool:
    if isinstance(out, Tensor):
        return True
    if isinstance(out, (tuple, list)):
        return all(_tensors_only(item) for item in out)
    if isinstance(out, dict):
        return all(_tensors_only(item) for item in out.values())
    return False


def _trace_graph(model: nn.Module, example_inputs: tuple[Tensor, ...]) -> tp.DependencyGraph:
    was_training = model.training
    try:
        # The trace follows autograd's graph, so it needs gradients even if a caller disabled them.
        with torch.enable_grad(), quiet_unwrapped_parameters():
            return tp.DependencyGraph().build_dependency(model, example_inputs=tuple(example_inputs))
    except Exception as exc:  # torch-pruning reports tracing failures as assorted exception types
        with torch.no_grad():
            try:
                out = model(*example_inputs)
            except Exception:
                out = None
        if out is not None and not _tensors_only(out):
            raise CompressionError(not_tensors(model, out)) from exc
        first = first_line(exc)
        raise CompressionError(
            f"torch-pruning could not trace {type(model).__name__} ({type(exc).__name__}: {first}); "
            "check that example_inputs is one valid batch of model inputs"
        ) from exc
    finally:
        model.train(was_training)  # tracing switches the model to eval mode


def _analyze(model: nn.Module, example_inputs: tuple[Tensor, ...]) -> _Structure:
    graph = _trace_graph(model, example_inputs)
    names = {module: name for name, module in model.named_modules()}
    order = {name: index for index, name in enumerate(names.values())}
    groups: list[tuple[str, ...]] = []
    for group in graph.get_all_groups(root_module_types=_CHANNEL_MIXERS):
        members = {
            names[dep.target.module]
            for dep, _ in group
            if graph.is_out_channel_pruning_fn(dep.handler)
            and isinstance(dep.target.module, COMPRESSIBLE)
            and dep.target.module in names
        }
        if members:
            groups.append(tuple(sorted(members, key=order.__getitem__)))
    groups.sort(key=lambda group: order[group[0]])
    outputs = frozenset(
        names[module]
        for module, node in graph.module2node.items()
        if isinstance(module, COMPRESSIBLE) and module in names and _reaches_output(node)
    )
    return _Structure(groups=tuple(groups), output_layers=outputs)


def _reaches_output(node) -> bool:
    """True if the node's output channels reach a graph output without passing a channel-mixing layer."""
    seen, stack = {id(node)}, list(node.outputs)
    if not stack:
        return True
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current.module, _CHANNEL_MIXERS):
            continue
        if not current.outputs:
            return True
        stack.extend(current.outputs)
    return False


def _attention_projections(model: nn.Module) -> dict[str, str]:
    """q/k/v projection path -> its self-attention module's path: their channels go only as whole heads."""
    from autocomp.compress.heads import attention_blocks

    return {projection: block.path for block in attention_blocks(model).values() for projection in block.projections}


def _output_bound(structure: _Structure) -> frozenset[str]:
    """Every layer in a group that contains an output layer."""
    return frozenset(layer for group in structure.groups if structure.output_layers.intersection(group) for layer in group)


def kept_channels(channels: int, ratio: float, *, round_to: int) -> int:
    """How many of ``channels`` output channels survive pruning by ``ratio`` (rounding rule of ``prune_channels``)."""
    target = channels * (1.0 - ratio)
    if round_to > 1 and channels > round_to:
        multiples = max(1, math.floor(target / round_to + 0.5))
        return min(channels, multiples * round_to)
    return min(channels, max(1, math.floor(target + 0.5)))


@dataclass(frozen=True)
class _Target:
    layer: str  # the group's representative handed to torch-pruning
    group: tuple[str, ...]
    ratio: float  # the plan's ratio for the group
    channels: int
    keep: int


def _group_targets(
    model: nn.Module,
    structure: _Structure,
    requested: Mapping[str, float],
    *,
    ignored: frozenset[str],
    round_to: int,
) -> list[_Target]:
    counts = channel_counts(model)
    targets: list[_Target] = []
    done: set[tuple[str, ...]] = set()
    for layer in sorted(requested, key=list(counts).index):
        group = structure.group_of(layer)
        if group in done:
            continue
        done.add(group)
        named = [member for member in group if member in requested]
        outputs = structure.output_layers.intersection(group)
        if outputs:
            first = sorted(outputs)[0]
            why = "produces the model's output" if layer == first else f"is coupled to {first!r}, which produces the model's output"
            raise PlanError(
                f"{PRUNE}{layer}: {layer!r} {why}, so its output channels cannot be pruned; "
                f"remove {PRUNE}{layer} from the plan (its input channels shrink with the layer before it)"
            )
        if layer in ignored:
            raise PlanError(f"{PRUNE}{layer}: {layer!r} is also in ignored_layers; drop one of the two")
        blocked = ignored.intersection(group)
        if blocked:
            raise PlanError(
                f"{PRUNE}{layer}: {layer!r} shares its output channels with ignored layer {sorted(blocked)[0]!r}; "
                "drop one of the two"
            )
        ratio = max(requested[member] for member in named)
        representative = next(member for member in named if requested[member] == ratio)
        if len(set(requested[member] for member in named)) > 1:
            log.info(
                "coupled layers %s have different prune ratios; pruning the group by the largest, %.3f",
                ", ".join(named),
                ratio,
            )
        channels = counts[representative]
        keep = kept_channels(channels, ratio, round_to=round_to)
        if keep >= channels:
            log.info("%s: ratio %.3f keeps all %d channels after rounding to %d", representative, ratio, channels, round_to)
            continue
        targets.append(_Target(representative, group, ratio, channels, keep))
    return targets


def _apply(
    model: nn.Module,
    targets: list[_Target],
    example_inputs: tuple[Tensor, ...],
    *,
    structure: _Structure,
    ignored: frozenset[str],
) -> None:
    """Prune ``model`` in place to the targets' exact channel counts."""
    if not targets:
        return
    modules = dict(model.named_modules())
    was_training = model.training
    with torch.no_grad():
        reference = _output_shapes(model, example_inputs)
    # torch-pruning keeps int(channels * (1 - r)) channels; half a channel of slack makes
    # that exactly `keep` despite float error. Its own round_to rounds *down* and can
    # remove every channel of a narrow layer, so the rounding is done here instead.
    ratio_dict = {modules[t.layer]: 1.0 - (t.keep + 0.5) / t.channels for t in targets}
    frozen = [modules[layer] for layer in sorted(structure.output_layers | ignored)]
    layers = ", ".join(t.layer for t in targets)
    try:
        with torch.enable_grad(), quiet_unwrapped_parameters():
            pruner = tp.pruner.MetaPruner(
                model,
                tuple(example_inputs),
                importance=tp.importance.GroupMagnitudeImportance(p=2),
                pruning_ratio=0.0,  # layers outside the plan keep every channel
                pruning_ratio_dict=ratio_dict,
                ignored_layers=frozen,
                round_to=None,
            )
            pruner.step()
    except Exception as exc:
        raise CompressionError(
            f"torch-pruning failed on {layers} ({type(exc).__name__}: {exc}); "
            "leave these layers out of the plan or pass them as ignored_layers"
        ) from exc
    finally:
        model.train(was_training)
    counts = channel_counts(model)
    for t in targets:
        if counts[t.layer] != t.keep:
            raise CompressionError(
                f"pruning {t.layer!r} left {counts[t.layer]} of {t.channels} channels instead of {t.keep}; "
                "torch-pruning grouped it unexpectedly, leave it out of the plan"
            )
        log.info("pruned %s: %d -> %d channels (ratio %.3f, group of %d)", t.layer, t.channels, t.keep, t.ratio, len(t.group))
    try:
        with torch.no_grad():
            after = _output_shapes(model, example_inputs)
    except Exception as exc:
        raise CompressionError(
            f"the model no longer runs after pruning {layers} ({type(exc).__name__}: {exc}); leave these layers out of the plan"
        ) from exc
    if after != reference:
        raise CompressionError(
            f"pruning {layers} changed the model's output shapes {reference} -> {after}; leave these layers out of the plan"
        )


def _output_shapes(model: nn.Module, example_inputs: tuple[Tensor, ...]) -> list[tuple[int, ...]]:
    was_training = model.training
    model.eval()  # a forward in training mode would move BatchNorm running statistics
    try:
        out = model(*example_inputs)
    finally:
        model.train(was_training)
    outputs = out if isinstance(out, (tuple, list)) else [out]
    return [tuple(o.shape) for o in outputs if isinstance(o, Tensor)]
