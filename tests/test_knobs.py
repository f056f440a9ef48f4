"""The contract every registered knob keeps (``autocomp.knobs.base``), on a CNN, a two-input transformer
and an MLP: its parameters round-trip through Optuna, applying it never changes the teacher, the ONNX
file it leads to passes the checker and runs in onnxruntime as PyTorch does, and its report columns
name the model's layers. A new knob gets this suite by adding its sample section to ``SECTIONS``."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import optuna
import pytest
import torch
from optuna.trial import create_trial
from torch import nn

from autocomp import knobs
from autocomp.compress.distill import DistillConfig
from autocomp.errors import ConfigError
from autocomp.pipeline import build_artifact, compress_model, finetune_further
from autocomp.plan import CompressionPlan
from autocomp.profiles import load_profile
from autocomp.runtime import onnx_predictor
from autocomp.search_space import parse_space
from autocomp.targets import compressible_layers
from bert_task import Encoder
from tiny_models import ShapesTask

RATIO = {"type": "float", "low": 0.0, "high": 0.5, "step": 0.25}
SECTIONS = {
    "distill": {"width": {"type": "categorical", "choices": [0.5, 1.0]}},
    "prune": [{"layers": ["*"], "ratio": RATIO}],
    "heads": [{"layers": ["*"], "ratio": RATIO}],
    "depth": [{"layers": ["*"], "ratio": RATIO}],
    "sparsity": [{"layers": ["*"], "ratio": RATIO}],
    "bits": [{"layers": ["*"], "choices": [32, 16, 8]}],  # dyn8 only takes MatMul layers: test_depth covers it
    "cluster": [{"layers": ["*"], "choices": [32, 4]}],
    "qat": [False, True],
    "split": {"after": "all", "wire": ["fp32", "int8"]},
}
"""A section each knob's contract runs with: every value range a real space gives it."""


class MlpTask:
    name = "mlp"

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5)).eval()
        self.x = torch.randn(96, 20, generator=torch.Generator().manual_seed(1))

    def build_model(self) -> nn.Module:
        return self.model

    def example_inputs(self):
        return (self.x[:1].clone(),)

    def train_batches(self):
        for start in range(0, 96, 32):
            yield (self.x[start : start + 32],), None

    def evaluate(self, predict) -> float:
        return float(np.asarray(predict(self.x.numpy())).std())


class BertTask:
    """A two-input (ids, attention mask) BERT encoder from ``transformers``' config class, random init."""

    name = "bert"

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = Encoder(hidden=32, heads=4, layers=2, ffn=64).eval()
        generator = torch.Generator().manual_seed(1)
        self.ids = torch.randint(1, 100, (64, 16), generator=generator)
        self.mask = (torch.arange(16)[None, :] < torch.randint(6, 17, (64,), generator=generator)[:, None]).long()

    def build_model(self) -> nn.Module:
        return self.model

    def example_inputs(self):
        return (self.ids[:1].clone(), self.mask[:1].clone())

    def train_batches(self):
        for start in range(0, 64, 16):
            yield (self.ids[start : start + 16], self.mask[start : start + 16]), None

    def evaluate(self, predict) -> float:
        return float(np.asarray(predict(self.ids.numpy(), self.mask.numpy())).std())


class CnnTask(ShapesTask):
    def __init__(self) -> None:
        super().__init__(train_epochs=1)


TASKS = {"cnn": CnnTask, "bert": BertTask, "mlp": MlpTask}
_built: dict[str, object] = {}


def task_of(kind: str):
    if kind not in _built:
        _built[kind] = TASKS[kind]()
    return _built[kind]


def test_every_registered_knob_has_a_contract_section():
    assert set(SECTIONS) == set(knobs.KNOBS)
    for knob in knobs.KNOBS.values():
        assert knob.prefix == f"{knob.name}/" and knob.stage in ("torch", "onnx") and isinstance(knob.holds, bool)
        assert not (knob.holds and knob.stage == "onnx")  # only a torch-stage knob trains under what it holds


def _distributions(knob_name: str, task) -> dict:
    space = parse_space({"schema_version": 1, knob_name: SECTIONS[knob_name]}, name=f"contract-{knob_name}")
    try:
        return space.distributions(task.build_model(), supported_bits=(32, 16, 8, "dyn8"), example_inputs=tuple(task.example_inputs()))
    except ConfigError as exc:  # a rule matching nothing in this model (heads in a CNN) is the space's error
        assert "match no" in str(exc)
        return {}


def _boldest(name: str, dist) -> object:
    """The value furthest from the knob's neutral one (the change that tests the most)."""
    neutral = knobs.knob_of(name)[0].value.neutral
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return next(c for c in reversed(dist.choices) if c != neutral) if len(dist.choices) > 1 else dist.choices[0]
    return dist.high


@pytest.mark.parametrize("knob_name", list(knobs.KNOBS))
def test_a_knob_keeps_its_contract_on_every_model_it_acts_on(knob_name, tmp_path):
    applied = [kind for kind in TASKS if _keeps_contract(knob_name, task_of(kind), tmp_path / kind)]
    assert applied, f"{knob_name} acts on none of {', '.join(TASKS)}"


