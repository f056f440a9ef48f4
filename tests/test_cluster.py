"""Weight sharing (the ``cluster`` knob): 2^b shared values per layer, kept through fine-tuning and in the
exported file, which then deflates smaller; the raw file and its speed do not change."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from autocomp.compress.distill import DistillConfig
from autocomp.errors import ConfigError, PlanError
from autocomp.knobs.cluster import fold_shared, share_weights
from autocomp.pipeline import build_artifact, compress_model
from autocomp.plan import CompressionPlan
from autocomp.profiles import load_profile
from autocomp.runtime import onnx_predictor
from autocomp.search_space import parse_space
from tiny_models import ShapesTask


@pytest.fixture(scope="module")
def task():
    return ShapesTask(train_epochs=2)


def _weight(model, layer):
    return dict(model.named_modules())[layer].weight


def test_shared_weights_stay_shared_through_fine_tuning(task):
    from autocomp.compress.distill import distill

    teacher = task.build_model()
    before = copy.deepcopy(teacher.state_dict())
    shared = share_weights(teacher, {"block1_conv1": 3, "block2_conv2": 4})
    tuned = fold_shared(distill(shared, teacher, task, config=DistillConfig(steps=6)))
    assert _weight(tuned, "block1_conv1").unique().numel() <= 8
    assert _weight(tuned, "block2_conv2").unique().numel() <= 16
    assert _weight(tuned, "block1_conv2").unique().numel() > 100  # a layer the plan leaves alone is untouched
    assert type(_weight(tuned, "block1_conv1")) is torch.nn.Parameter  # folded: a plain weight again
    # the shared values trained: they are not the clustered teacher's any more
    assert not torch.equal(_weight(tuned, "block2_conv2"), _weight(fold_shared(shared), "block2_conv2"))
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_a_clustered_plan_exports_its_shared_values_and_deflates_smaller(task, tmp_path):
    teacher = task.build_model()
    layers = ["block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2"]
    recipe = load_profile("local").int8_recipe
    plan = CompressionPlan.of(cluster={layer: 4 for layer in layers})
    model = compress_model(task, teacher, plan, finetune=DistillConfig(steps=4))
    artifact = build_artifact(task, model, plan, tmp_path / "shared", recipe=recipe)
    plain = build_artifact(task, teacher, CompressionPlan(), tmp_path / "plain", recipe=recipe)
    graph = onnx.load(str(artifact.onnx_path))
    onnx.checker.check_model(graph)
    weights = [numpy_helper.to_array(init) for init in graph.graph.initializer if init.dims and len(init.dims) == 4]
    # conv weights of the clustered layers hold at most 16 values each (BatchNorm folding may scale them per
    # output channel, so count per output channel)
    clustered = [w for w in weights if w.shape[0] >= 8]
    assert clustered and all(len(np.unique(w[c])) <= 16 for w in clustered for c in range(w.shape[0]))
    # size, not speed: the raw file is as large as the plain one, the deflated one much smaller
    assert abs(artifact.stats.size_bytes - plain.stats.size_bytes) < 0.05 * plain.stats.size_bytes
    assert artifact.stats.zip_bytes < 0.8 * plain.stats.zip_bytes
    inputs = next(iter(task.train_batches()))[0]
    with torch.no_grad():
        np.testing.assert_allclose(onnx_predictor(artifact.onnx_path)(inputs[0].numpy()), model(*inputs).numpy(), rtol=1e-3, atol=1e-4)


def test_sparsity_and_sharing_on_one_layer_is_one_clear_line(task):
    plan = CompressionPlan.of(sparsity={"block1_conv1": 0.5}, cluster={"block1_conv1": 4})
    with pytest.raises(PlanError) as info:
        compress_model(task, task.build_model(), plan, finetune=DistillConfig(steps=0))
    assert "cluster/block1_conv1: the layer's weight is already masked or shared" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bits, message", [(1, "is not a number of bits for shared weights"), (16, "is not a number of bits")])
def test_bad_shared_bits_are_refused(bits, message):
    with pytest.raises(PlanError, match=message):
        CompressionPlan.of(cluster={"fc": bits})
    with pytest.raises(ConfigError, match="must be a non-empty list of bits from 2, 3"):
        parse_space({"schema_version": 1, "cluster": [{"layers": ["*"], "choices": [bits]}]}, name="bad")


def test_the_report_says_sharing_buys_size_not_speed():
    import pandas as pd

    from autocomp.report.data import technique_notes

    from autocomp.report.data import TRIAL_COLUMNS

    trials = pd.DataFrame(columns=TRIAL_COLUMNS)
    layers = pd.DataFrame({"layer": ["a", "b", "c"], "shared_values": [16, None, 64]})
    (note,) = technique_notes(trials, layers)
    assert note.startswith("weights shared in 2 layers (16, 64 values each)") and "does not run faster" in note
