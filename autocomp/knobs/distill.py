"""``distill/width``: a student narrower than the teacher, every hidden layer scaled alike, then distilled.

The one target is ``width``; the space section is ``distill: {width: <distribution>, student: pruned|fresh}``
(``student``: how a narrower student starts, see ``compress.distill.build_student``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

import optuna.distributions as od

from autocomp.compress.distill import STUDENT_INITS, build_student
from autocomp.compress.prune import prune_to_width
from autocomp.errors import ConfigError
from autocomp.knobs.base import WHOLE_MODEL, WIDTH, LayerFacts, Scope, TorchWork
from autocomp.knobs.rules import distribution_from_spec, extremes
from autocomp.yamlio import check_keys


@dataclass(frozen=True)
class DistillSpec:
    width: od.BaseDistribution
    student: str = "pruned"


class Distill:
    name = "distill"
    prefix = "distill/"
    stage = "torch"
    holds = False
    targets = WHOLE_MODEL
    value = WIDTH

    def parse(self, section: Any, *, where: str) -> DistillSpec:
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: expected 'width: {{type: categorical, choices: [0.5, 0.75, 1.0]}}'")
        check_keys(section, allowed=("width", "student"), where=where, required=("width",))
        distribution = distribution_from_spec(section["width"], where=f"{where}.width")
        values = extremes(distribution)
        if values is not None and not (0.0 < values[0] and values[1] <= 1.0):
            raise ConfigError(f"{where}.width: widths must lie in (0, 1], got {values[0]}..{values[1]}")
        student = section.get("student", "pruned")
        if student not in STUDENT_INITS:
            raise ConfigError(
                f"{where}.student: {student!r} is not known; use pruned (start from the teacher) or fresh (the task's width factory)"
            )
        return DistillSpec(distribution, student)

    def distributions(self, spec: DistillSpec, scope: Scope) -> dict[str, od.BaseDistribution]:
        return {self.prefix + "width": spec.width}

    def apply(self, values: Mapping[str, Any], work: TorchWork) -> TorchWork:
        width = values.get("width", 1.0)
        if work.changed:  # after another knob (``pipeline: [prune, finetune, distill]``): narrow what it left
            model = prune_to_width(work.model, width, work.example_inputs, round_to=work.round_to)
        else:
            model = build_student(work.task, work.teacher, width, round_to=work.round_to, init=work.student)
        return replace(work, model=model, changed=True)

    def columns(self, values: Mapping[str, Any], facts: LayerFacts) -> dict[str, dict[str, Any]]:
        return {}  # one width for the whole model: the trial table shows it
