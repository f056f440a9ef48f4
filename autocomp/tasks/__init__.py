"""Tasks: the Task protocol, the built-in tasks, and loading a user's task by name.

A task is named as a built-in (``digits``, ``digits-mobilenet``), as
``package.module:factory`` or as ``path/to/file.py:factory``; the factory is
called with no arguments and must return a Task.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

from autocomp.errors import TaskError
from autocomp.tasks.base import Batch, Predict, Task, accepts_width, model_fingerprint, score, task_name, torch_predictor

__all__ = ["Batch", "Predict", "Task", "accepts_width", "load_task", "model_fingerprint", "score", "task_name", "torch_predictor", "BUILTIN_TASKS"]


def _digits() -> Task:
    from autocomp.tasks.digits import DigitsTask

    return DigitsTask(arch="resnet")


def _digits_mobilenet() -> Task:
    from autocomp.tasks.digits import DigitsTask

    return DigitsTask(arch="mobilenet")


def _digits_vit() -> Task:
    from autocomp.tasks.digits import DigitsTask, TrainRecipe

    # a transformer needs a longer schedule and stronger weight decay than the CNNs: 97.6% in 40 epochs (77 s)
    return DigitsTask(arch="vit", recipe=TrainRecipe(epochs=40, weight_decay=0.05))


BUILTIN_TASKS: dict[str, Callable[[], Task]] = {"digits": _digits, "digits-mobilenet": _digits_mobilenet, "digits-vit": _digits_vit}

_REQUIRED = ("build_model", "example_inputs", "train_batches", "evaluate")


def load_task(spec: str) -> Task:
    """Resolve a task spec to a Task, or raise TaskError with one line saying what is wrong."""
    if spec in BUILTIN_TASKS:
        return _checked(BUILTIN_TASKS[spec](), spec)
    if ":" not in spec:
        known = ", ".join(sorted(BUILTIN_TASKS))
        raise TaskError(
            f"unknown task {spec!r}: use a built-in ({known}), 'package.module:factory' or 'path/to/file.py:factory'"
        )
    target, _, attr = spec.rpartition(":")
    module = _load_file(target, spec) if target.endswith(".py") else _import(target, spec)
    factory = getattr(module, attr, None)
    if factory is None:
        raise TaskError(f"task {spec!r}: {target} has no attribute {attr!r}")
    if not callable(factory):
        raise TaskError(f"task {spec!r}: {attr!r} is not callable; it must be a factory returning a Task")
    try:
        task = factory()
    except Exception as exc:  # a user's factory may raise anything; report it as one line
        raise TaskError(f"task {spec!r}: the factory raised {type(exc).__name__}: {exc}") from exc
    return _checked(task, spec)


def _load_file(path_text: str, spec: str):
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise TaskError(f"task {spec!r}: file {path} does not exist")
    name = f"autocomp_user_task_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise TaskError(f"task {spec!r}: cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise TaskError(f"task {spec!r}: importing {path} raised {type(exc).__name__}: {exc}") from exc
    return module


def _import(module_name: str, spec: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise TaskError(f"task {spec!r}: module {module_name!r} not found ({exc}); is it installed or on PYTHONPATH?") from exc
    except Exception as exc:
        raise TaskError(f"task {spec!r}: importing {module_name} raised {type(exc).__name__}: {exc}") from exc


def _checked(task: object, spec: str) -> Task:
    missing = [name for name in _REQUIRED if not callable(getattr(task, name, None))]
    if missing:
        raise TaskError(
            f"task {spec!r}: the factory returned {type(task).__name__}, which lacks {', '.join(missing)}; "
            "a Task needs build_model, example_inputs, train_batches and evaluate"
        )
    return task  # type: ignore[return-value]
