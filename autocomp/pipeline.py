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

from autocomp import knobs
from autocomp.compress.distill import DistillConfig, distill
from autocomp.compress.prune import channel_counts
from autocomp.export import export_onnx
from autocomp.plan import CompressionPlan
from autocomp.profiles import Int8Recipe
from autocomp.runtime import OnnxStats, evaluate_onnx, onnx_stats, training_samples
from autocomp.split import device_part
from autocomp.errors import ExportError
from autocomp.tasks import Task, score, torch_predictor

log = logging.getLogger(__name__)

OnStep = Callable[[int, float, nn.Module], None]
OnPhase = Callable[[str], None]

# Real samples the export is checked on beside the example input (a few batches, a few dozen samples).
EXPORT_CHECK_BATCHES = 3
EXPORT_CHECK_SAMPLES = 96
METRIC_TOLERANCE = 0.01
"""How far an fp32 ONNX file's metric may sit from PyTorch's (absolute, or relative above 1) before the
export is called wrong: argmax ties may flip a sample, a wrong trace moves the metric by far more."""

@dataclass(frozen=True)
class Artifact:
    """An exported (and possibly quantized) ONNX file with its measured facts."""

    onnx_path: Path
    stats: OnnxStats
    channels: dict[str, int]
    exact: bool = True  # the exported graph as is: no ONNX-stage knob rewrote it, so it must score as PyTorch does
    device: OnnxStats | None = None  # a split plan's part on the device (``split.device_part``); None: the whole file

    @property
    def on_device(self) -> OnnxStats:
        """What the device stores: the whole file, or a split plan's edge part (nothing for the ``server`` end)."""
        return self.stats if self.device is None else self.device

    def summary(self) -> dict[str, Any]:
        """The file's record: the sizes and weights of what the device stores, the whole file's hash and path."""
        return {
            "size_bytes": self.on_device.size_bytes, "zip_bytes": self.on_device.zip_bytes, "params": self.on_device.params,
            "onnx_sha256": self.stats.sha256, "artifact": str(self.onnx_path),
        }


def compress_model(
    task: Task,
    teacher: nn.Module,
    plan: CompressionPlan,
    *,
    finetune: DistillConfig,
    round_to: int = 8,
    pipeline: tuple[str, ...] = knobs.DEFAULT_PIPELINE,
    student: str = "pruned",
    recipe: Int8Recipe | None = None,
    on_step: OnStep | None = None,
) -> nn.Module:
    """The PyTorch stage of a plan: a new, fine-tuned model (the teacher is left untouched).

    The torch-stage knobs of ``pipeline`` apply the plan in order, then the student is distilled
    from the teacher. A ``finetune`` entry between knobs fine-tunes there too (``[prune, finetune,
    distill]``: the pruned teacher recovers before it is narrowed); the step budget is shared
    equally by the fine-tunes that have something to recover from. ``student`` is how a narrower
    student starts (see ``build_student``). With ``finetune.steps == 0`` only the structure is
    built, which is how an exported trial's architecture is rebuilt.
    """
    plan.validate(teacher)
    stages = torch_stages(pipeline, plan)
    if not any(stages):
        return teacher  # nothing for the PyTorch stage (bit-widths act on the ONNX graph): nothing to fine-tune
    work = knobs.TorchWork(
        task=task, teacher=teacher, model=teacher, example_inputs=tuple(task.example_inputs()), round_to=round_to, student=student,
        plan=plan, recipe=recipe,
    )
    steps = finetune.steps // len(stages)
    for index, stage in enumerate(stages):
        for name in stage:
            work = knobs.KNOBS[name].apply(plan[name], work)
        share = finetune.steps - steps * index if index == len(stages) - 1 else steps  # the last takes the remainder
        if share:
            work = replace(work, model=distill(work.model, teacher, task, config=replace(finetune, steps=share), on_step=on_step))
    return _finished(work)


