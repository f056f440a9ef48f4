"""The Task protocol: what a user supplies to autocomp (public API; these names are stable)."""

from __future__ import annotations

import hashlib
import inspect
import math
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from autocomp.errors import AutocompError, TaskError, first_line

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
    cross-entropy. It may also set ``distill_features``, module path -> weight
    (``{"bert.encoder.layer.3": 1.0}``): intermediate representations (hidden
    states) the student is pulled to, by MSE, on top of that loss. And it may
    define ``augment(inputs) -> inputs`` (``swap_tokens`` for token ids): each
    distillation batch's inputs, varied. The teacher's outputs on them are the
    targets, so varied inputs need no labels (labels go on unchanged: vary them
    only in ways that keep a label true if ``distill_loss`` uses labels).

    ``evaluate`` should score inputs that ``train_batches`` never yields: a
    student distilled on a few dozen inputs can match the teacher on them and
    fail on new ones, and held-out inputs are what tell the two apart.
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


def torch_predictor(model: nn.Module, *, set_eval: bool = True) -> Predict:
    """A ``predict`` callable that runs a PyTorch model in eval mode without gradients.

    ``set_eval=False`` for a ``torch.export`` program's module, which is already
    exported in eval mode and refuses ``.eval()``.
    """

    def predict(*inputs: np.ndarray) -> np.ndarray:
        if set_eval:
            model.eval()
        with torch.no_grad():
            out = model(*(torch.from_numpy(np.ascontiguousarray(x)) for x in inputs))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.detach().cpu().numpy()

    return predict


def score(task: Task, predict: Predict, *, what: str) -> float:
    """``task.evaluate(predict)`` as a finite float; a metric that raises or is not finite is the task's error.

    ``what`` names the model being scored (``"the uncompressed model in PyTorch"``) so the
    one-line message says which evaluation went wrong.
    """
    name = task_name(task)
    try:
        value = task.evaluate(predict)
    except AutocompError:
        raise
    except Exception as exc:  # a user's metric may raise anything; it becomes one line
        first = first_line(exc, limit=200)
        raise TaskError(f"task {name!r}: evaluate() raised {type(exc).__name__}: {first} (scoring {what}); fix the task's metric") from exc
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TaskError(f"task {name!r}: evaluate() returned {value!r} (scoring {what}); it must return a float, higher is better") from None
    if not math.isfinite(number):
        raise TaskError(
            f"task {name!r}: evaluate() returned {number} (scoring {what}); it must return a finite float "
            "(higher is better): fix the task's metric"
        )
    return number


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (names, dtypes, shapes, values): which trained weights these are.

    A study stores its teacher's fingerprint, so a resumed search or an export
    notices when the task now builds a different model (retrained, edited).
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous().reshape(-1)  # 1-d: a 0-d tensor cannot be viewed as bytes
        digest.update(f"{name}|{value.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()
