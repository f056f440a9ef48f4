"""Search spaces: ``search_spaces/<name>.yaml`` -> validated spec -> Optuna distributions.

A space is data. It says which layers (glob patterns over module paths) get a
structured-sparsity ratio, an unstructured sparsity ratio or a bit-width, and
from which range; the student widths; the pipeline order; the fine-tuning
budget per trial; and which layers are never touched. Resolving it against a
model and a device profile gives one Optuna distribution per plan parameter,
named as ``CompressionPlan`` names them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import MappingProxyType
from pathlib import Path
from typing import Any, Mapping

import optuna.distributions as od
from torch import nn

from autocomp import knobs
from autocomp.compress.distill import DistillConfig
from autocomp.errors import ConfigError
from autocomp.knobs.rules import matches, patterns
from autocomp.paths import data_dirs
from autocomp.targets import compressible_layers
from autocomp.yamlio import check_keys, load_yaml

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_TOP_KEYS = ("schema_version", "description", "pipeline", "finetune", "exclude", "proposals")
"""The space's own keys; every other top-level key is a knob's section (``autocomp.knobs``)."""
_FINETUNE_KEYS = ("steps", "temperature", "alpha", "lr", "early_stop", "final_steps", "promote", "screen")
_PROMOTE_KEYS = ("candidates", "within")
_EARLY_STOP_KEYS = ("after_steps", "max_drop")
_SCREEN_KEYS = ("after_steps", "keep", "min_screened")


def space_files() -> dict[str, Path]:
    """Shipped spaces by name: ``AUTOCOMP_SPACE_DIR`` first, then the repo's or the install's ``search_spaces/``."""
    found: dict[str, Path] = {}
    for folder in data_dirs("search_spaces", env="AUTOCOMP_SPACE_DIR"):
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else ():
            found.setdefault(path.stem, path)
    return found


@dataclass(frozen=True)
class FinetuneSpec:
    """The per-trial fine-tuning budget: distillation settings plus our early-stopping rule."""

    distill: DistillConfig = DistillConfig(steps=60)
    early_stop_after_steps: int = 20  # evaluate once after this many steps ...
    early_stop_max_drop: float = 0.5  # ... and stop if accuracy is this far below the floor (hopeless)
    final_steps: int = 0  # the chosen plan's model fine-tunes this many more steps before it ships (final.py)
    promote_candidates: int = 2  # ... after up to this many faster trials just under the floor had theirs ...
    promote_within: float = 0.005  # ... if under it by at most this (accuracy as a fraction); see final.py
    screen_after_steps: int = 0  # multi-fidelity (fidelity.py): score each plan after this many steps (0: off) ...
    screen_keep: float = 1 / 3  # ... and finish only the best third of the screened ones ...
    screen_min: int = 4  # ... once this many have been screened


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str = ""
    pipeline: tuple[str, ...] = knobs.DEFAULT_PIPELINE  # knob names (and ``finetune``) in the order they run
    finetune: FinetuneSpec = FinetuneSpec()
    exclude: tuple[str, ...] = ()
    proposals: int = 0  # plans proposed from the sensitivity profile and queued after the anchors (allocate.py)
    knobs: Mapping[str, Any] = field(default_factory=dict)  # each searched knob's parsed section (its own type)
    path: Path | None = None

    @property
    def student(self) -> str:
        """How a narrower student starts: the teacher channel-pruned, or the task's fresh model."""
        spec = self.knobs.get("distill")
        return spec.student if spec is not None else "pruned"

    def distributions(
        self, model: nn.Module, *, supported_bits: tuple[int | str, ...], example_inputs: tuple | None = None
    ) -> dict[str, od.BaseDistribution]:
        """One distribution per plan parameter for this model, from every knob the space searches.

        ``exclude`` patterns take layers (and attention modules, block stacks) out of every knob;
        ``<first>``/``<last>`` name the model's input layer and classifier whatever their module
        names. Each knob resolves its own section (``Knob.distributions``): bit-widths the device
        cannot run (``supported_bits``) are left out, and with ``example_inputs`` structured
        pruning gets one parameter per group of layers that share output channels.
        """
        every = compressible_layers(model)
        ends = {"<first>": every[:1], "<last>": every[-1:]}
        excluded = {name for pattern in self.exclude for name in ends.get(pattern, [])}
        layers = tuple(name for name in every if name not in excluded and not matches(name, self.exclude))
        scope = knobs.Scope(
            space_name=self.name, model=model, layers=layers, excluded=frozenset(every) - set(layers),
            exclude=self.exclude, supported_bits=tuple(supported_bits), example_inputs=example_inputs,
        )
        result: dict[str, od.BaseDistribution] = {}
        for name, knob in knobs.KNOBS.items():  # registry order: the order a trial suggests them
            if name in self.knobs:
                result.update(knob.distributions(self.knobs[name], scope))
        return result


def list_spaces() -> list[str]:
    return sorted(space_files())


