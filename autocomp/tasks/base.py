"""The Task protocol: what a user supplies to autocomp (public API; these names are stable)."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

Batch = tuple[tuple[torch.Tensor, ...], "torch.Tensor | None"]
Predict = Callable[..., np.ndarray]
"""``predict(*inputs)`` maps numpy arrays (one per model input) to the model's first output."""


@runtime_checkable
class Task(Protocol):
    """A model to compress, the data to fine-tune and calibrate on, and the metric to keep.

    ``build_model()`` returns the trained model. If it also accepts a ``width``
    keyword, ``build_model(width=w)`` must return a fresh, untrained model of
    the same architecture with every channel count scaled by ``w``; students
    for distillation are then built that way (otherwise by channel-pruning the
    trained model to that width).

    Optionally a task defines ``distill_loss(student_out, teacher_out, labels)``
    for outputs that are not class logits; the default is soft-target KL plus
    cross-entropy.
    """

    def build_model(self) -> nn.Module: ...

    def example_inputs(self) -> tuple[torch.Tensor, ...]: ...

    def train_batches(self) -> Iterable[Batch]: ...

    def evaluate(self, predict: Predict) -> float: ...


def accepts_width(task: Task) -> bool:
    """True when ``task.build_model`` takes a ``width`` keyword (it can build fresh students)."""
    try:
        return "width" in inspect.signature(task.build_model).parameters
    except (TypeError, ValueError):
        return False


def task_name(task: Any) -> str:
    """A short, human name for a task (its ``name`` attribute, else its class name)."""
    return str(getattr(task, "name", type(task).__name__))


def torch_predictor(model: nn.Module) -> Predict:
    """A ``predict`` callable that runs a PyTorch model in eval mode without gradients."""

    def predict(*inputs: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            out = model(*(torch.from_numpy(np.ascontiguousarray(x)) for x in inputs))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.detach().cpu().numpy()

    return predict
