"""The hand-made plans: one recipe per technique, the same for every layer, on the space's own grid."""

from __future__ import annotations

from optuna.distributions import CategoricalDistribution, FloatDistribution

from autocomp.anchors import anchor_plans, uniform_grid, uniform_plan
from autocomp.precision import DYNAMIC_INT8

CNN = {
    "distill/width": CategoricalDistribution([0.5, 0.75, 1.0]),
    "prune/a": FloatDistribution(0.0, 0.6, step=0.2),
    "sparsity/a": FloatDistribution(0.0, 0.5),
    "bits/a": CategoricalDistribution([32, 16, 8]),
    "bits/b": CategoricalDistribution([32, 16, 8]),
}


def test_a_uniform_plan_lands_on_the_spaces_grid():
    plan = uniform_plan(CNN, prune=0.25, bits=16)
    assert plan == {"distill/width": 1.0, "prune/a": 0.2, "sparsity/a": 0.0, "bits/a": 16, "bits/b": 16}
    assert CNN["prune/a"]._contains(plan["prune/a"])  # an enqueued value the distribution holds


def test_cnn_anchors_are_the_narrowest_student_at_each_reduced_precision_the_device_runs():
    anchors = anchor_plans(CNN, supported_bits=(32, 16))
    assert anchors == [{"distill/width": 0.5, "prune/a": 0.0, "sparsity/a": 0.0, "bits/a": 16, "bits/b": 16}]


def test_transformer_anchors_keep_heads_and_width_and_leave_static_int8_out():
    space = {
        "distill/width": CategoricalDistribution([0.5, 1.0]),
        "heads/enc.0": FloatDistribution(0.0, 0.5, step=0.25),
        "prune/enc.0.ffn": FloatDistribution(0.0, 0.5, step=0.25),
        "bits/enc.0.ffn": CategoricalDistribution([32, 16, 8, DYNAMIC_INT8]),
    }
    anchors = anchor_plans(space, supported_bits=(32, 16, 8, DYNAMIC_INT8), fast_bits=(8, DYNAMIC_INT8))
    assert all(a["distill/width"] == 1.0 and a["heads/enc.0"] == 0.0 for a in anchors)
    assert [(a["prune/enc.0.ffn"], a["bits/enc.0.ffn"]) for a in anchors] == [
        (0.25, 32), (0.5, 32), (0.0, DYNAMIC_INT8), (0.5, DYNAMIC_INT8),
    ]


def test_the_bench_grid_is_every_ratio_times_every_precision_but_the_baseline():
    grid = uniform_grid(CNN, supported_bits=(32, 16, 8))
    pairs = [(p["prune/a"], p["bits/a"]) for p in grid]
    assert (0.0, 32) not in pairs and len(pairs) == len(set(pairs))
    assert {b for _, b in pairs} == {32, 16, 8} and {r for r, _ in pairs} == {0.0, 0.2, 0.4, 0.6}
