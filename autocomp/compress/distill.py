"""Knowledge distillation: build a narrower student and fine-tune it against the original model.

Every compressed model (a narrower student, a channel-pruned or sparsified
model) loses accuracy; training it to match the teacher's soft outputs recovers
most of it in a few hundred steps, far fewer than training from labels alone
would need. The loop is deliberately plain - AdamW with a cosine-decayed
learning rate over a fixed step budget - so that a trial's cost is known in
advance and the search can stop a hopeless trial from ``on_step``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autocomp.compress.heads import first_tensor
from autocomp.compress.prune import prune_to_width
from autocomp.compress.sparsity import clone_model
from autocomp.errors import CompressionError, ConfigError, PlanError, TaskError, first_line
from autocomp.tasks.base import Task, accepts_width

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillConfig:
    """Distillation settings. ``steps`` counts optimizer steps (batches), not passes over the data."""

    steps: int = 100
    temperature: float = 4.0
    alpha: float = 0.7
    """Weight of the soft-target (KD) term; ``1 - alpha`` weighs cross-entropy on the labels."""
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ConfigError(f"distill steps {self.steps!r} must be a non-negative integer (0 skips fine-tuning)")
        if not self.temperature > 0:
            raise ConfigError(f"distill temperature {self.temperature!r} must be > 0; 4.0 is a common choice")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"distill alpha {self.alpha!r} is outside [0, 1]; 1.0 uses the teacher only, 0.0 the labels only")
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise ConfigError(f"distill lr {self.lr!r} must be > 0 and weight_decay {self.weight_decay!r} >= 0")


def default_distill_loss(
    student_out: Tensor, teacher_out: Tensor, labels: Tensor | None, *, temperature: float, alpha: float
) -> Tensor:
    """Hinton's KD loss on class logits: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)``.

    The ``T^2`` factor keeps the soft term's gradients on the same scale as the
    cross-entropy's for any temperature. Without labels the loss is the KD term
    alone (at full weight, so ``alpha`` does not shrink the learning signal).
    """
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_out / t, dim=-1),
        F.log_softmax(teacher_out / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)
    if labels is None:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_out, labels)


STUDENT_INITS = ("pruned", "fresh")


def build_student(task: Task, teacher: nn.Module, width: float, *, round_to: int = 8, init: str = "fresh") -> nn.Module:
    """A student of ``width`` times the teacher's channels.

    Width 1.0 gives a copy of the teacher (fine-tuning then starts from it).
    With ``init="fresh"`` and a task that can build a narrower model itself
    (``build_model(width=...)``), that fresh, untrained model is the student:
    the same architecture scaled by its author's rules. Otherwise
    (``init="pruned"``, or no width factory) the teacher is channel-pruned to
    that width (``prune_to_width``), keeping its most important channels: on
    digits such a student reaches 98% in about 30 distillation steps where a
    fresh one needs about 100, which matters for a per-trial budget.
    """
    if not isinstance(width, (int, float)) or math.isnan(width) or not 0.0 < float(width) <= 1.0:
        raise PlanError(f"distill/width: width {width!r} is outside (0, 1]; 1.0 keeps the original width")
    if init not in STUDENT_INITS:
        raise ConfigError(f"student init {init!r} is not known; use one of {', '.join(STUDENT_INITS)}")
    if width == 1.0:
        return clone_model(teacher)
    if init == "fresh" and accepts_width(task):
        return task.build_model(width=float(width))  # type: ignore[call-arg]
    return prune_to_width(teacher, float(width), tuple(task.example_inputs()), round_to=round_to)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    task: Task,
    *,
    config: DistillConfig,
    on_step: Callable[[int, float, nn.Module], None] | None = None,
) -> nn.Module:
    """A copy of ``student`` fine-tuned for ``config.steps`` optimizer steps to match ``teacher`` on the task's data.

    Batches come from ``task.train_batches()``, restarted whenever a pass ends.
    The loss is ``task.distill_loss(student_out, teacher_out, labels)`` when the
    task defines one, else ``default_distill_loss`` on the first output. A task
    may add intermediate-representation terms with ``distill_features``, a
    mapping of module path (``bert.encoder.layer.2``) to weight: each adds
    ``weight * MSE`` between that module's output (its first tensor) in the
    student and in the teacher, which keeps a pruned encoder's hidden states,
    not only its final embedding, on the teacher's. A module whose output shape
    differs between them (a narrower student) is left out with a warning. A task
    may also define ``augment(inputs)``: each batch's inputs are passed through it
    before teacher and student see them, so the student learns the teacher on
    more inputs than the task holds (the teacher supplies the targets; labels go
    on unchanged). The
    teacher runs in eval mode without gradients (its mode is restored after).
    Results are deterministic for a given ``config.seed``; the caller's random
    state is left as it was. Sparsity masks from ``apply_sparsity`` are kept,
    so masked weights stay zero.

    ``on_step(step, loss, model)`` runs after each optimizer step (``step``
    counts from 1); it may evaluate ``model`` (switching it to eval is fine) and
    may raise to stop the run - the exception propagates unchanged. Returns
    the fine-tuned student in eval mode (with ``steps == 0``, an untouched copy). Raises CompressionError if the task
    yields no batches or the loss stops being finite.
    """
    trained = clone_model(student)
    if config.steps == 0:
        return trained.eval()
    loss_fn = _loss_function(task, config)
    features = _feature_weights(task, trained)
    augment = _augmenter(task)
    device = _device_of(trained)
    teacher_was_training = teacher.training
    teacher.eval()
    started = time.perf_counter()
    try:
        # fork_rng restores the caller's CPU generator afterwards: seeding here must not
        # change what the rest of the program draws.
        with torch.random.fork_rng(devices=[]), _outputs(teacher, features) as taught, _outputs(trained, features) as learnt:
            torch.manual_seed(config.seed)
            matched: dict[str, float] | None = None
            params = [p for p in trained.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
            step = 0
            while step < config.steps:
                empty = True
                for inputs, labels in task.train_batches():
                    empty = False
                    inputs = tuple(x.to(device) for x in augment(tuple(inputs)))
                    labels = labels.to(device) if labels is not None else None
                    trained.train()
                    with torch.no_grad():
                        teacher_out = teacher(*inputs)
                    loss = loss_fn(trained(*inputs), teacher_out, labels)
                    if features:
                        if matched is None:
                            matched = _matching(features, learnt, taught)
                        for path, weight in matched.items():
                            loss = loss + weight * F.mse_loss(learnt[path], taught[path])
                    if not torch.isfinite(loss):
                        raise CompressionError(
                            f"distillation diverged at step {step + 1} (loss {loss.item()}); lower DistillConfig.lr ({config.lr})"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    step += 1
                    if on_step is not None:
                        on_step(step, float(loss.item()), trained)
                    if step >= config.steps:
                        break
                if empty:
                    raise CompressionError(f"{type(task).__name__}.train_batches() yielded no batches; distillation needs training data")
                log.debug("distill: pass done at step %d/%d", step, config.steps)
    finally:
        teacher.train(teacher_was_training)
    log.info("distilled %d steps in %.1f s (last loss %.4f)", config.steps, time.perf_counter() - started, loss.item())
    return trained.eval()


def _loss_function(task: Task, config: DistillConfig) -> Callable[[Any, Any, Tensor | None], Tensor]:
    custom = getattr(task, "distill_loss", None)
    if callable(custom):
        return custom

    def loss(student_out: Any, teacher_out: Any, labels: Tensor | None) -> Tensor:
        return default_distill_loss(
            _first(student_out), _first(teacher_out), labels, temperature=config.temperature, alpha=config.alpha
        )

    return loss


def _augmenter(task: Task) -> Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]]:
    """The task's ``augment``, checked on each batch: as many tensors back, each of its input's shape."""
    custom = getattr(task, "augment", None)
    if custom is None:
        return lambda inputs: inputs
    if not callable(custom):
        raise ConfigError(f"{type(task).__name__}.augment must be a method taking a batch's inputs (a tuple of tensors)")

    def augment(inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        try:
            out = custom(inputs)
        except Exception as exc:
            raise TaskError(f"{type(task).__name__}.augment failed: {first_line(exc)}") from exc
        out = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        if len(out) != len(inputs) or any(not isinstance(o, Tensor) or o.shape != i.shape for o, i in zip(out, inputs)):
            got = ", ".join(str(tuple(o.shape)) if isinstance(o, Tensor) else type(o).__name__ for o in out)
            raise TaskError(
                f"{type(task).__name__}.augment must return its inputs' tensors with their shapes "
                f"({', '.join(str(tuple(i.shape)) for i in inputs)}); it returned {got}"
            )
        return out

    return augment


def _feature_weights(task: Task, model: nn.Module) -> dict[str, float]:
    """The task's ``distill_features`` (module path -> weight), checked against the model."""
    features = getattr(task, "distill_features", None) or {}
    if not isinstance(features, Mapping):
        raise ConfigError(
            f"{type(task).__name__}.distill_features must map module paths to loss weights, like "
            f"{{'encoder.layer.1': 1.0}}; got {type(features).__name__}"
        )
    modules = dict(model.named_modules())
    for path, weight in features.items():
        if path not in modules:
            raise ConfigError(f"{type(task).__name__}.distill_features names {path!r}, which the model lacks; use a named_modules() path")
        if not isinstance(weight, (int, float)) or not weight >= 0:
            raise ConfigError(f"{type(task).__name__}.distill_features[{path!r}]: weight {weight!r} must be a number >= 0")
    return {path: float(weight) for path, weight in features.items() if weight}


