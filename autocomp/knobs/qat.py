"""``qat/int8``: quantization-aware fine-tuning of the layers the plan puts in static int8 (``bits/<layer>: 8``).

``false`` is post-training quantization (PTQ): the fine-tune is in fp32 and onnxruntime calibrates
the int8 ranges afterwards. ``true`` fine-tunes through fake quantization of exactly what onnxruntime
will quantize, by its own rules for the device's int8 recipe:

* each int8 layer's weight, per output channel, symmetric, with the recipe's range (7 bits with
  ``reduce_range``), its scale taken from the current weight at every step;
* each int8 layer's input activation, per tensor, asymmetric (u8) or with the recipe's type, its
  range calibrated once on the calibration samples before the fine-tune and then followed by an
  exponential moving average of the training batches' ranges.

Gradients pass straight through the rounding (``torch.fake_quantize_*``). In the default pipeline
(``finetune`` before ``qat``) the student first recovers in fp32 for half the steps, then trains through
fake quantization for the other half: on digits-mobilenet at half width (60 steps, seed 0), QAT from the
first step scored 0.896 against PTQ's 0.938; fp32 then QAT scored 0.947 (``benchmarks/qat.py``). After the fine-tune the
ranges stay on each layer as a ``qat_range`` buffer, and the ``bits`` knob hands them to
onnxruntime's quantizer (``TensorQuantOverrides``), so the exported QDQ file computes what was
trained. A per-tensor weight recipe is refused: BatchNorm folding in the export would change
per-tensor weight scales, not per-channel ones. An int8 layer whose weight the plan also masks
(``sparsity``) or shares (``cluster``) keeps PTQ; the plan's other int8 layers still train with QAT.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import numpy as np
import optuna.distributions as od
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from autocomp.compress.parametrized import fold, tied
from autocomp.compress.sparsity import clone_model
from autocomp.errors import ConfigError, PlanError
from autocomp.knobs.base import LayerFacts, Scope, TargetKind, TorchWork, ValueKind
from autocomp.profiles import Int8Recipe
from autocomp.runtime import calibration_inputs

TARGET = "int8"
EMA = 0.05
"""Weight of a training batch's range in the moving average of an input's range."""
CALIBRATION_SAMPLES = 256
RANGE = "qat_range"
"""The buffer holding a layer's trained input range (rmin, rmax): kept in the state dict, read by the bits knob."""


