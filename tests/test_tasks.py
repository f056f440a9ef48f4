import textwrap

import numpy as np
import pytest
import torch

from autocomp.errors import TaskError
from autocomp.tasks import Task, accepts_width, load_task, torch_predictor
from autocomp.tasks.digits import DigitsTask, load_data
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


def test_digits_teacher_is_trained_and_cached():
    task = DigitsTask()
    model = task.build_model()  # trains once per cache dir (about a minute), then loads
    assert task.evaluate(torch_predictor(model)) >= 0.97
    cached = list((__import__("autocomp.paths", fromlist=["cache_dir"]).cache_dir() / "models").glob("digits-resnet-*.pt"))
    assert any(task.cache_key() in path.name for path in cached)
    reloaded = task.build_model()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
