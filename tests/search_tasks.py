"""Task factories for the search tests (loaded by the CLI as 'tests/search_tasks.py:factory')."""

from tiny_models import ShapesTask


class FlakyShapes(ShapesTask):
    """Every second trial raises in its evaluation, as a broken metric or a crashed runtime would.

    A plan is scored twice (its ONNX file, then its PyTorch model) and a failed one stops at the first:
    calls 1-2 are the baseline, 3 fails trial 0, 4-5 pass trial 1, 6 fails trial 2, ...
    """

    calls = 0

    def evaluate(self, predict):
        FlakyShapes.calls += 1
        if FlakyShapes.calls > 2 and FlakyShapes.calls % 3 == 0:
            raise RuntimeError("metric crashed on purpose")
        return super().evaluate(predict)


def shapes():
    return ShapesTask(train_epochs=4)


def flaky():
    return FlakyShapes(train_epochs=4)


class AlwaysFailing(ShapesTask):
    """The baseline scores; every trial's evaluation raises (a metric that breaks on compressed models)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def evaluate(self, predict):
        self.calls += 1
        if self.calls > 2:  # the baseline's ONNX file and PyTorch model
            raise RuntimeError("metric crashed on purpose")
        return super().evaluate(predict)


def always_failing():
    return AlwaysFailing(train_epochs=4)


def shapes_from_env():
    """The same task spec trains another teacher when SHAPES_EPOCHS changes (a retrained or edited model)."""
    import os

    return ShapesTask(train_epochs=int(os.environ.get("SHAPES_EPOCHS", "4")))


RELEASE_STUDY = __import__("pathlib").Path(__file__).parent / "data" / "release-study"


def frozen_shapes():
    """The shapes task with a teacher loaded from a committed state dict, so a study written by an earlier
    release (``tests/data/release-study``) finds the very teacher it was searched for on any machine."""
    import torch

    from tiny_models import TinyResNet

    task = ShapesTask(train_epochs=0)
    teacher = TinyResNet()
    teacher.load_state_dict(torch.load(RELEASE_STUDY / "teacher.pt", weights_only=True))
    task._trained = teacher.eval()
    return task
