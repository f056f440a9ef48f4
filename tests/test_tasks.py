import textwrap

import numpy as np
import pytest
import torch

from autocomp.errors import TaskError
from autocomp.tasks import Task, accepts_width, load_task, torch_predictor
from autocomp.tasks import digits
from autocomp.tasks.digits import DigitsTask, TrainRecipe, load_data
from autocomp.tasks.models import MobileNetDigits, ResNetDigits

GOOD_TASK = """
import numpy as np, torch
from torch import nn

class Linear:
    def build_model(self):
        torch.manual_seed(0)
        return nn.Linear(4, 2)
    def example_inputs(self):
        return (torch.zeros(1, 4),)
    def train_batches(self):
        yield (torch.zeros(8, 4),), torch.zeros(8, dtype=torch.long)
    def evaluate(self, predict):
        return float(predict(np.zeros((3, 4), np.float32)).shape[0])

def make():
    return Linear()

def broken():
    raise RuntimeError("no data here")

def not_a_task():
    return 42

value = 3
"""


@pytest.fixture
def task_file(tmp_path):
    path = tmp_path / "my_task.py"
    path.write_text(textwrap.dedent(GOOD_TASK))
    return path


def test_load_task_from_file(task_file):
    task = load_task(f"{task_file}:make")
    assert isinstance(task, Task)
    assert task.evaluate(torch_predictor(task.build_model())) == 3.0


def test_load_task_from_module(task_file, monkeypatch):
    monkeypatch.syspath_prepend(str(task_file.parent))
    assert load_task("my_task:make").build_model().in_features == 4


@pytest.mark.parametrize(
    "suffix, message",
    [
        ("missing.py:make", "does not exist"),
        ("{file}:nope", "has no attribute 'nope'"),
        ("{file}:value", "is not callable"),
        ("{file}:broken", "the factory raised RuntimeError: no data here"),
        ("{file}:not_a_task", "returned int, which lacks build_model"),
        ("no_such_module_xyz:make", "module 'no_such_module_xyz' not found"),
        ("mnist", "unknown task 'mnist'"),
    ],
)
def test_bad_task_specs_fail_with_one_line(task_file, tmp_path, suffix, message):
    spec = suffix.format(file=task_file) if "{file}" in suffix else (str(tmp_path / suffix) if suffix.startswith("missing") else suffix)
    with pytest.raises(TaskError) as info:
        load_task(spec)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_digits_split_is_fixed_stratified_and_real():
    data = load_data()
    assert data.x_train.shape[1:] == (1, 32, 32) and len(data.y_val) == 450
    from sklearn.datasets import load_digits

    # stratified: each class keeps its share of the full data (within one sample)
    expected = np.bincount(load_digits().target) * 0.25
    assert np.all(np.abs(np.bincount(data.y_val.numpy()) - expected) <= 1.0)
    assert float(data.x_train.max()) <= 1.0 and float(data.x_train.min()) >= 0.0


def test_digits_factory_builds_fresh_students_of_a_width():
    task = DigitsTask()
    assert accepts_width(task)
    student, full = task.build_model(width=0.5), ResNetDigits()
    assert student.fc.in_features == full.fc.in_features // 2
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in full.parameters()) / 3
    assert MobileNetDigits(width=0.5)(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_the_builtin_vit_distils_students_to_the_teachers_final_hidden_states_and_the_cnns_do_not():
    """With whole blocks removed, logits alone under-constrain the remaining blocks (README: depth pruning)."""
    from autocomp.compress.distill import _feature_weights

    vit = load_task("digits-vit")
    assert _feature_weights(vit, vit.build_model(width=1.0)) == {"norm": 1.0}  # a module the ViT has
    assert _feature_weights(DigitsTask(arch="resnet"), ResNetDigits()) == {}


def test_digits_teacher_is_trained_and_cached():
    task = DigitsTask()
    model = task.build_model()  # trains once per cache dir (about a minute), then loads
    assert task.evaluate(torch_predictor(model)) >= 0.97
    cached = list((__import__("autocomp.paths", fromlist=["cache_dir"]).cache_dir() / "models").glob("digits-resnet-*.pt"))
    assert any(task.cache_key() in path.name for path in cached)
    reloaded = task.build_model()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))


