"""Task factories for the search tests (loaded by the CLI as 'tests/search_tasks.py:factory')."""

from tiny_models import ShapesTask


class FlakyShapes(ShapesTask):
    """Every second evaluation after the baseline raises, as a broken metric or a crashed runtime would."""

    calls = 0

    def evaluate(self, predict):
        FlakyShapes.calls += 1
        if FlakyShapes.calls > 1 and FlakyShapes.calls % 2 == 0:
            raise RuntimeError("metric crashed on purpose")
        return super().evaluate(predict)


def shapes():
    return ShapesTask(train_epochs=4)


def flaky():
    return FlakyShapes(train_epochs=4)
