"""Structured channel pruning on real models: residual, depthwise and transformer dependencies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autocomp.compress.prune import channel_counts, coupled_groups, kept_channels, prune_channels, prune_to_width
from autocomp.errors import PlanError
from autocomp.tasks.base import torch_predictor
from autocomp.tasks.models import MobileNetDigits


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, tensor in before.items():
        assert after[name].shape == tensor.shape, name
        assert torch.equal(after[name], tensor), name


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_pruning_a_residual_block_shrinks_the_whole_stream(shapes_task):
    teacher = shapes_task.build_model()
    before = snapshot(teacher)
    x = shapes_task.x_val[:8]

    pruned = prune_channels(teacher, {"block1_conv2": 0.5}, shapes_task.example_inputs())

    # block1_conv2 is added to the stem's output, so both lose the same channels
    counts = channel_counts(pruned)
    assert counts["block1_conv2"] == counts["stem.0"] == 8
    assert counts["block1_conv1"] == 16 and counts["block2_conv1"] == 32  # not in the group
    assert pruned.stem[1].num_features == pruned.block1_bn2.num_features == 8
    assert pruned.block1_conv1.in_channels == pruned.block2_conv1.in_channels == pruned.block2_short.in_channels == 8
    assert n_params(pruned) < n_params(teacher)
    assert pruned(x).shape == teacher(x).shape == (8, 4)
    assert_unchanged(teacher, before)
    assert pruned is not teacher and pruned.training == teacher.training


def test_pruning_keeps_the_most_important_channels(shapes_task):
    teacher = shapes_task.build_model()
    pruned = prune_channels(teacher, {"block1_conv1": 0.5}, shapes_task.example_inputs())
    kept = pruned.block1_conv1.weight
    norms = teacher.block1_conv1.weight.flatten(1).norm(dim=1)
    # every kept filter is an original filter (copied, not re-initialized), and they are the
    # stronger ones (group importance also weighs BatchNorm and the next conv, so not strictly top-8)
    matches = [int(torch.nonzero((teacher.block1_conv1.weight == w).flatten(1).all(1))[0]) for w in kept]
    assert len(set(matches)) == 8
    assert norms[matches].mean() > norms.mean()


def test_coupled_layers_with_different_ratios_use_the_largest(shapes_task):
    teacher = shapes_task.build_model()
    inputs = shapes_task.example_inputs()
    assert ("stem.0", "block1_conv2") in coupled_groups(teacher, inputs)

    a = prune_channels(teacher, {"stem.0": 0.5, "block1_conv2": 0.0}, inputs)
    b = prune_channels(teacher, {"block1_conv2": 0.5, "stem.0": 0.25}, inputs)
    c = prune_channels(teacher, {"block1_conv2": 0.5}, inputs)
    for model in (a, b, c):
        assert channel_counts(model)["stem.0"] == channel_counts(model)["block1_conv2"] == 8
    # the rule is deterministic: the same channels go whichever layer carried the ratio
    snap_a, snap_c = a.state_dict(), c.state_dict()
    assert all(torch.equal(snap_a[k], snap_c[k]) for k in snap_c)


def test_channel_counts_are_rounded_to_multiples():
    assert kept_channels(24, 0.5, round_to=8) == 16  # 12 -> nearest multiple, halves round up
    assert kept_channels(32, 0.3, round_to=8) == 24  # 22.4 -> 24
    assert kept_channels(32, 0.3, round_to=1) == 22
    assert kept_channels(16, 0.2, round_to=8) == 16  # rounds to no pruning rather than to 50%
    assert kept_channels(64, 0.95, round_to=8) == 8  # never below one multiple
    assert kept_channels(8, 0.5, round_to=8) == 4  # no multiple below 8 exists: whole channels


def test_round_to_is_respected(shapes_task):
    teacher = shapes_task.build_model()
    inputs = shapes_task.example_inputs()
    rounded = prune_channels(teacher, {"block2_conv1": 0.3}, inputs)
    exact = prune_channels(teacher, {"block2_conv1": 0.3}, inputs, round_to=1)
    assert channel_counts(rounded)["block2_conv1"] == 24
    assert channel_counts(exact)["block2_conv1"] == 22
    narrowed = prune_to_width(teacher, 0.6, inputs)
    assert all(count % 8 == 0 for name, count in channel_counts(narrowed).items() if name != "fc")


def test_depthwise_groups_stay_consistent():
    model = MobileNetDigits().eval()
    before = snapshot(model)
    x = torch.randn(2, 1, 32, 32)
    pruned = prune_channels(model, {"blocks.1.expand.0": 0.5, "blocks.3.depthwise.0": 0.5}, (x[:1],))

    for index, hidden in ((1, 32), (3, 48)):
        block = pruned.blocks[index]
        depthwise = block.depthwise[0]
        assert block.expand[0].out_channels == hidden
        assert depthwise.in_channels == depthwise.out_channels == depthwise.groups == hidden
        assert block.depthwise[1].num_features == hidden and block.project[0].in_channels == hidden
    assert pruned(x).shape == (2, 10)
    assert n_params(pruned) < n_params(model)
    assert_unchanged(model, before)


def test_transformer_ffn_pruned_with_two_inputs(text_task):
    teacher = text_task.build_model()
    before = snapshot(teacher)
    ids, mask = text_task.ids[450:], text_task.mask[450:]

    pruned = prune_channels(teacher, {"ffn1": 0.5}, text_task.example_inputs())

    assert pruned.ffn1.out_features == 32 and pruned.ffn2.in_features == 32
    assert pruned(ids, mask).shape == (150, 2)
    # dropping half of a trained FFN's units by magnitude barely hurts on this easy task
    assert text_task.evaluate(torch_predictor(pruned)) >= 0.8
    assert_unchanged(teacher, before)


def test_transformer_residual_stream_prunes_layernorm_and_embedding(text_task):
    teacher = text_task.build_model()
    pruned = prune_channels(teacher, {"o": 0.5}, text_task.example_inputs())
    assert pruned.o.out_features == pruned.ffn2.out_features == 16
    assert pruned.embed.embedding_dim == 16
    assert pruned.norm1.normalized_shape == pruned.norm2.normalized_shape == (16,)
    assert pruned.head.in_features == 16 and pruned.head.out_features == 2
    assert pruned(*text_task.example_inputs()).shape == (2, 2)


def test_prune_to_width_narrows_every_hidden_layer(shapes_task, text_task):
    teacher = shapes_task.build_model()
    before = snapshot(teacher)
    student = prune_to_width(teacher, 0.5, shapes_task.example_inputs())
    assert channel_counts(student) == {
        "stem.0": 8, "block1_conv1": 8, "block1_conv2": 8,
        "block2_conv1": 16, "block2_conv2": 16, "block2_short": 16, "fc": 4,
    }  # fmt: skip
    assert student(shapes_task.x_val[:3]).shape == (3, 4)
    assert_unchanged(teacher, before)

    encoder = prune_to_width(text_task.build_model(), 0.5, text_task.example_inputs())
    assert channel_counts(encoder) == {"q": 16, "k": 16, "v": 16, "o": 16, "ffn1": 32, "ffn2": 16, "head": 2}
    assert encoder(*text_task.example_inputs()).shape == (2, 2)

    same = prune_to_width(teacher, 1.0, shapes_task.example_inputs())
    assert same is not teacher and channel_counts(same) == channel_counts(teacher)


def test_zero_ratios_return_an_unchanged_copy(shapes_task):
    teacher = shapes_task.build_model()
    copy = prune_channels(teacher, {"block1_conv1": 0.0}, shapes_task.example_inputs())
    assert copy is not teacher
    assert_unchanged(copy, snapshot(teacher))


@pytest.mark.parametrize(
    ("ratios", "ignored", "message"),
    [
        ({"block9_conv": 0.5}, (), "has no layer 'block9_conv'"),
        ({"fc": 0.5}, (), "produces the model's output"),
        ({"block1_conv1": 1.0}, (), "outside [0, 1)"),
        ({"block1_conv1": -0.1}, (), "outside [0, 1)"),
        ({"block1_bn1": 0.5}, (), "is a BatchNorm2d"),
        ({"block1_conv2": 0.5}, ("stem.0",), "shares its output channels with ignored layer 'stem.0'"),
        ({"block1_conv1": 0.5}, ("nope",), "ignored layer 'nope'"),
    ],
)
def test_bad_plans_are_plan_errors(shapes_task, ratios, ignored, message):
    with pytest.raises(PlanError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")) as info:
        prune_channels(shapes_task.build_model(), ratios, shapes_task.example_inputs(), ignored_layers=ignored)
    assert "\n" not in str(info.value)


def test_transformer_head_cannot_be_pruned(text_task):
    with pytest.raises(PlanError, match="'head' produces the model's output"):
        prune_channels(text_task.build_model(), {"head": 0.5}, text_task.example_inputs())


def test_ignored_layers_keep_their_channels(shapes_task):
    teacher = shapes_task.build_model()
    inputs = shapes_task.example_inputs()
    pruned = prune_to_width(teacher, 0.5, inputs)
    kept = prune_channels(teacher, {"block1_conv1": 0.5}, inputs, ignored_layers=["block2_conv1"])
    assert channel_counts(pruned)["block2_conv1"] == 16
    assert channel_counts(kept)["block1_conv1"] == 8 and channel_counts(kept)["block2_conv1"] == 32
    with pytest.raises(PlanError, match="'block2_conv1' is also in ignored_layers"):
        prune_channels(teacher, {"block2_conv1": 0.5}, inputs, ignored_layers=["block2_conv1"])


def test_masked_models_must_be_pruned_before_sparsity(shapes_task):
    from autocomp.compress.sparsity import apply_sparsity, make_sparsity_permanent
    from autocomp.errors import CompressionError

    sparse = apply_sparsity(shapes_task.build_model(), {"block1_conv1": 0.5})
    with pytest.raises(CompressionError, match="prune channels before apply_sparsity"):
        prune_channels(sparse, {"block1_conv1": 0.5}, shapes_task.example_inputs())
    pruned = prune_channels(make_sparsity_permanent(sparse), {"block1_conv1": 0.5}, shapes_task.example_inputs())
    assert channel_counts(pruned)["block1_conv1"] == 8
