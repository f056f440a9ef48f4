"""``cluster/<layer>``: weight sharing. The layer's weights take only 2^b shared values (b in 2..8; 32 = not shared).

Deep Compression's recipe (Han et al., 2016): per layer, 1-D k-means of the weights with centroids
spaced linearly over their range (scikit-learn's ``KMeans``, fitted on at most ``FIT_SAMPLES``
weights and then assigning every weight to its nearest centroid); during the fine-tune the weight is
``centroids[index]`` (a ``torch.nn.utils.parametrize`` parametrization), so the gradient of each
shared value is the sum over the weights that share it and the sharing survives training; after the
fine-tune it is folded into a plain weight.

It changes size, not speed: the exported file still stores every weight as a float and every
runtime we target computes them as before; a file of shared values deflates well, and the search's
size objective is the deflated file (``runtime.deflated_bytes``), so the gain shows there.
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
from autocomp.compress.sparsity import clone_model  # a deep copy that also works while masks are attached
from autocomp.errors import PlanError
from autocomp.knobs.base import LAYERS, LayerFacts, Scope, TorchWork, ValueKind
from autocomp.knobs.rules import ChoiceRules, LayerRule, assign
from autocomp.targets import check_layers, compressible_layers

NOT_SHARED = 32
SHARED_BITS = (2, 3, 4, 5, 6, 7, 8)
FIT_SAMPLES = 20_000
"""Weights k-means is fitted on per layer (a seeded sample of a larger layer; every weight is then assigned)."""


def _check(name: str, bits: Any) -> int:
    if isinstance(bits, bool) or bits not in (*SHARED_BITS, NOT_SHARED):
        raise PlanError(f"{name}: {bits!r} is not a number of bits for shared weights; use one of {', '.join(map(str, SHARED_BITS))} or 32 (not shared)")
    return int(bits)


def _shared(values: Mapping[str, Any]) -> str:
    layers = sorted(int(b) for b in values.values() if b != NOT_SHARED)
    return " ".join(f"{2**b} values×{layers.count(b)}" for b in sorted(set(layers), reverse=True))


SHARED = ValueKind(NOT_SHARED, _check, _shared)


class _Shared(nn.Module):
    """A weight as ``centroids[index]``: the parametrization's original tensor is the centroid vector."""

    def __init__(self, index: Tensor, shape: torch.Size) -> None:
        super().__init__()
        self.register_buffer("index", index)
        self.shape = tuple(shape)

    def forward(self, centroids: Tensor) -> Tensor:
        return centroids[self.index].reshape(self.shape)

    def right_inverse(self, weight: Tensor) -> Tensor:
        # called once, at registration: the shared values are the mean weight of each cluster, summed in float64
        # so that a cluster of equal weights (an already shared layer, fine-tuned further) keeps its value exactly
        flat = weight.detach().reshape(-1).double()
        sums = torch.zeros(int(self.index.max()) + 1, dtype=flat.dtype).index_add_(0, self.index, flat)
        counts = torch.bincount(self.index, minlength=sums.numel()).clamp(min=1)
        return (sums / counts).to(weight.dtype)


def cluster_indices(weight: Tensor, bits: int, *, seed: int = 0) -> Tensor:
    """Each weight's cluster among ``2**bits`` (k-means, linear initialisation), as a flat long tensor."""
    from sklearn.cluster import KMeans

    values, inverse = torch.unique(weight.detach().reshape(-1), return_inverse=True)
    if len(values) <= 2**bits:  # already shared (a trained model fine-tuned further): each value is its cluster
        return inverse.long()
    flat = weight.detach().reshape(-1).double().numpy()
    clusters = 2**bits
    fit = flat
    if len(flat) > FIT_SAMPLES:
        fit = np.random.default_rng(seed).choice(flat, size=FIT_SAMPLES, replace=False)
    init = np.linspace(flat.min(), flat.max(), clusters).reshape(-1, 1)
    kmeans = KMeans(n_clusters=clusters, init=init, n_init=1, max_iter=50, random_state=seed).fit(fit.reshape(-1, 1))
    return torch.as_tensor(kmeans.predict(flat.reshape(-1, 1)), dtype=torch.long)


def share_weights(model: nn.Module, bits: Mapping[str, int]) -> nn.Module:
    """A copy of ``model`` in which each named layer's weight is tied to ``2**bits`` shared values.

    The sharing stays through fine-tuning (the shared values are what trains); ``fold_shared``
    turns the copy back into plain weights. The input model is never modified.
    """
    bits = {layer: _check(f"cluster/{layer}", b) for layer, b in bits.items() if b != NOT_SHARED}
    check_layers("cluster/", bits, model)
    shared = clone_model(model)
    modules = dict(shared.named_modules())
    for layer, b in bits.items():
        module = modules[layer]
        if parametrize.is_parametrized(module, "weight") or hasattr(module, "weight_orig"):
            raise PlanError(f"cluster/{layer}: the layer's weight is already masked or shared (sparsity on the same layer?); give it one of the two")
        parametrize.register_parametrization(module, "weight", _Shared(cluster_indices(module.weight, b), module.weight.shape))
    return shared


def fold_shared(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every shared weight folded into a plain parameter (its 2^b values kept)."""
    folded = clone_model(model)
    for module in folded.modules():
        if tied(module, "weight", _Shared):
            fold(module, "weight")  # not remove_parametrizations: see compress.parametrized
    return folded


class Cluster(ChoiceRules):
    name = "cluster"
    prefix = "cluster/"
    stage = "torch"
    holds = True
    value = SHARED
    targets = LAYERS
    allowed = (*SHARED_BITS, NOT_SHARED)
    allowed_text = f"bits from {', '.join(map(str, SHARED_BITS))} or 32 (not shared)"

    def distributions(self, spec: tuple[LayerRule, ...], scope: Scope) -> dict[str, od.BaseDistribution]:
        return assign(self.prefix, spec, list(scope.layers), space=scope.space_name, what="compressible layer", label="layers")

    def apply(self, values: Mapping[str, Any], work: TorchWork) -> TorchWork:
        present = dict(work.model.named_modules())
        bits = {layer: b for layer, b in values.items() if b != NOT_SHARED and layer in present}
        if not bits:
            return work
        return replace(work, model=share_weights(work.model, bits), changed=True, finish=(*work.finish, fold_shared))

    def columns(self, values: Mapping[str, Any], facts: LayerFacts) -> dict[str, dict[str, Any]]:
        shared = {layer: b for layer, b in values.items() if b != NOT_SHARED}
        return {layer: {"shared_values": 2 ** shared[layer] if layer in shared else None} for layer in compressible_layers(facts.teacher)}
