"""Hand-made plans: the uniform recipes a user tries first, which the per-layer search must beat.

One function makes them (``uniform_plan``: one value per technique, the same for every layer); the
search queues a few as its first trials (``anchor_plans``) and ``autocomp bench`` evaluates the
whole grid of them against the samplers (``uniform_grid``).
"""

from __future__ import annotations

from typing import Any

from autocomp import knobs
from autocomp.precision import DYNAMIC_INT8, SUPPORTED_BITS

GRID_PRUNE_RATIOS = (0.0, 0.25, 0.5, 0.75)
"""The uniform channel-pruning ratios of the bench's hand-made grid."""
LOWEST = float("-inf")
"""A value that ``uniform_plan`` reads as the lowest its distribution allows (the narrowest student)."""


def uniform_plan(distributions: dict[str, Any], **by_knob: Any) -> dict[str, Any]:
    """Every parameter of a knob at one value: ``uniform_plan(d, distill=LOWEST, prune=0.5, bits=8)``.

    A ratio goes to the nearest value its distribution allows; a choice the parameter does not offer
    falls back to the knob's neutral value (32 bits where a layer cannot take 8), or the offered one
    nearest to it; a knob not named stays neutral (no sparsity, every head and block kept, full width).
    """
    plan: dict[str, Any] = {}
    for name, dist in distributions.items():
        knob = knobs.knob_of(name)[0]
        plan[name] = _snap(dist, by_knob.get(knob.name, knob.value.neutral), neutral=knob.value.neutral)
    return plan


def _snap(dist: Any, value: Any, *, neutral: Any) -> Any:
    if not hasattr(dist, "choices"):
        return _nearest(dist, value)
    if value in dist.choices:
        return value
    numbers = [c for c in dist.choices if isinstance(c, (int, float))]
    if value == LOWEST and numbers:
        return min(numbers)
    if neutral in dist.choices or not numbers:
        return neutral if neutral in dist.choices else dist.choices[0]
    return min(numbers, key=lambda c: abs(c - neutral))  # the gentlest the parameter offers


def anchor_plans(
    distributions: dict[str, Any], *, supported_bits: tuple[int | str, ...], fast_bits: tuple[int | str, ...] = ()
) -> list[dict[str, Any]]:
    """The uniform plans queued first so the sampler starts from them.

    For a CNN, one per reduced precision the device supports: the narrowest student, no pruning or
    sparsity, every searchable layer at that precision. They put the device's strength (fp16 on a
    Nano, int8 on a Pi) on the front from the start, so a 20-trial search does not have to find it by
    chance among 3^14 bit plans.

    For a transformer (the space has ``heads/`` parameters), full width and every head kept: the
    feed-forward widths cut 25% and 50% everywhere in fp32, then each precision the device runs fast
    that keeps an encoder intact (fp16; dynamic int8 in onnxruntime), unpruned and with the 50% cut.
    Static int8 and a narrow student are left out: they are what wrecked pretrained encoders. These
    are what users try first (torch-pruning's uniform FFN pruning, onnxruntime's quantize_dynamic,
    TensorRT's fp16).

    With a split searched (``split/after``), the whole model on the server is queued too.
    """
    if any(knobs.knob_of(name)[0].name == "heads" for name in distributions):
        fast = [b for b in (16, DYNAMIC_INT8) if b in fast_bits and b in supported_bits and _all_layers_take(distributions, b)]
        recipes = [(0.25, 32), (0.5, 32), *((ratio, b) for b in fast for ratio in (0.0, 0.5))]
        plans = _distinct(uniform_plan(distributions, prune=r, bits=b) for r, b in recipes)
    else:
        plans = [
            uniform_plan(distributions, distill=LOWEST, bits=b)
            for b in (16, 8) if b in supported_bits and _all_layers_take(distributions, b)
        ]
    return plans + _offloaded(distributions)


def _offloaded(distributions: dict[str, Any]) -> list[dict[str, Any]]:
    """With a split searched, the other hand-made answer: the uncompressed model all on the server, the input sent."""
    from autocomp.split import ON_SERVER

    after = distributions.get(f"{knobs.KNOBS['split'].prefix}after")
    return [uniform_plan(distributions, split=ON_SERVER)] if after is not None and ON_SERVER in after.choices else []


def uniform_grid(distributions: dict[str, Any], *, supported_bits: tuple[int | str, ...]) -> list[dict[str, Any]]:
    """The bench's grid: full width, one pruning ratio for every layer (``GRID_PRUNE_RATIOS``) times one
    precision for the whole model, where every searchable layer can take it; the baseline left out."""
    precisions = [b for b in SUPPORTED_BITS if b in supported_bits and (b == 32 or _all_layers_take(distributions, b))]
    return _distinct(
        uniform_plan(distributions, prune=ratio, bits=bits)
        for ratio in GRID_PRUNE_RATIOS for bits in precisions if (ratio, bits) != (0.0, 32)
    )


def _all_layers_take(distributions: dict[str, Any], bits: int | str) -> bool:
    layers = [dist for name, dist in distributions.items() if knobs.knob_of(name)[0].name == "bits"]
    return bool(layers) and all(bits in dist.choices for dist in layers)


def _distinct(plans) -> list[dict[str, Any]]:
    """In order, each once: ratios moved to the space's grid can meet."""
    out: list[dict[str, Any]] = []
    for plan in plans:
        if plan not in out:
            out.append(plan)
    return out


def _nearest(dist: Any, value: float) -> float:
    """The value of a float distribution closest to ``value`` (on its step grid, within its bounds)."""
    value = min(max(value, dist.low), dist.high)
    if dist.step:
        value = dist.low + round((value - dist.low) / dist.step) * dist.step
    return float(min(max(value, dist.low), dist.high))