def _keeps_contract(knob_name: str, task, tmp_path) -> bool:
    """Check the contract on one model; False when the knob has nothing to act on there (heads in a CNN)."""
    knob = knobs.KNOBS[knob_name]
    distributions = _distributions(knob_name, task)
    if not distributions:
        return False
    assert all(name.startswith(knob.prefix) for name in distributions)
    params = {name: _boldest(name, dist) for name, dist in distributions.items()}
    # the plan round-trips through Optuna: the stored trial's params are the plan's
    stored = create_trial(params=params, distributions=distributions, values=[0.0])
    plan = CompressionPlan.from_params(stored.params)
    assert plan.to_params() == params and plan.changes(knob_name)

    teacher = task.build_model()
    before = copy.deepcopy(teacher.state_dict())
    names_before = [name for name, _ in teacher.named_modules()]
    model = compress_model(task, teacher, plan, finetune=DistillConfig(steps=1), round_to=8)
    # never mutates its input: the teacher's weights and structure are as they were
    assert [name for name, _ in teacher.named_modules()] == names_before
    assert all(torch.equal(before[key], value) for key, value in teacher.state_dict().items())
    if knob.stage == "torch":
        assert model is not teacher
    if knob.holds:  # applied again to its own finished output (a further fine-tune starts so), it changes nothing
        again = finetune_further(task, teacher, plan, model, finetune=DistillConfig(steps=0), recipe=load_profile("local").int8_recipe)
        assert again is not model and again.state_dict().keys() == model.state_dict().keys()
        assert all(torch.equal(value, again.state_dict()[key]) for key, value in model.state_dict().items())

    artifact = build_artifact(task, model, plan, tmp_path, recipe=load_profile("local").int8_recipe, calibration_samples=16)
    onnx.checker.check_model(onnx.load(str(artifact.onnx_path)))
    inputs = next(iter(task.train_batches()))[0]
    ours = np.asarray(onnx_predictor(artifact.onnx_path)(*(x.numpy() for x in inputs)))
    with torch.no_grad():
        theirs = model.eval()(*inputs).numpy()
    assert ours.shape == theirs.shape and np.isfinite(ours).all()
    if artifact.exact:  # the exported graph itself: it computes what PyTorch does
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4)
    else:  # rewritten by an ONNX-stage knob (int8, fp16): close, not equal
        assert knob.stage == "onnx"
        assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.9

    facts = knobs.LayerFacts(teacher=teacher, channels=artifact.channels, baseline_channels={})
    cells = knob.columns(plan[knob_name], facts)
    if cells:  # a knob with columns gives every layer the same ones (one with none, like the width, gives {})
        assert set(cells) == set(compressible_layers(teacher))
        assert len({tuple(sorted(row)) for row in cells.values()}) == 1
    return True


def test_an_unknown_knob_in_a_space_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown key 'quantise'; allowed keys: .*distill, prune, heads, depth, sparsity, bits"):
        parse_space({"schema_version": 1, "quantise": []}, name="typo")


def test_a_fine_tune_between_knobs_shares_the_budget(monkeypatch):
    """``pipeline: [prune, finetune, distill]``: the pruned teacher fine-tunes, then it is narrowed and
    fine-tuned again; the steps are shared, the last fine-tune takes the remainder."""
    import autocomp.pipeline as pipeline

    task = task_of("cnn")
    seen = []
    real = pipeline.distill
    monkeypatch.setattr(pipeline, "distill", lambda model, teacher, task, *, config, on_step: seen.append(config.steps) or real(
        model, teacher, task, config=config, on_step=on_step))
    plan = CompressionPlan.of(prune={"block1_conv1": 0.5}, distill={"width": 0.5})
    order = knobs.pipeline(["prune", "finetune", "distill", "bits"], where="test")
    compress_model(task, task.build_model(), plan, finetune=DistillConfig(steps=7), pipeline=order)
    assert seen == [3, 4]
    seen.clear()
    compress_model(task, task.build_model(), CompressionPlan.of(prune={"block1_conv1": 0.5}), finetune=DistillConfig(steps=7), pipeline=order)
    assert seen == [7]  # nothing after the fine-tune point changes the model: one fine-tune takes it all


def test_a_further_fine_tune_trains_under_what_the_trial_trained_under():
    """The final fine-tune (``finetune_further``) of a sparse, shared and QAT-trained model: it trains (the weights
    move), and the zeros stay where they were, each shared layer keeps its 2^b values and the int8 layers'
    trained ranges go on from where the trial left them instead of being calibrated afresh."""
    from autocomp.knobs.qat import RANGE

    task = task_of("cnn")
    teacher = task.build_model()
    plan = CompressionPlan.of(
        sparsity={"block1_conv1": 0.5}, cluster={"block2_conv1": 3}, bits={"block2_conv2": 8}, qat={"int8": True},
    )
    recipe = load_profile("local").int8_recipe
    trial = compress_model(task, teacher, plan, finetune=DistillConfig(steps=4), recipe=recipe)
    further = finetune_further(task, teacher, plan, trial, finetune=DistillConfig(steps=4, lr=0.01), recipe=recipe)
    layers = {name: dict(m.named_modules()) for name, m in (("trial", trial), ("further", further))}
    zeros = layers["trial"]["block1_conv1"].weight == 0
    assert zeros.float().mean() >= 0.5 and torch.equal(layers["further"]["block1_conv1"].weight == 0, zeros)
    assert not torch.equal(layers["further"]["block1_conv1"].weight, layers["trial"]["block1_conv1"].weight)  # it trained
    assert len(torch.unique(layers["further"]["block2_conv1"].weight)) <= 8
    assert not torch.equal(layers["further"]["block2_conv1"].weight, layers["trial"]["block2_conv1"].weight)
    before, after = getattr(layers["trial"]["block2_conv2"], RANGE), getattr(layers["further"]["block2_conv2"], RANGE)
    assert not torch.equal(before, after)  # followed the training batches on from the trial's range
    assert torch.allclose(before, after, rtol=0.5, atol=0.5)  # not a fresh calibration far away
    # the knobs never reached into the model they were given
    assert not any(type(m).__name__.startswith("_FakeQuant") for m in further.modules())