def load_space(name_or_path: str) -> SearchSpace:
    """Load a shipped space by name or a user's YAML file by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = space_files().get(name_or_path)
        if path is None:
            raise ConfigError(
                f"unknown search space {name_or_path!r}; known spaces: {', '.join(list_spaces())} (or pass a path to a .yaml file)"
            )
    elif not path.is_file():
        raise ConfigError(f"search space file {path} does not exist")
    return parse_space(load_yaml(path, what="search space"), name=path.stem, path=path)


def parse_space(data: Mapping[str, Any], *, name: str, path: Path | None = None) -> SearchSpace:
    where = f"search space {path or name}"
    # a key that is neither the space's own nor a knob's section is refused with both lists
    check_keys(data, allowed=(*_TOP_KEYS, *knobs.KNOBS), where=where, required=("schema_version",))
    sections = [key for key in data if key in knobs.KNOBS]
    if data["schema_version"] != SCHEMA_VERSION:
        raise ConfigError(f"{where}: schema_version {data['schema_version']!r} is not supported; use {SCHEMA_VERSION}")
    pipeline = knobs.pipeline(data.get("pipeline"), where=f"{where}: pipeline")
    searched = {key: knobs.KNOBS[key].parse(data[key], where=f"{where}: {key}") for key in sections if data[key]}
    left_out = [key for key in searched if key not in pipeline]
    if left_out:
        raise ConfigError(f"{where}: {left_out[0]!r} is searched but not in the pipeline {list(pipeline)}; add it to the pipeline")
    return SearchSpace(
        name=name,
        description=str(data.get("description", "")),
        pipeline=pipeline,
        finetune=_finetune(data.get("finetune") or {}, where=f"{where}: finetune"),
        exclude=patterns(data.get("exclude", []), where=f"{where}: exclude"),
        proposals=_number(data.get("proposals", 0), where=f"{where}: proposals", low=0, integer=True),
        knobs=MappingProxyType(searched),
        path=path,
    )


def _finetune(data: Mapping[str, Any], *, where: str) -> FinetuneSpec:
    check_keys(data, allowed=_FINETUNE_KEYS, where=where)
    early = _section(data, "early_stop", _EARLY_STOP_KEYS, where=where)
    screen = _section(data, "screen", _SCREEN_KEYS, where=where)
    promote = _section(data, "promote", _PROMOTE_KEYS, where=where)
    defaults = FinetuneSpec()
    base = defaults.distill
    spec = FinetuneSpec(
        distill=DistillConfig(
            steps=_number(data.get("steps", base.steps), where=f"{where}.steps", low=0, integer=True),
            temperature=_number(data.get("temperature", base.temperature), where=f"{where}.temperature", low=0.1),
            alpha=_number(data.get("alpha", base.alpha), where=f"{where}.alpha", low=0.0, high=1.0),
            lr=_number(data.get("lr", base.lr), where=f"{where}.lr", low=1e-8, high=1.0),
        ),
        early_stop_after_steps=_number(
            early.get("after_steps", defaults.early_stop_after_steps), where=f"{where}.early_stop.after_steps", low=0, integer=True
        ),
        early_stop_max_drop=_number(
            early.get("max_drop", defaults.early_stop_max_drop), where=f"{where}.early_stop.max_drop", low=0.0, high=1.0
        ),
        final_steps=_number(data.get("final_steps", defaults.final_steps), where=f"{where}.final_steps", low=0, integer=True),
        promote_candidates=_number(
            promote.get("candidates", defaults.promote_candidates), where=f"{where}.promote.candidates", low=0, integer=True
        ),
        promote_within=_number(promote.get("within", defaults.promote_within), where=f"{where}.promote.within", low=0.0, high=1.0),
        screen_after_steps=_number(
            screen.get("after_steps", defaults.screen_after_steps), where=f"{where}.screen.after_steps", low=0, integer=True
        ),
        screen_keep=_number(screen.get("keep", defaults.screen_keep), where=f"{where}.screen.keep", low=0.01, high=1.0),
        screen_min=_number(screen.get("min_screened", defaults.screen_min), where=f"{where}.screen.min_screened", low=0, integer=True),
    )
    if spec.screen_after_steps and spec.screen_after_steps >= spec.distill.steps:
        raise ConfigError(
            f"{where}.screen.after_steps {spec.screen_after_steps} must be below steps {spec.distill.steps} "
            "(the screen comes before the full budget); lower it or set 0 to screen nothing"
        )
    return spec


def _section(data: Mapping[str, Any], key: str, allowed: tuple[str, ...], *, where: str) -> Mapping[str, Any]:
    """A nested mapping of ``finetune`` (absent: the defaults), its keys checked."""
    section = data.get(key) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}.{key}: {section!r} must be a mapping with keys {', '.join(allowed)}")
    check_keys(section, allowed=allowed, where=f"{where}.{key}")
    return section


def _number(value: Any, *, where: str, low: float, high: float | None = None, integer: bool = False) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"{where}: {value!r} must be {'an integer' if integer else 'a number'} {bound}")
    return value
