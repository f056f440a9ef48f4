"""The registry of compression techniques (knobs): one module each, behind ``base.Knob``.

Adding a technique is one module in this package with a class that has the ``Knob`` attributes
and methods, plus one line in ``KNOBS`` below; the search space, the pipeline, the plan, the
anchors and the report's layer table find it here. See ``base`` for the call order.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from torch.nn.utils import parametrize

from autocomp.compress.parametrized import fold
from autocomp.compress.sparsity import make_sparsity_permanent
from autocomp.errors import ConfigError, PlanError
from autocomp.knobs.base import Knob, LayerFacts, OnnxWork, Scope, TorchWork
from autocomp.knobs.bits import Bits
from autocomp.knobs.cluster import Cluster
from autocomp.knobs.depth import Depth
from autocomp.knobs.distill import Distill
from autocomp.knobs.heads import Heads
from autocomp.knobs.prune import Prune
from autocomp.knobs.qat import Qat
from autocomp.knobs.sparsity import Sparsity
from autocomp.knobs.split import Split

__all__ = ["KNOBS", "DEFAULT_PIPELINE", "FINETUNE", "Knob", "as_deployed", "LayerFacts", "OnnxWork", "Scope", "TorchWork", "get", "knob_of", "pipeline", "plan_text", "summaries"]

KNOBS: dict[str, Knob] = {knob.name: knob for knob in (Distill(), Prune(), Heads(), Depth(), Sparsity(), Bits(), Cluster(), Qat(), Split())}
"""Every knob by name, in the order a trial suggests their parameters (kept from the first release, so a
seeded search samples as it did)."""

FINETUNE = "finetune"
"""A pipeline entry that is not a knob: fine-tune here as well as after the last torch-stage knob."""

DEFAULT_PIPELINE = ("distill", "depth", "heads", "prune", "sparsity", "cluster", FINETUNE, "qat", "bits", "split")
"""Narrow the student first, then remove blocks, heads and channels, mask or share weights, fine-tune, export,
quantize, and mark where the file is cut between the device and a server. A QAT trial fine-tunes the first
half of its steps in fp32 and the second through fake quantization (from the first step, it lost 4 points on a half-width digits-mobilenet, see ``knobs.qat``); any other trial
fine-tunes once, the ``finetune`` before an idle ``qat`` having nothing after it."""

_LEGACY = {
    # the first release's two orders, in its three words
    ("distill", "prune", "quantize"): DEFAULT_PIPELINE,
    ("prune", "distill", "quantize"): ("depth", "heads", "prune", FINETUNE, "distill", "sparsity", "cluster", FINETUNE, "qat", "bits"),
}


def as_deployed(model):
    """A copy of a model in the middle of its fine-tune as the knobs will leave it after: sparsity masks and
    tied weights (shared values, fake quantization) folded into plain weights, training-only hooks gone.
    The multi-fidelity screen exports such a snapshot; the input model trains on untouched."""
    plain = make_sparsity_permanent(model)  # a copy
    for module in plain.modules():
        if parametrize.is_parametrized(module, "weight"):
            fold(module, "weight")
        for key, hook in list(module._forward_pre_hooks.items()):
            if getattr(hook, "training_only", False):
                del module._forward_pre_hooks[key]
    return plain


def summaries(params: Mapping[str, Any]) -> dict[str, str | None]:
    """A trial's stored parameters as a few words per knob (``ValueKind.summary``), every knob in ``KNOBS`` order:
    None for a knob the trial has no parameter of (its space does not search it), "" for one with nothing to say."""
    values: dict[str, dict[str, Any]] = {}
    for param, value in params.items():
        prefix, _, target = param.partition("/")
        if prefix in KNOBS:
            values.setdefault(prefix, {})[target] = value
    return {name: None if name not in values else knob.value.summary(values[name]) for name, knob in KNOBS.items()}


def plan_text(params: Mapping[str, Any]) -> str:
    """The summaries in one line, ``distill width 0.5 · prune 0.25 mean in 2 of 4 · bits int8×3``: a plan in a table cell."""
    return " · ".join(f"{name} {text}" for name, text in summaries(params).items() if text)


def get(name: str, *, where: str = "search space", error: type[Exception] = ConfigError) -> Knob:
    """The knob called ``name``; an unknown one is an ``error`` listing the known ones."""
    knob = KNOBS.get(name)
    if knob is None:
        raise error(f"{where}: {name!r} is not a compression technique autocomp knows; known: {', '.join(KNOBS)}")
    return knob


def knob_of(param: str) -> tuple[Knob, str]:
    """The knob that owns a stored parameter name and its target: ``prune/layer1.conv1`` -> (Prune, ``layer1.conv1``)."""
    prefix, slash, target = param.partition("/")
    knob = KNOBS.get(prefix)
    if not slash or knob is None or not target:
        expected = ", ".join(f"{k.prefix}<target>" for k in KNOBS.values())
        raise PlanError(f"unknown plan parameter {param!r}; expected one of {expected}")
    return knob, target


def pipeline(entries: Iterable[str] | None, *, where: str) -> tuple[str, ...]:
    """A space's ``pipeline:`` checked: known knobs, each once, torch-stage knobs before ONNX-stage ones.

    Knobs the list leaves out do not run (their section must then be absent); ``finetune`` may
    stand between torch-stage knobs, to fine-tune before the next one narrows the model further.
    The first release's ``[distill, prune, quantize]`` and ``[prune, distill, quantize]`` still read.
    """
    if entries is None:
        return DEFAULT_PIPELINE
    if not isinstance(entries, (list, tuple)) or not all(isinstance(e, str) for e in entries):
        raise ConfigError(f"{where}: expected a list of knob names, e.g. [{', '.join(DEFAULT_PIPELINE)}]")
    order = _LEGACY.get(tuple(entries), tuple(entries))
    seen: set[str] = set()
    onnx_from = None
    for index, entry in enumerate(order):
        if entry == FINETUNE:
            if onnx_from is not None:
                raise ConfigError(f"{where}: finetune after {order[onnx_from]!r} acts on the exported graph; fine-tune before the ONNX-stage knobs")
            continue
        knob = get(entry, where=where)
        if entry in seen:
            raise ConfigError(f"{where}: {entry!r} appears twice; each knob runs once")
        seen.add(entry)
        if knob.stage == "onnx":
            onnx_from = index if onnx_from is None else onnx_from
        elif onnx_from is not None:
            raise ConfigError(
                f"{where}: {entry!r} acts on the PyTorch model but comes after {order[onnx_from]!r}, which acts on the "
                "exported ONNX graph; list the PyTorch-stage knobs first"
            )
    return order