@contextlib.contextmanager
def _outputs(model: nn.Module, paths: Mapping[str, float]) -> Iterator[dict[str, Tensor]]:
    """The latest output (first tensor) of each named module, refreshed by every forward."""
    captured: dict[str, Tensor] = {}
    modules = dict(model.named_modules())

    def keep(path: str):
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            tensor = first_tensor(out)  # a Hugging Face module returns a ModelOutput mapping
            if tensor is not None:  # one holding none is left out by _matching, with a warning
                captured[path] = tensor

        return hook

    handles = [modules[path].register_forward_hook(keep(path)) for path in paths]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _matching(features: Mapping[str, float], student: Mapping[str, Tensor], teacher: Mapping[str, Tensor]) -> dict[str, float]:
    """The features whose student and teacher outputs have one shape (checked on the first batch)."""
    matched = {}
    for path, weight in features.items():
        if path in student and path in teacher and student[path].shape == teacher[path].shape:
            matched[path] = weight
        else:
            shapes = tuple(tuple(x[path].shape) if path in x else None for x in (student, teacher))
            log.warning("distill_features: %s has shape %s in the student and %s in the teacher; left out", path, *shapes)
    return matched


def _first(out: Any) -> Tensor:
    """The logits of a model output (the first element of a tuple, like ``torch_predictor``)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")
