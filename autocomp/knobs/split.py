"""``split/after`` and ``split/wire``: where the model is cut between the device and a server, and how the
activation travels.

``after`` is a cut of the teacher's exported graph (``autocomp.split.candidate_cuts``: a module boundary
exactly one tensor crosses), ``device`` (nothing is cut, the neutral value) or ``server`` (the input is
sent). ``wire`` is fp32, fp16 or int8 (uint8 with the range calibrated on the task's samples). The knob
acts on the exported file after ``bits``: it marks the cut (``split.mark_cut``), so the trial scores the
one file that computes what the two parts compute, and a search given a server and a link
(``--server``, ``--link``) prices it end to end (``latency.split``). ``autocomp export`` writes the two
parts. A cut the student no longer has (its block removed by ``depth``) fails the trial, naming the
cuts it has.

    split:
      after: all            # every cut of the model and both ends; or a list: [device, server, layer2, pool]
      wire: [fp32, int8]
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import optuna.distributions as od

from autocomp.errors import ConfigError, PlanError
from autocomp.knobs.base import LayerFacts, OnnxWork, Scope, TargetKind, ValueKind
from autocomp.split import ON_DEVICE, ON_SERVER, WIRES, candidate_cuts, mark_cut
from autocomp.yamlio import check_keys

TARGETS = ("after", "wire")
CALIBRATION_SAMPLES = 64


def _check(name: str, value: Any) -> str:
    if name.endswith("/wire"):
        if value not in WIRES:
            raise PlanError(f"{name}: {value!r} is not one of {', '.join(WIRES)}")
    elif not isinstance(value, str) or not value:
        raise PlanError(f"{name}: {value!r} is not a cut's name, {ON_DEVICE!r} or {ON_SERVER!r}")
    return value


def _targets(prefix: str, targets: Any, model: Any) -> None:
    for target in targets:
        if target not in TARGETS:
            raise PlanError(f"{prefix}{target}: unknown; the parameters are {prefix}after and {prefix}wire")


def _summary(values: Mapping[str, Any]) -> str:
    after = values.get("after", ON_DEVICE)
    if after == ON_DEVICE:
        return ""
    return "all on the server (the input sent)" if after == ON_SERVER else f"after {after}, {values.get('wire', 'fp32')} sent"


def model_cuts(model: Any, example_inputs: tuple) -> list[str]:
    """The cut names of ``model`` as the export writes it."""
    from autocomp.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="autocomp-cuts-") as work:
        return [cut.name for cut in candidate_cuts(export_onnx(model, example_inputs, Path(work) / "model.onnx"))]


class Split:
    name = "split"
    prefix = "split/"
    stage = "onnx"
    holds = False
    value = ValueKind(ON_DEVICE, _check, _summary)
    targets = TargetKind(_targets)

    def parse(self, section: Any, *, where: str) -> dict[str, Any]:
        if not isinstance(section, Mapping):
            raise ConfigError(f"{where}: expected 'after' (all, or a list of cuts) and 'wire' (a list of {', '.join(WIRES)})")
        check_keys(section, allowed=TARGETS, where=where, required=("after",))
        after, wire = section["after"], section.get("wire", ["fp32"])
        if after != "all" and (not isinstance(after, list) or not after or not all(isinstance(a, str) for a in after)):
            raise ConfigError(f"{where}.after: {after!r} is neither 'all' nor a list of cut names (see 'autocomp splits')")
        if not isinstance(wire, list) or not wire or any(w not in WIRES for w in wire):
            raise ConfigError(f"{where}.wire: {wire!r} must be a non-empty list of {', '.join(WIRES)}")
        return {"after": after, "wire": wire}

    def distributions(self, spec: Mapping[str, Any], scope: Scope) -> dict[str, od.BaseDistribution]:
        if scope.example_inputs is None:
            raise ConfigError(f"search space {scope.space_name!r}: split needs the model's example inputs to find its cuts")
        cuts = model_cuts(scope.model, scope.example_inputs)
        after = [ON_DEVICE, ON_SERVER, *cuts] if spec["after"] == "all" else list(spec["after"])
        unknown = [a for a in after if a not in (ON_DEVICE, ON_SERVER, *cuts)]
        if unknown:
            raise ConfigError(
                f"search space {scope.space_name!r}: split.after {unknown[0]!r} is not a cut of the model; "
                f"cuts: {', '.join(cuts) or 'none'} (and the ends {ON_DEVICE}, {ON_SERVER})"
            )
        return {self.prefix + "after": od.CategoricalDistribution(after), self.prefix + "wire": od.CategoricalDistribution(spec["wire"])}

    def apply(self, values: Mapping[str, Any], work: OnnxWork) -> OnnxWork:
        after = values.get("after", ON_DEVICE)
        if after == ON_DEVICE:
            return work
        from autocomp.runtime import calibration_inputs

        wire = values.get("wire", "fp32")
        samples = calibration_inputs(work.task, max_samples=CALIBRATION_SAMPLES) if wire == "int8" and after != ON_SERVER else ()
        marked = mark_cut(work.onnx_path, after, work.out_dir / "model_split.onnx", wire=wire, samples=samples)
        return replace(work, onnx_path=marked, cut=True)

    def columns(self, values: Mapping[str, Any], facts: LayerFacts) -> dict[str, dict[str, Any]]:
        return {}  # one cut per plan: the trial tables' plan column says where