SHORT_RECIPE = TrainRecipe(epochs=1)  # the same code path as the default recipe, a seventh of the time


def _caller_state() -> tuple:
    return (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.random.get_rng_state(),
    )


def _assert_same_state(before: tuple, after: tuple) -> None:
    assert after[:3] == before[:3]
    assert torch.equal(after[3], before[3])


@pytest.fixture(scope="module")
def two_short_trainings(tmp_path_factory):
    """The short recipe trained twice, each in a fresh cache dir, under different caller settings.

    First: 1 thread, deterministic algorithms off, generator seeded 1. Second: 2
    threads, deterministic algorithms on (warn only), generator seeded 2. Yields
    (state_dict, caller state before, caller state after) for each.
    """
    saved = _caller_state()
    runs = []
    try:
        with pytest.MonkeyPatch.context() as patch:
            for threads, deterministic, seed in ((1, False, 1), (2, True, 2)):
                patch.setenv("AUTOCOMP_CACHE_DIR", str(tmp_path_factory.mktemp(f"cache-{threads}")))
                torch.set_num_threads(threads)
                torch.use_deterministic_algorithms(deterministic, warn_only=deterministic)
                torch.manual_seed(seed)
                torch.rand(seed)  # a caller that has drawn before
                before = _caller_state()
                model = DigitsTask(recipe=SHORT_RECIPE).build_model()
                runs.append((model.state_dict(), before, _caller_state()))
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
        torch.random.set_rng_state(saved[3])
    return runs


def test_digits_training_gives_the_same_weights_whatever_the_callers_threads_and_seed(two_short_trainings):
    (first, _, _), (second, _, _) = two_short_trainings
    assert list(first) == list(second)
    for name in first:
        # bit for bit: bytes, not a tolerance (torch.equal would also call -0.0 and 0.0 equal)
        assert first[name].numpy().tobytes() == second[name].numpy().tobytes(), name


def test_digits_training_leaves_the_callers_threads_flags_and_generator_as_they_were(two_short_trainings):
    for _, before, after in two_short_trainings:
        _assert_same_state(before, after)


def test_digits_cached_load_leaves_the_callers_generator_as_it_was(two_short_trainings, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMP_CACHE_DIR", str(tmp_path))
    task = DigitsTask(recipe=SHORT_RECIPE)
    path = tmp_path / "models" / f"digits-resnet-{task.cache_key()}.pt"
    path.parent.mkdir()
    torch.save(two_short_trainings[0][0], path)  # a cache hit, without training a third time
    before = _caller_state()
    task.build_model()
    _assert_same_state(before, _caller_state())


def test_digits_training_restores_the_callers_state_when_it_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMP_CACHE_DIR", str(tmp_path))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(digits.F, "cross_entropy", interrupted)
    before = _caller_state()
    with pytest.raises(KeyboardInterrupt):
        DigitsTask(recipe=SHORT_RECIPE).build_model()
    _assert_same_state(before, _caller_state())
    assert not list(tmp_path.glob("models/*.pt"))


def test_digits_cache_key_covers_the_training_threads():
    assert DigitsTask(recipe=TrainRecipe(threads=2)).cache_key() != DigitsTask().cache_key()
    assert DigitsTask(recipe=SHORT_RECIPE).cache_key() != DigitsTask().cache_key()


@pytest.mark.parametrize("field, value", [("threads", 0), ("epochs", 0), ("batch_size", -1)])
def test_train_recipe_rejects_bad_values_with_the_value(field, value):
    with pytest.raises(TaskError, match=f"TrainRecipe.{field} must be at least 1, got {value}"):
        TrainRecipe(**{field: value})