def finetune_further(
    task: Task,
    teacher: nn.Module,
    plan: CompressionPlan,
    model: nn.Module,
    *,
    finetune: DistillConfig,
    pipeline: tuple[str, ...] = knobs.DEFAULT_PIPELINE,
    recipe: Int8Recipe | None = None,
    on_step: OnStep | None = None,
) -> nn.Module:
    """A copy of ``model`` (the plan's model, trained) fine-tuned ``finetune.steps`` more steps under what its
    trial trained under: every holding knob the plan uses (``Knob.holds``: sparsity's masks, shared values,
    fake quantization) is applied again first, in the pipeline's order, and taken off after. Without them a
    further fine-tune in plain fp32 would fill the zeros, spread the shared values and train past the int8
    ranges the export then uses."""
    work = knobs.TorchWork(
        task=task, teacher=teacher, model=model, example_inputs=tuple(task.example_inputs()), round_to=1, plan=plan, recipe=recipe,  # round_to: no structure knob runs here
    )
    for name in pipeline:
        if name != knobs.FINETUNE and knobs.KNOBS[name].holds and plan.changes(name):
            work = knobs.KNOBS[name].apply(plan[name], work)
    return _finished(replace(work, model=distill(work.model, teacher, task, config=finetune, on_step=on_step)))


def _finished(work: knobs.TorchWork) -> nn.Module:
    """The model after its last fine-tune, with what the knobs held during it taken off (``TorchWork.finish``)."""
    model = work.model
    for finish in work.finish:
        model = finish(model)
    return model


def torch_stages(pipeline: tuple[str, ...], plan: CompressionPlan) -> list[list[str]]:
    """The torch-stage knobs with work to do, grouped by the fine-tunes between them (empty groups dropped)."""
    stages: list[list[str]] = [[]]
    for entry in pipeline:
        if entry == knobs.FINETUNE:
            stages.append([])
        elif knobs.KNOBS[entry].stage == "torch" and plan.changes(entry):
            stages[-1].append(entry)
    return [stage for stage in stages if stage]


def build_artifact(
    task: Task,
    model: nn.Module,
    plan: CompressionPlan,
    out_dir: Path,
    *,
    recipe: Int8Recipe,
    calibration_samples: int = 256,
    pipeline: tuple[str, ...] = knobs.DEFAULT_PIPELINE,
) -> Artifact:
    """Export ``model`` and apply the plan's ONNX-stage knobs (per-layer bit-widths); returns ``out_dir/model.onnx``."""
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
    work = onnx_stage(plan, knobs.OnnxWork(
        task=task, model=model, onnx_path=fp32_path, out_dir=out_dir, recipe=recipe, calibration_samples=calibration_samples,
    ), pipeline=pipeline)
    shutil.move(work.onnx_path, final)
    for leftover in out_dir.glob("model_*.onnx"):  # the files the ONNX stage started from
        leftover.unlink()
    return Artifact(final, onnx_stats(final), channel_counts(model), exact=work.onnx_path == fp32_path, device=device_part(final) if work.cut else None)


def onnx_stage(plan: CompressionPlan, work: knobs.OnnxWork, *, pipeline: tuple[str, ...]) -> knobs.OnnxWork:
    """The plan's ONNX-stage knobs with work to do, in ``pipeline`` order, on ``work.onnx_path``."""
    for name in pipeline:
        if name != knobs.FINETUNE and knobs.KNOBS[name].stage == "onnx" and plan.changes(name):
            work = knobs.KNOBS[name].apply(plan[name], work)
    return work


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
            **self.artifact.summary(),
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
    pipeline: tuple[str, ...] = knobs.DEFAULT_PIPELINE,
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
        task, teacher, plan, finetune=finetune, round_to=round_to, pipeline=pipeline, student=student, recipe=recipe, on_step=on_step
    )
    compressed = time.perf_counter()
    phase("export")
    artifact = build_artifact(task, model, plan, out_dir, recipe=recipe, pipeline=pipeline)
    exported = time.perf_counter()
    phase("evaluate")
    accuracy, torch_accuracy = score_artifact(task, model, artifact, what="the compressed model in PyTorch")
    timings = {"finetune": compressed - started, "export": exported - compressed, "evaluate": time.perf_counter() - exported}
    log.info("plan scored: accuracy %.4f, %d bytes", accuracy, artifact.stats.size_bytes)
    return PlanResult(plan, accuracy, artifact, model, torch_accuracy, timings)


def score_artifact(task: Task, model: nn.Module, artifact: Artifact, *, what: str) -> tuple[float, float]:
    """The task's metric on the ONNX file and on the PyTorch model it came from; an fp32 file must agree."""
    accuracy = evaluate_onnx(task, artifact.onnx_path)
    torch_accuracy = score(task, torch_predictor(model), what=what)
    if artifact.exact:
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
