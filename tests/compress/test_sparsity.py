"""Unstructured magnitude sparsity: exact zero counts, masks that survive fine-tuning, clean permanent weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autocomp.compress.distill import DistillConfig, distill
from autocomp.compress.sparsity import apply_sparsity, make_sparsity_permanent, sparsity_of
from autocomp.errors import PlanError

RATIOS = {"block1_conv1": 0.3, "block2_conv2": 0.75, "fc": 0.5}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[name], tensor) for name, tensor in before.items())


def zeros(module: nn.Module) -> int:
    return int((module.weight == 0).sum())


def test_exact_zero_count_per_named_layer(shapes_task):
    teacher = shapes_task.build_model()
    before = snapshot(teacher)
    sparse = apply_sparsity(teacher, RATIOS)

    modules = dict(sparse.named_modules())
    for layer, ratio in RATIOS.items():
        weight = modules[layer].weight
        assert zeros(modules[layer]) == round(ratio * weight.numel()), layer
        # the zeros are the smallest-magnitude weights of that layer
        original = dict(teacher.named_modules())[layer].weight.abs()
        assert original[weight == 0].max() <= original[weight != 0].min()
    for layer in ("stem.0", "block1_conv2", "block2_conv1"):  # untouched layers: trained weights, no zeros
        assert zeros(modules[layer]) == 0 and not hasattr(modules[layer], "weight_mask")
    assert_unchanged(teacher, before)
    assert not any(hasattr(m, "weight_mask") for m in teacher.modules())


def test_make_permanent_leaves_plain_weights(shapes_task):
    sparse = apply_sparsity(shapes_task.build_model(), RATIOS)
    masked_before = snapshot(sparse)
    permanent = make_sparsity_permanent(sparse)

    keys = permanent.state_dict().keys()
    assert not [k for k in keys if k.endswith("_orig") or k.endswith("_mask")]
    assert set(keys) == set(shapes_task.build_model().state_dict().keys())
    assert all(not m._forward_pre_hooks for m in permanent.modules())
    assert sparsity_of(permanent) == pytest.approx(sparsity_of(sparse))
    x = shapes_task.x_val[:16]
    assert torch.equal(permanent(x), sparse(x))
    # the masked input model keeps its masks
    assert_unchanged(sparse, masked_before)
    assert hasattr(sparse.fc, "weight_mask")


def test_zeros_survive_distillation(shapes_task):
    teacher = shapes_task.build_model()
    sparse = apply_sparsity(teacher, RATIOS)
    tuned = distill(sparse, teacher, shapes_task, config=DistillConfig(steps=20, lr=1e-2))

    modules, tuned_modules = dict(sparse.named_modules()), dict(tuned.named_modules())
    for layer in RATIOS:
        was_zero = modules[layer].weight == 0
        weight = tuned_modules[layer].weight
        assert torch.all(weight[was_zero] == 0), layer
        assert not torch.equal(weight, modules[layer].weight), f"{layer} did not train"
    permanent = make_sparsity_permanent(tuned)
    for layer, ratio in RATIOS.items():
        module = dict(permanent.named_modules())[layer]
        assert zeros(module) >= round(ratio * module.weight.numel())


def test_zero_ratio_attaches_no_mask(shapes_task):
    sparse = apply_sparsity(shapes_task.build_model(), {"fc": 0.0})
    assert not hasattr(sparse.fc, "weight_mask")


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ({"nope": 0.5}, "has no layer 'nope'"),
        ({"fc": 1.0}, r"outside \[0, 1\)"),
        ({"stem.1": 0.5}, "is a BatchNorm2d"),
    ],
)
def test_bad_plans_are_plan_errors(shapes_task, ratios, message):
    with pytest.raises(PlanError, match=message):
        apply_sparsity(shapes_task.build_model(), ratios)
