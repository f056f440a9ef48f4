"""Task factories that are wrong in the ways users' tasks are (loaded by the CLI as 'tests/bad_tasks.py:factory')."""

from types import SimpleNamespace

import torch
from torch import nn

from tiny_models import ShapesTask, TinyResNet


class NanMetric(ShapesTask):
    def evaluate(self, predict):
        return float("nan")


class RaisingMetric(ShapesTask):
    def evaluate(self, predict):
        raise KeyError("labels")


class Unexportable(nn.Module):
    """Returns a Python object, not tensors: nothing an exporter can write."""

    def __init__(self):
        super().__init__()
        # three layers, so a space that excludes the first and the last still searches one
        self.fc1, self.fc2, self.fc = nn.Linear(256, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        return SimpleNamespace(logits=self.fc(self.fc2(self.fc1(x.flatten(1)).relu()).relu()))


class UnexportableTask(ShapesTask):
    def build_model(self, width=None):
        return Unexportable().eval()


class Branchy(TinyResNet):
    """A data-dependent Python branch: tracing bakes in the path the example input takes."""

    def forward(self, x):
        # the example image (class 1) has its top-right quadrant lit; a batch's mean over it is about 0.33
        if x[:, 0, :8, 8:].mean() > 0.5:
            return -super().forward(x)
        return super().forward(x)


class BranchyTask(ShapesTask):
    def build_model(self, width=None):
        if width is not None:
            return Branchy(width=width)
        if self._trained is None:
            torch.manual_seed(0)
            model = Branchy()
            model.load_state_dict(ShapesTask(train_epochs=2).build_model().state_dict())
            self._trained = model.eval()
        return self._trained


def nan_metric():
    return NanMetric(train_epochs=1)


def raising_metric():
    return RaisingMetric(train_epochs=1)


def unexportable():
    return UnexportableTask(train_epochs=1)


def branchy():
    return BranchyTask()


def factory_raises():
    raise RuntimeError("dataset folder not found")


def untrained():
    """A model that was never trained: its baseline scores about 25%."""
    return ShapesTask(train_epochs=0)
