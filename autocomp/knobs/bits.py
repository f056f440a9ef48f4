"""``bits/<layer>``: the layer's precision in the exported graph: 32, 16, 8 (static int8, calibrated) or
"dyn8" (int8 weights, activations quantized at run time).

An ONNX-stage knob: it rewrites the exported file with onnxruntime's quantization tools in the
device's int8 recipe (``compress.quantize``). A precision the device cannot run is not offered.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Mapping

import optuna.distributions as od

from autocomp.compress.quantize import quantize_onnx
from autocomp.errors import ConfigError
from autocomp.knobs.base import LAYERS, PRECISION, LayerFacts, OnnxWork, Scope
from autocomp.knobs.qat import RANGE
from autocomp.knobs.rules import ChoiceRules, LayerRule, assign
from autocomp.precision import SUPPORTED_BITS
from autocomp.runtime import calibration_inputs
from autocomp.targets import compressible_layers

log = logging.getLogger(__name__)


class Bits(ChoiceRules):
    name = "bits"
    prefix = "bits/"
    stage = "onnx"
    holds = False
    targets = LAYERS
    value = PRECISION
    allowed = SUPPORTED_BITS
    allowed_text = f"precisions from {', '.join(map(str, SUPPORTED_BITS))}"

    def distributions(self, spec: tuple[LayerRule, ...], scope: Scope) -> dict[str, od.BaseDistribution]:
        runnable_rules = []
        for rule in spec:
            choices = rule.distribution.choices  # type: ignore[attr-defined]
            runnable = tuple(c for c in choices if c in scope.supported_bits)
            if not runnable:
                raise ConfigError(
                    f"search space {scope.space_name!r} asks for bits {', '.join(map(str, choices))} on {list(rule.patterns)}, "
                    f"which the device cannot run (it runs {', '.join(map(str, scope.supported_bits))}); add one of those "
                    "to the bits choices"
                )
            if len(runnable) < len(choices):
                # a space serves every device: one it cannot run a precision on simply does not search it
                dropped = [c for c in choices if c not in runnable]
                log.info("search space %r: bits %s not offered (the device runs %s)", scope.space_name,
                         ", ".join(map(str, dropped)), ", ".join(map(str, scope.supported_bits)))
            runnable_rules.append(replace(rule, distribution=od.CategoricalDistribution(runnable)))
        return assign(self.prefix, tuple(runnable_rules), list(scope.layers), space=scope.space_name,
                      what="compressible layer", label="layers")

    def apply(self, values: Mapping[str, Any], work: OnnxWork) -> OnnxWork:
        present = dict(work.model.named_modules())  # a block depth pruning removed took its layers' precisions
        bits = {layer: b for layer, b in values.items() if layer in present}
        if all(b == 32 for b in bits.values()):
            return work
        out = work.out_dir / "model_bits.onnx"
        calibration = calibration_inputs(work.task, max_samples=work.calibration_samples)
        # an int8 layer fine-tuned with fake quantization (the qat knob) carries the input range it trained with
        trained = {layer: tuple(getattr(present[layer], RANGE).tolist()) for layer, b in bits.items() if b == 8 and hasattr(present[layer], RANGE)}
        quantize_onnx(work.onnx_path, out, bits, calibration=calibration, recipe=work.recipe, ranges=trained)
        return replace(work, onnx_path=out)

    def columns(self, values: Mapping[str, Any], facts: LayerFacts) -> dict[str, dict[str, Any]]:
        return {layer: {"bits": values.get(layer, 32)} for layer in compressible_layers(facts.teacher)}
