"""One compression plan, end to end: student -> prune -> sparsify -> distil -> ONNX -> quantize -> score.

The artifact that ships is the one that is scored: accuracy comes from the
quantized ONNX file run in onnxruntime, never from the PyTorch model.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from torch import nn

from autocomp.compress.distill import DistillConfig, build_student, distill
from autocomp.compress.depth import remove_blocks, removed_blocks
from autocomp.compress.heads import prune_heads
from autocomp.compress.prune import channel_counts, prune_channels, prune_to_width
from autocomp.compress.quantize import quantize_onnx
from autocomp.compress.sparsity import apply_sparsity, make_sparsity_permanent
from autocomp.export import export_onnx
from autocomp.plan import CompressionPlan
from autocomp.profiles import Int8Recipe
from autocomp.runtime import OnnxStats, calibration_inputs, evaluate_onnx, onnx_stats, training_samples
from autocomp.errors import ExportError
from autocomp.tasks import Task, score, torch_predictor

log = logging.getLogger(__name__)

OnStep = Callable[[int, float, nn.Module], None]
OnPhase = Callable[[str], None]

# Real samples the export is checked on beside the example input (a few batches, a few dozen samples).
EXPORT_CHECK_BATCHES = 3
EXPORT_CHECK_SAMPLES = 96
DEPTH_SAMPLES = 128
"""Training samples the teacher runs on to rank its blocks for depth pruning (deterministic, so an exported
trial's structure is rebuilt with the same blocks)."""
METRIC_TOLERANCE = 0.01
"""How far an fp32 ONNX file's metric may sit from PyTorch's (absolute, or relative above 1) before the
export is called wrong: argmax ties may flip a sample, a wrong trace moves the metric by far more."""

@dataclass(frozen=True)
class Artifact:
    """An exported (and possibly quantized) ONNX file with its measured facts."""

    onnx_path: Path
    stats: OnnxStats
    channels: dict[str, int]


def compress_model(
    task: Task,
    teacher: nn.Module,
    plan: CompressionPlan,
    *,
    finetune: DistillConfig,
    round_to: int = 8,
    order: tuple[str, ...] = ("distill", "prune", "quantize"),
    student: str = "pruned",
    on_step: OnStep | None = None,
) -> nn.Module:
    """The PyTorch stage of a plan: a new, fine-tuned model (the teacher is left untouched).

    ``order`` decides whether the student is narrowed before the per-layer pruning
    (``distill, prune``: one distillation at the end) or after it (``prune, distill``:
    the pruned teacher is fine-tuned first, then narrowed and distilled again, each
    with half the step budget). ``student`` is how a narrower student starts
    (see ``build_student``). With ``finetune.steps == 0`` only the structure is
    built, which is how an exported trial's architecture is rebuilt.
    """
    plan.validate(teacher)
    example = task.example_inputs()
    structural = (plan.prune, plan.sparsity, plan.heads, plan.depth)
    if plan.width == 1.0 and not any(any(ratios.values()) for ratios in structural):
        return teacher  # bit-widths act on the ONNX graph; nothing to fine-tune
    prune_ratios = {layer: ratio for layer, ratio in plan.prune.items() if ratio > 0}
    head_ratios = {path: ratio for path, ratio in plan.heads.items() if ratio > 0}
    depth_ratios = {path: ratio for path, ratio in plan.depth.items() if ratio > 0}
    # the teacher decides which blocks go, so a narrower student loses the same ones
    removed = removed_blocks(teacher, depth_ratios, training_samples(task, max_samples=DEPTH_SAMPLES)) if depth_ratios else []

    def prune_structure(model: nn.Module) -> nn.Module:
        """Whole blocks first, then attention heads (their own dependency), then channels; the head and
        channel ratios of a removed block are moot."""
        if removed:
            model = remove_blocks(model, removed)
        present = dict(model.named_modules())
        heads = {path: ratio for path, ratio in head_ratios.items() if path in present}
        channels = {layer: ratio for layer, ratio in prune_ratios.items() if layer in present}
        if heads:
            model = prune_heads(model, heads, example)
        return prune_channels(model, channels, example, round_to=round_to) if channels else model

    steps = finetune.steps
    if order[0] == "prune" and (prune_ratios or head_ratios or removed) and plan.width < 1.0:
        steps = finetune.steps // 2
        model = prune_structure(teacher)
        if steps:
            model = distill(model, teacher, task, config=replace(finetune, steps=steps), on_step=on_step)
        model = prune_to_width(model, plan.width, example, round_to=round_to)
    else:
        model = prune_structure(build_student(task, teacher, plan.width, round_to=round_to, init=student))
    present = dict(model.named_modules())
    sparsity = {layer: ratio for layer, ratio in plan.sparsity.items() if ratio > 0 and layer in present}
    if sparsity:
        model = apply_sparsity(model, sparsity)
    if steps:
        model = distill(model, teacher, task, config=replace(finetune, steps=steps), on_step=on_step)
    return make_sparsity_permanent(model) if sparsity else model


def build_artifact(
    task: Task,
    model: nn.Module,
    plan: CompressionPlan,
    out_dir: Path,
    *,
    recipe: Int8Recipe,
    calibration_samples: int = 256,
) -> Artifact:
    """Export ``model`` and apply the plan's per-layer bit-widths; returns ``out_dir/model.onnx``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / "model.onnx"
    example = task.example_inputs()
    check = [
        batch for batch in training_samples(task, max_samples=EXPORT_CHECK_SAMPLES, max_batches=EXPORT_CHECK_BATCHES)
        if _same_layout(batch, example)  # the file takes the example's shapes but for the batch axis
    ]
    # export redirects the process's stdout/stderr and quantization changes its working directory for a
    # moment: safe because a process runs one trial at a time (``--jobs`` runs processes, ``autocomp.workers``)
    fp32_path = export_onnx(model, example, out_dir / "model_fp32.onnx", check_batches=check)
    bits = live_bits(plan, model)
    if any(b != 32 for b in bits.values()):
        calibration = calibration_inputs(task, max_samples=calibration_samples)
        quantize_onnx(fp32_path, final, bits, calibration=calibration, recipe=recipe)
        fp32_path.unlink()
    else:
        shutil.move(fp32_path, final)
    return Artifact(final, onnx_stats(final), channel_counts(model))


def live_bits(plan: CompressionPlan, model: nn.Module) -> dict[str, int | str]:
    """The plan's precisions of the layers ``model`` still has (a block depth pruning removed took its own)."""
    present = dict(model.named_modules())
    return {layer: bits for layer, bits in plan.bits.items() if layer in present}


def _same_layout(batch: tuple[Any, ...], example: tuple[Any, ...]) -> bool:
    """True when ``batch`` has the example inputs' count, dtypes and shapes except the batch size."""
    return len(batch) == len(example) and all(
        b.dtype == e.dtype and tuple(b.shape[1:]) == tuple(e.shape[1:]) for b, e in zip(batch, example)
    )


@dataclass(frozen=True)
class PlanResult:
    plan: CompressionPlan
    accuracy: float
    artifact: Artifact
    model: nn.Module
    torch_accuracy: float  # the PyTorch model's metric before quantization (what model.pt2 scores)
    timings_s: dict[str, float] = field(default_factory=dict)  # finetune, export (incl. quantize), evaluate

    def summary(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "torch_accuracy": self.torch_accuracy,
            "size_bytes": self.artifact.stats.size_bytes,
            "params": self.artifact.stats.params,
            "onnx_sha256": self.artifact.stats.sha256,
            "artifact": str(self.artifact.onnx_path),
        }


def run_plan(
    task: Task,
    teacher: nn.Module,
    plan: CompressionPlan,
    out_dir: Path,
    *,
    finetune: DistillConfig,
    recipe: Int8Recipe,
    round_to: int = 8,
    order: tuple[str, ...] = ("distill", "prune", "quantize"),
    student: str = "pruned",
    on_step: OnStep | None = None,
    on_phase: OnPhase | None = None,
) -> PlanResult:
    """Compress, export, quantize and score one plan; accuracy is measured on the ONNX file.

    ``on_phase`` hears ``"finetune"``, ``"export"`` and ``"evaluate"`` as each starts (the
    search records it, so a killed trial says what it was doing).
    """
    phase = on_phase or (lambda name: None)
    started = time.perf_counter()
    phase("finetune")
    model = compress_model(
        task, teacher, plan, finetune=finetune, round_to=round_to, order=order, student=student, on_step=on_step
    )
    compressed = time.perf_counter()
    phase("export")
    artifact = build_artifact(task, model, plan, out_dir, recipe=recipe)
    exported = time.perf_counter()
    phase("evaluate")
    accuracy, torch_accuracy = score_artifact(task, model, plan, artifact, what="the compressed model in PyTorch")
    timings = {"finetune": compressed - started, "export": exported - compressed, "evaluate": time.perf_counter() - exported}
    log.info("plan scored: accuracy %.4f, %d bytes", accuracy, artifact.stats.size_bytes)
    return PlanResult(plan, accuracy, artifact, model, torch_accuracy, timings)


def score_artifact(task: Task, model: nn.Module, plan: CompressionPlan, artifact: Artifact, *, what: str) -> tuple[float, float]:
    """The task's metric on the ONNX file and on the PyTorch model it came from; an fp32 file must agree."""
    accuracy = evaluate_onnx(task, artifact.onnx_path)
    torch_accuracy = score(task, torch_predictor(model), what=what)
    if not any(bits != 32 for bits in live_bits(plan, model).values()):
        check_same_metric(onnx=accuracy, torch=torch_accuracy, path=artifact.onnx_path)
    return accuracy, torch_accuracy


def check_same_metric(*, onnx: float, torch: float, path: Path) -> None:
    """An fp32 ONNX file must score what its PyTorch model scores; otherwise the export is wrong, not the plan."""
    if abs(onnx - torch) > METRIC_TOLERANCE * max(1.0, abs(torch)):
        raise ExportError(
            f"{path.name} scores {onnx:.4f} in onnxruntime but the same model scores {torch:.4f} in PyTorch: the "
            "export computes something else on real data; likely data-dependent Python control flow in forward() "
            "(an if on tensor values) or a value baked in at trace time: make it tensor code (torch.where) or use "
            "the dynamo exporter"
        )
