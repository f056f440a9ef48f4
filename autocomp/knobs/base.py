"""The Knob interface: what one compression technique tells the rest of autocomp.

A knob is one technique (student width, channel pruning, attention heads, whole blocks,
unstructured sparsity, per-layer precision, ...), in one module of ``autocomp.knobs``. It has
six attributes (``name``, ``prefix``, ``stage``, ``holds``, ``value``, ``targets``) and four
methods, called in this order:

1. ``parse(section, where=...)``, once per search space file: the YAML under the knob's ``name``
   (``prune:``, ``bits:``, ...) becomes a validated spec; a bad entry raises ``ConfigError``
   naming ``where`` and the fix. The spec is opaque to everyone but the knob.
2. ``distributions(spec, scope)``, once per space, model and device: the Optuna distributions
   the knob adds, each named ``prefix + target`` (``prune/layer1.conv1``). Studies store these
   names, so a knob never renames them: old studies resume.
3. ``apply(values, work)``, once per trial, with the plan's ``{target: value}`` of this knob (and
   once more with no fine-tuning to rebuild a trial's structure for export). Knobs run in the
   space's ``pipeline:`` order: ``stage == "torch"`` knobs take and return a ``TorchWork`` (the
   model so far) before the fine-tune, ``stage == "onnx"`` knobs a ``OnnxWork`` (the exported
   file) after it. ``apply`` returns new work (``dataclasses.replace``) and never changes its
   input's model or file. It is called only when some value differs from ``value.neutral``.
4. ``columns(values, facts)``, once per finished trial: the cells this knob adds to the
   report's per-layer table, ``{layer: {column: value}}``, every layer of the teacher with the
   same columns (``None`` where the knob has nothing to say), so every stored row has every key.

``holds`` says whether what a torch-stage ``apply`` does is a constraint the fine-tune trains
under and a ``TorchWork.finish`` step takes off afterwards (sparsity's masks, shared values, fake
quantization), rather than a change of the structure made once (pruning, narrowing). A further
fine-tune of a trained model (``pipeline.finetune_further``: the final fine-tune) applies the
holding knobs again before it trains, so the model it returns keeps the trial's zeros, shared
values and trained int8 ranges; on its own finished output such a knob changes nothing.

``value`` (a ``ValueKind``) checks one value, knows the neutral one (the value that changes
nothing: ratio 0, width 1, 32 bits) and says a trial's values in a few words for the trial tables
(``knobs.summaries``), and ``targets`` (a ``TargetKind``) checks that a model has
what the parameters name; ``CompressionPlan`` uses both, so a plan cannot hold a value or name a
layer its knob would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Protocol

import optuna.distributions as od
from torch import Tensor, nn

from autocomp.errors import PlanError
from autocomp.precision import precision_mix
from autocomp.targets import check_bits, check_layers, check_ratio, check_width

Stage = Literal["torch", "onnx"]


@dataclass(frozen=True)
class ValueKind:
    """The values of one knob: ``check(param_name, value)`` returns it normalised or raises PlanError;
    ``summary(values)`` says a trial's ``{target: value}`` of the knob in a few words, for the trial tables
    of the report and the CLI ("" when there is nothing to say)."""

    neutral: Any
    check: Callable[[str, Any], Any]
    summary: Callable[[Mapping[str, Any]], str] = lambda values: ""


def _ratios(values: Mapping[str, Any]) -> str:
    changed = [float(v) for v in values.values() if v]
    return f"{sum(changed) / len(changed):.2f} mean in {len(changed)} of {len(values)}" if changed else ""


def _width(values: Mapping[str, Any]) -> str:
    return " ".join(f"width {float(v):g}" for v in values.values() if float(v) != 1.0)


RATIO = ValueKind(0.0, check_ratio, _ratios)
WIDTH = ValueKind(1.0, check_width, _width)
PRECISION = ValueKind(32, check_bits, lambda values: precision_mix(values.values()))


@dataclass(frozen=True)
class TargetKind:
    """What a knob's parameters name: ``check(prefix, targets, model)`` raises PlanError for one the model lacks."""

    check: Callable[[str, Any, nn.Module], None]


def _whole_model(prefix: str, targets: Any, model: nn.Module) -> None:
    for target in targets:
        if target != "width":
            raise PlanError(f"{prefix}{target}: unknown; the one parameter is {prefix}width")


LAYERS = TargetKind(check_layers)
WHOLE_MODEL = TargetKind(_whole_model)


@dataclass(frozen=True)
class Scope:
    """What a knob resolves its space section against: one model on one device."""

    space_name: str  # for messages
    model: nn.Module
    layers: tuple[str, ...]  # compressible layers left after the space's ``exclude``
    excluded: frozenset[str]  # the compressible layers ``exclude`` took out
    exclude: tuple[str, ...]  # the ``exclude`` patterns themselves (for module paths that are not layers)
    supported_bits: tuple[int | str, ...]  # precisions the device runs
    example_inputs: tuple[Tensor, ...] | None = None  # None: no tracing (a coupled group is not one decision)


@dataclass(frozen=True)
class TorchWork:
    """A plan's PyTorch stage in progress. ``model`` is the teacher until a knob returns another one."""

    task: Any
    teacher: nn.Module
    model: nn.Module
    example_inputs: tuple[Tensor, ...]
    round_to: int  # channel counts are rounded to multiples of this (the device's preference)
    student: str = "pruned"  # how a narrower student starts (``distill.student`` of the space)
    plan: Any = None  # the whole CompressionPlan: a knob may act on what another decides (qat on the int8 layers)
    recipe: Any = None  # the device's int8 recipe (``profiles.Int8Recipe``), None: the default one
    changed: bool = False  # a knob before this one already changed the model
    finish: tuple[Callable[[nn.Module], nn.Module], ...] = field(default=())
    """Run on the model after its last fine-tune, in order (sparsity folds its masks in here)."""


@dataclass(frozen=True)
class OnnxWork:
    """A plan's ONNX stage in progress: ``onnx_path`` is the file so far; a knob writes a new one in ``out_dir``."""

    task: Any
    model: nn.Module  # the fine-tuned PyTorch model the file was exported from
    onnx_path: Path
    out_dir: Path
    recipe: Any  # the device's int8 recipe (``profiles.Int8Recipe``)
    calibration_samples: int = 256
    cut: bool = False  # the file marks a cut between the device and a server (``split.mark_cut``): the device stores a part


@dataclass(frozen=True)
class LayerFacts:
    """What the report's per-layer table knows of a trial before the knobs add their columns."""

    teacher: nn.Module
    channels: Mapping[str, int]  # output channels per layer in the compressed model (a removed layer is absent)
    baseline_channels: Mapping[str, int]


class Knob(Protocol):
    name: str  # the space section and the pipeline entry: "prune"
    prefix: str  # the stored parameter prefix: "prune/"
    stage: Stage
    holds: bool  # a constraint kept while training, applied again for a further fine-tune (see above)
    value: ValueKind
    targets: TargetKind

    def parse(self, section: Any, *, where: str) -> Any: ...

    def distributions(self, spec: Any, scope: Scope) -> dict[str, od.BaseDistribution]: ...

    def apply(self, values: Mapping[str, Any], work: Any) -> Any: ...

    def columns(self, values: Mapping[str, Any], facts: LayerFacts) -> dict[str, dict[str, Any]]: ...