def _check(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise PlanError(f"{name}: {value!r} is not true or false; true fine-tunes the int8 layers with fake quantization")
    return value


def _whole(prefix: str, targets: Any, model: nn.Module) -> None:
    for target in targets:
        if target != TARGET:
            raise PlanError(f"{prefix}{target}: unknown; the one parameter is {prefix}{TARGET}")


def _qrange(kind: str, *, weight: bool, reduce_range: bool) -> tuple[int, int]:
    """onnxruntime's integer range for a tensor (``quant_utils.get_qmin_qmax_for_qType``)."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType

    qtype = {"u8": TensorProto.UINT8, "s8": TensorProto.INT8}[kind]
    low, high = get_qmin_qmax_for_qType(qtype, reduce_range=reduce_range and weight, symmetric=weight)
    return int(low), int(high)


class _FakeQuantWeight(nn.Module):
    """Per-output-channel symmetric fake quantization, its scale from the weight itself (onnxruntime's rule)."""

    def __init__(self, qmin: int, qmax: int) -> None:
        super().__init__()
        self.qmin, self.qmax = qmin, qmax

    def forward(self, weight: Tensor) -> Tensor:
        absmax = weight.detach().abs().reshape(weight.shape[0], -1).amax(1)
        scale = (2 * absmax / (self.qmax - self.qmin)).clamp(min=torch.finfo(torch.float32).tiny)
        zero = torch.full_like(scale, round((self.qmin + self.qmax) / 2), dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale.float(), zero, 0, self.qmin, self.qmax)


def _fake_quant_input(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: follow the input's range while training, then fake-quantize it with that range.

    It reads everything from ``module`` (not a closure), so the copies distillation makes keep working."""
    x, *rest = args
    qrange = getattr(module, RANGE)
    if module.training:
        with torch.no_grad():
            seen = torch.stack([x.detach().min(), x.detach().max()]).to(qrange.dtype)
            qrange.mul_(1 - EMA).add_(EMA * seen)
    qmin, qmax = module.qat_qmin, module.qat_qmax
    rmin, rmax = float(min(qrange[0], 0.0)), float(max(qrange[1], 0.0))  # zero is representable (onnxruntime's rule)
    scale = max((rmax - rmin) / (qmax - qmin), float(np.finfo(np.float32).tiny))
    zero = int(round(qmin - rmin / scale))
    return (torch.fake_quantize_per_tensor_affine(x, scale, zero, qmin, qmax), *rest)


_fake_quant_input.training_only = True  # type: ignore[attr-defined]  # knobs.as_deployed drops it


def calibrated_ranges(model: nn.Module, layers: list[str], samples: list[tuple]) -> dict[str, tuple[float, float]]:
    """Each layer's input (min, max) over ``samples`` in eval mode: the range onnxruntime's MinMax calibration finds."""
    modules = dict(model.named_modules())
    seen: dict[str, list[float]] = {}

    def record(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            low, high = float(args[0].min()), float(args[0].max())
            old = seen.get(name, [low, high])
            seen[name] = [min(old[0], low), max(old[1], high)]
        return hook

    handles = [modules[layer].register_forward_pre_hook(record(layer)) for layer in layers]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for sample in samples:
                model(*(torch.as_tensor(x) for x in sample))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return {layer: (low, high) for layer, (low, high) in seen.items()}


def _tied(module: nn.Module) -> bool:
    """Whether a layer's weight is masked (sparsity) or shared (cluster) already."""
    return parametrize.is_parametrized(module, "weight") or hasattr(module, "weight_orig")


def fake_quantize(model: nn.Module, layers: list[str], ranges: Mapping[str, tuple[float, float]], recipe: Any) -> nn.Module:
    """A copy of ``model`` whose ``layers`` compute with fake-quantized weights and inputs (see the module doc)."""
    if not recipe.per_channel:
        raise PlanError(
            "qat/int8: the device's int8 recipe quantizes weights per tensor; BatchNorm folding in the export would "
            "change those scales after training: fine-tune with qat/int8 false (PTQ) on it"
        )
    wmin, wmax = _qrange(recipe.weight_type, weight=True, reduce_range=recipe.reduce_range)
    amin, amax = _qrange(recipe.activation_type, weight=False, reduce_range=recipe.reduce_range)
    tuned = clone_model(model)
    modules = dict(tuned.named_modules())
    for layer in layers:
        module = modules[layer]
        if _tied(module):
            raise PlanError(f"qat/int8: {layer}'s weight is already masked or shared (sparsity or cluster on it); quantize it with PTQ")
        if layer not in ranges:
            raise PlanError(f"qat/int8: {layer} saw no input on the calibration samples; quantize it with PTQ")
        module.register_buffer(RANGE, torch.tensor(ranges[layer], dtype=torch.float32))
        module.qat_qmin, module.qat_qmax = amin, amax
        module.register_forward_pre_hook(_fake_quant_input)
        parametrize.register_parametrization(module, "weight", _FakeQuantWeight(wmin, wmax))
    return tuned


def unfake(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with plain weights and no fake quantization; each layer's trained range stays (``RANGE``)."""
    plain = clone_model(model)
    for module in plain.modules():
        if tied(module, "weight", _FakeQuantWeight):
            fold(module, "weight")
        for key, hook in list(module._forward_pre_hooks.items()):
            if hook is _fake_quant_input:
                del module._forward_pre_hooks[key]
    return plain


class Qat:
    name = "qat"
    prefix = "qat/"
    stage = "torch"
    holds = True
    value = ValueKind(False, _check, lambda values: "on" if values.get(TARGET) else "")
    targets = TargetKind(_whole)

    def parse(self, section: Any, *, where: str) -> od.CategoricalDistribution:
        if not isinstance(section, list) or not section or any(not isinstance(v, bool) for v in section):
            raise ConfigError(f"{where}: expected the choices to search, e.g. 'qat: [false, true]' (false: PTQ, true: QAT)")
        return od.CategoricalDistribution(section)

    def distributions(self, spec: od.CategoricalDistribution, scope: Scope) -> dict[str, od.BaseDistribution]:
        return {self.prefix + TARGET: spec} if 8 in scope.supported_bits else {}  # no static int8 on it: nothing to train for

    def apply(self, values: Mapping[str, Any], work: TorchWork) -> TorchWork:
        present = dict(work.model.named_modules())
        layers = [layer for layer, bits in (work.plan["bits"] if work.plan is not None else {}).items() if bits == 8 and layer in present]
        # a weight already masked (sparsity) or shared (cluster) cannot also be fake-quantized by one parametrization:
        # such layers keep post-training quantization, the plan's other int8 layers train through fake quantization
        layers = [layer for layer in layers if not _tied(present[layer])]
        if not values.get(TARGET) or not layers:
            return work
        trained = {layer: tuple(getattr(present[layer], RANGE).tolist()) for layer in layers if hasattr(present[layer], RANGE)}
        if len(trained) == len(layers):  # a trained model fine-tuned further (``Knob.holds``) goes on from its ranges
            ranges = trained
        else:
            ranges = calibrated_ranges(work.model, layers, calibration_inputs(work.task, max_samples=CALIBRATION_SAMPLES))
        model = fake_quantize(work.model, layers, ranges, work.recipe or Int8Recipe())
        return replace(work, model=model, changed=True, finish=(*work.finish, unfake))

    def columns(self, values: Mapping[str, Any], facts: LayerFacts) -> dict[str, dict[str, Any]]:
        return {}  # a trial's PTQ or QAT is one choice: the trial table and the report's PTQ/QAT line show it

