"""Folding a ``torch.nn.utils.parametrize`` parametrization into a plain parameter, on one module only.

``parametrize.remove_parametrizations`` deletes the property from the parametrized class, and every deep
copy of a model shares that class (``copy.deepcopy`` keeps classes), so removing it from one copy breaks
the others, the input model of a compressor among them. Knobs that tie a weight during the fine-tune
(weight sharing, fake quantization) fold with this instead.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrize


def fold(module: nn.Module, name: str = "weight") -> None:
    """Replace ``module``'s parametrized ``name`` by a plain parameter holding its current value (in place)."""
    value = getattr(module, name).detach().clone()
    others = [n for n in module.parametrizations if n != name]  # type: ignore[union-attr]
    if others:  # the class swap below would drop them too
        raise ValueError(f"{type(module).__name__} has other parametrized tensors ({', '.join(others)}); fold them first")
    del module._modules["parametrizations"]
    module.__class__ = module.__class__.__bases__[0]
    setattr(module, name, nn.Parameter(value))


def tied(module: nn.Module, name: str, kind: type) -> bool:
    """True when ``module.<name>`` is parametrized by a ``kind`` (so a second knob cannot tie it again)."""
    return parametrize.is_parametrized(module, name) and any(isinstance(p, kind) for p in getattr(module.parametrizations, name))
