"""Reading a knob's space section: distributions in Optuna's short form and per-layer rules.

A per-layer section is a list of rules, ``- layers: [glob, ...]`` with a ``ratio`` distribution
or a list of ``choices``; the first rule that matches a target wins, and a rule that matches
nothing is an error (a typo in a pattern must not silently search nothing).
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import optuna.distributions as od

from autocomp.errors import ConfigError
from autocomp.knobs.base import RATIO, TargetKind
from autocomp.targets import check_known
from autocomp.yamlio import check_keys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerRule:
    """One rule of a per-layer section: glob patterns and the distribution their targets get."""

    patterns: tuple[str, ...]
    distribution: od.BaseDistribution


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def patterns(value: Any, *, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(f"{where}: expected a list of glob patterns over module paths, e.g. ['layer*.conv1'], got {value!r}")
    return tuple(value)


def layer_rules(value: Any, *, where: str, key: str, distribution: Any) -> tuple[LayerRule, ...]:
    """A list of ``{layers, <key>}`` rules; ``distribution(raw, where=)`` turns each ``<key>`` into a distribution."""
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of rules like '- layers: [...]', got {type(value).__name__}")
    rules = []
    for index, item in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{at}: expected a mapping with 'layers' and '{key}'")
        check_keys(item, allowed=("layers", key), where=at, required=("layers", key))
        rules.append(LayerRule(patterns(item["layers"], where=f"{at}.layers"), distribution(item[key], where=f"{at}.{key}")))
    return tuple(rules)


class ChoiceRules:
    """The ``parse`` of a knob whose section is per-target choice rules (``- layers: [...]; choices: [...]``);
    a subclass names the values a choice may take (``allowed``) and how a message calls them (``allowed_text``)."""

    allowed: tuple = ()
    allowed_text: str = ""

    def parse(self, section: Any, *, where: str) -> tuple[LayerRule, ...]:
        return layer_rules(section or [], where=where, key="choices", distribution=self._choices)

    def _choices(self, value: Any, *, where: str) -> od.CategoricalDistribution:
        if not isinstance(value, list) or not value or any(isinstance(c, bool) or c not in self.allowed for c in value):
            raise ConfigError(f"{where}: {value!r} must be a non-empty list of {self.allowed_text}")
        return od.CategoricalDistribution(value)


class RatioRules:
    """What the ratio knobs share (prune, heads, depth, sparsity): a section of per-target ratio rules
    (``- layers: [...]; ratio: {...}``), ratio values, the ``<name>/`` prefix, the torch stage; by
    default a change of the structure made once (``holds`` False)."""

    stage = "torch"
    holds = False
    value = RATIO

    @property
    def prefix(self) -> str:
        return f"{self.name}/"

    def parse(self, section: Any, *, where: str) -> tuple[LayerRule, ...]:
        return layer_rules(section or [], where=where, key="ratio", distribution=ratio_distribution)


class ModuleRatioRules(RatioRules):
    """A ratio knob whose targets are the modules ``found(model)`` lists (attention modules, block stacks), ``what``
    each is and ``label`` the list's name in messages. With ``skip_absent`` a model that has none searches nothing
    (a space serves CNNs and transformers alike); without, a rule matching none is the space's error."""

    found: Callable[[Any], list[str]]
    what: str
    label: str
    skip_absent = False

    @property
    def targets(self) -> TargetKind:
        found = type(self).found
        return TargetKind(lambda prefix, paths, model: check_known(prefix, paths, found(model), what=f"a {self.what}", label=self.label))

    def distributions(self, spec: tuple[LayerRule, ...], scope: Any) -> dict[str, od.BaseDistribution]:
        if not spec:
            return {}
        paths = [path for path in type(self).found(scope.model) if not matches(path, scope.exclude)]
        if not paths and self.skip_absent:
            log.info("search space %r: the model has no %s; %s not searched", scope.space_name, self.what, self.name)
            return {}
        return assign(self.prefix, spec, paths, space=scope.space_name, what=self.what, label=self.label)


def ratio_distribution(spec: Any, *, where: str) -> od.BaseDistribution:
    """A distribution of ratios in [0, 1)."""
    distribution = distribution_from_spec(spec, where=where)
    values = extremes(distribution)
    if values is None or values[0] < 0.0 or values[1] >= 1.0:
        raise ConfigError(f"{where}: ratios must lie in [0, 1), got {values}")
    return distribution


def assign(
    prefix: str, rules: tuple[LayerRule, ...], targets: list[str], *, space: str, what: str, label: str,
    listing: list[str] | None = None,
) -> dict[str, od.BaseDistribution]:
    """``{prefix + target: distribution}``: each target gets the first rule that matches it; a rule that
    matches none is an error listing ``listing`` (default: the targets)."""
    listing = targets if listing is None else listing
    result: dict[str, od.BaseDistribution] = {}
    for rule in rules:
        matched = [target for target in targets if matches(target, rule.patterns) and prefix + target not in result]
        if not matched:
            raise ConfigError(
                f"search space {space!r}: {prefix.rstrip('/')} patterns {list(rule.patterns)} match no "
                f"{what} of the model (after exclude); {label}: {', '.join(listing[:8]) or 'none'}"
                + (", ..." if len(listing) > 8 else "")
            )
        result.update({prefix + target: rule.distribution for target in matched})
    return result


def extremes(distribution: od.BaseDistribution) -> tuple[float, float] | None:
    if isinstance(distribution, (od.FloatDistribution, od.IntDistribution)):
        return float(distribution.low), float(distribution.high)
    choices = [c for c in distribution.choices if isinstance(c, (int, float))]  # type: ignore[attr-defined]
    return (min(choices), max(choices)) if choices else None


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
