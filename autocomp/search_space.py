"""Search spaces: ``search_spaces/<name>.yaml`` -> validated spec -> Optuna distributions.

A space is data. It says which layers (glob patterns over module paths) get a
structured-sparsity ratio, an unstructured sparsity ratio or a bit-width, and
from which range; the student widths; the pipeline order; the fine-tuning
budget per trial; and which layers are never touched. Resolving it against a
model and a device profile gives one Optuna distribution per plan parameter,
named as ``CompressionPlan`` names them.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import optuna.distributions as od
from torch import nn

from autocomp.compress.distill import STUDENT_INITS, DistillConfig
from autocomp.compress.depth import block_stacks
from autocomp.compress.heads import attention_blocks
from autocomp.errors import ConfigError
from autocomp.paths import data_dirs
from autocomp.plan import BITS, DEPTH, HEADS, PRUNE, SPARSITY, SUPPORTED_BITS, WIDTH, compressible_layers
from autocomp.yamlio import check_keys, load_yaml

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PIPELINE_ORDERS = (("distill", "prune", "quantize"), ("prune", "distill", "quantize"))
_TOP_KEYS = (
    "schema_version", "description", "pipeline", "finetune", "exclude", "proposals", "distill", "prune", "heads", "depth", "sparsity", "bits",
)
_FINETUNE_KEYS = ("steps", "temperature", "alpha", "lr", "early_stop", "final_steps", "promote", "screen")
_PROMOTE_KEYS = ("candidates", "within")
_EARLY_STOP_KEYS = ("after_steps", "max_drop")
_SCREEN_KEYS = ("after_steps", "keep", "min_screened")
_RULE_KEYS = ("layers", "ratio", "choices")


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
class LayerRule:
    """One entry of ``prune``/``sparsity``/``bits``: glob patterns and the distribution they get."""

    patterns: tuple[str, ...]
    distribution: od.BaseDistribution


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str = ""
    pipeline: tuple[str, ...] = PIPELINE_ORDERS[0]
    finetune: FinetuneSpec = FinetuneSpec()
    exclude: tuple[str, ...] = ()
    proposals: int = 0  # plans proposed from the sensitivity profile and queued after the anchors (allocate.py)
    width: od.BaseDistribution | None = None
    student: str = "pruned"  # how a narrower student starts: the teacher channel-pruned, or the task's fresh model
    prune: tuple[LayerRule, ...] = ()
    heads: tuple[LayerRule, ...] = ()  # patterns over self-attention module paths; ratio of heads removed
    depth: tuple[LayerRule, ...] = ()  # patterns over stacks of attention blocks; ratio of whole blocks removed
    sparsity: tuple[LayerRule, ...] = ()
    bits: tuple[LayerRule, ...] = ()
    path: Path | None = None

    def distributions(
        self, model: nn.Module, *, supported_bits: tuple[int | str, ...], example_inputs: tuple | None = None
    ) -> dict[str, od.BaseDistribution]:
        """One distribution per plan parameter for this model's layers, checked against the device.

        Bit-width choices the device cannot run (``supported_bits``) are left out; a rule left
        with none is an error.

        The first matching rule wins for a layer; excluded layers never get a parameter.
        With ``example_inputs``, structured pruning gets one parameter per group of
        layers that share output channels (a residual stream is one decision, named
        after its first layer), and groups that contain an excluded layer or feed the
        model's outputs get none: independent ratios on coupled layers would only be
        collapsed to their largest by the pruner.
        """
        every = compressible_layers(model)
        # <first>/<last> name the input layer and the classifier of any model, whatever its module names
        ends = {"<first>": every[:1], "<last>": every[-1:]}
        excluded = {name for pattern in self.exclude for name in ends.get(pattern, [])}
        layers = [name for name in every if name not in excluded and not _matches(name, self.exclude)]
        result: dict[str, od.BaseDistribution] = {}
        if self.width is not None:
            result[WIDTH] = self.width
        prunable = layers if example_inputs is None else _group_leaders(model, example_inputs, layers, excluded=set(every) - set(layers))
        attention = [path for path in attention_blocks(model) if not _matches(path, self.exclude)] if self.heads else []
        stacks = [path for path in block_stacks(model) if not _matches(path, self.exclude)] if self.depth else []
        if self.depth and not stacks:
            log.info("search space %r: the model has no stack of attention blocks; depth not searched", self.name)
        depth_rules = self.depth if stacks else ()
        for prefix, rules in ((PRUNE, self.prune), (HEADS, self.heads), (DEPTH, depth_rules), (SPARSITY, self.sparsity), (BITS, self.bits)):
            candidates = {PRUNE: prunable, HEADS: attention, DEPTH: stacks}.get(prefix, layers)
            for rule in rules:
                matched = [layer for layer in candidates if _matches(layer, rule.patterns) and prefix + layer not in result]
                if not matched:
                    what, label, listing = {
                        HEADS: ("self-attention module", "attention modules", attention),
                        DEPTH: ("stack of attention blocks", "stacks", stacks),
                    }.get(prefix, ("compressible layer", "layers", layers))
                    raise ConfigError(
                        f"search space {self.name!r}: {prefix.rstrip('/')} patterns {list(rule.patterns)} match no "
                        f"{what} of the model (after exclude); {label}: {', '.join(listing[:8]) or 'none'}"
                        + (", ..." if len(listing) > 8 else "")
                    )
                for layer in matched:
                    result[prefix + layer] = rule.distribution
        narrowed = {}
        for rule in self.bits:
            choices = rule.distribution.choices  # type: ignore[attr-defined]
            runnable = tuple(c for c in choices if c in supported_bits)
            if not runnable:
                raise ConfigError(
                    f"search space {self.name!r} asks for bits {', '.join(map(str, choices))} on {list(rule.patterns)}, "
                    f"which the device cannot run (it runs {', '.join(map(str, supported_bits))}); add one of those "
                    "to the bits choices"
                )
            if len(runnable) < len(choices):
                # a space serves every device: one it cannot run a precision on simply does not search it
                dropped = [c for c in choices if c not in runnable]
                log.info("search space %r: bits %s not offered (the device runs %s)", self.name,
                         ", ".join(map(str, dropped)), ", ".join(map(str, supported_bits)))
            narrowed[id(rule.distribution)] = od.CategoricalDistribution(runnable)
        for name, dist in result.items():
            if name.startswith(BITS) and id(dist) in narrowed:
                result[name] = narrowed[id(dist)]
        return result


def _group_leaders(model: nn.Module, example_inputs: tuple, layers: list[str], *, excluded: set[str]) -> list[str]:
    """The first layer of each prunable coupled group that touches no excluded layer."""
    from autocomp.compress.prune import coupled_groups

    allowed = set(layers)
    return [group[0] for group in coupled_groups(model, tuple(example_inputs)) if set(group) <= allowed]


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


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
    check_keys(data, allowed=_TOP_KEYS, where=where, required=("schema_version",))
    if data["schema_version"] != SCHEMA_VERSION:
        raise ConfigError(f"{where}: schema_version {data['schema_version']!r} is not supported; use {SCHEMA_VERSION}")
    pipeline = tuple(data.get("pipeline", PIPELINE_ORDERS[0]))
    if pipeline not in PIPELINE_ORDERS:
        allowed = " or ".join("[" + ", ".join(order) + "]" for order in PIPELINE_ORDERS)
        raise ConfigError(f"{where}: pipeline {list(pipeline)} is not supported; use {allowed}")
    return SearchSpace(
        name=name,
        description=str(data.get("description", "")),
        pipeline=pipeline,
        finetune=_finetune(data.get("finetune") or {}, where=f"{where}: finetune"),
        exclude=_patterns(data.get("exclude", []), where=f"{where}: exclude"),
        proposals=_number(data.get("proposals", 0), where=f"{where}: proposals", low=0, integer=True),
        width=_width(data["distill"], where=f"{where}: distill") if data.get("distill") else None,
        student=_student(data.get("distill") or {}, where=f"{where}: distill.student"),
        prune=_rules(data.get("prune") or [], kind="ratio", where=f"{where}: prune"),
        heads=_rules(data.get("heads") or [], kind="ratio", where=f"{where}: heads"),
        depth=_rules(data.get("depth") or [], kind="ratio", where=f"{where}: depth"),
        sparsity=_rules(data.get("sparsity") or [], kind="ratio", where=f"{where}: sparsity"),
        bits=_rules(data.get("bits") or [], kind="choices", where=f"{where}: bits"),
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


def _patterns(value: Any, *, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(f"{where}: expected a list of glob patterns over module paths, e.g. ['layer*.conv1'], got {value!r}")
    return tuple(value)


def _rules(value: Any, *, kind: str, where: str) -> tuple[LayerRule, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of rules like '- layers: [...]', got {type(value).__name__}")
    rules = []
    for index, item in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{at}: expected a mapping with 'layers' and '{kind}'")
        check_keys(item, allowed=("layers", kind), where=at, required=("layers", kind))
        patterns = _patterns(item["layers"], where=f"{at}.layers")
        if kind == "ratio":
            distribution = distribution_from_spec(item["ratio"], where=f"{at}.ratio")
            _check_ratio_range(distribution, where=f"{at}.ratio")
        else:
            choices = item["choices"]
            if not isinstance(choices, list) or not choices or any(c not in SUPPORTED_BITS for c in choices):
                raise ConfigError(
                    f"{at}.choices: {choices!r} must be a non-empty list of precisions from {', '.join(map(str, SUPPORTED_BITS))}"
                )
            distribution = od.CategoricalDistribution(choices)
        rules.append(LayerRule(patterns, distribution))
    return tuple(rules)


def _width(value: Any, *, where: str) -> od.BaseDistribution:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected 'width: {{type: categorical, choices: [0.5, 0.75, 1.0]}}'")
    check_keys(value, allowed=("width", "student"), where=where, required=("width",))
    distribution = distribution_from_spec(value["width"], where=f"{where}.width")
    values = _extremes(distribution)
    if values is not None and not (0.0 < values[0] and values[1] <= 1.0):
        raise ConfigError(f"{where}.width: widths must lie in (0, 1], got {values[0]}..{values[1]}")
    return distribution


def _student(value: Mapping[str, Any], *, where: str) -> str:
    init = value.get("student", "pruned")
    if init not in STUDENT_INITS:
        raise ConfigError(f"{where}: {init!r} is not known; use pruned (start from the teacher) or fresh (the task's width factory)")
    return init


def _extremes(distribution: od.BaseDistribution) -> tuple[float, float] | None:
    if isinstance(distribution, (od.FloatDistribution, od.IntDistribution)):
        return float(distribution.low), float(distribution.high)
    choices = [c for c in distribution.choices if isinstance(c, (int, float))]  # type: ignore[attr-defined]
    return (min(choices), max(choices)) if choices else None


def _check_ratio_range(distribution: od.BaseDistribution, *, where: str) -> None:
    values = _extremes(distribution)
    if values is None or values[0] < 0.0 or values[1] >= 1.0:
        raise ConfigError(f"{where}: ratios must lie in [0, 1), got {values}")


def distribution_from_spec(spec: Any, *, where: str) -> od.BaseDistribution:
    """Optuna's short form: ``{type: float, low, high, step}``, ``{type: int, ...}``, ``{type: categorical, choices}``."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"{where}: expected a distribution like {{type: float, low: 0.0, high: 0.5, step: 0.125}}, got {spec!r}")
    kind = spec["type"]
    try:
        if kind == "float":
            check_keys(spec, allowed=("type", "low", "high", "step", "log"), where=where, required=("low", "high"))
            return od.FloatDistribution(float(spec["low"]), float(spec["high"]), step=spec.get("step"), log=bool(spec.get("log", False)))
        if kind == "int":
            check_keys(spec, allowed=("type", "low", "high", "step", "log"), where=where, required=("low", "high"))
            return od.IntDistribution(int(spec["low"]), int(spec["high"]), step=int(spec.get("step", 1)), log=bool(spec.get("log", False)))
        if kind == "categorical":
            check_keys(spec, allowed=("type", "choices"), where=where, required=("choices",))
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise ConfigError(f"{where}: choices must be a non-empty list")
            return od.CategoricalDistribution(spec["choices"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: invalid {kind} distribution {spec!r}: {exc}") from exc
    raise ConfigError(f"{where}: unknown distribution type {kind!r}; use float, int or categorical")
