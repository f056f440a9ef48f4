"""Benchmark: the accuracy post-training int8 (PTQ) loses and quantization-aware fine-tuning (QAT) recovers.

    python benchmarks/qat.py [--tasks digits digits-mobilenet tests/bert_task.py:make_task] [--steps 60] [--seeds 0 1 2]
                             [--every-layer] [--lr 1e-4] [--width 0.5]

Per task, every layer its search space lets take static int8 (``bits: 8``; the space's ``exclude``
applied) is put in int8, with nothing else changed, and the file is scored in onnxruntime:

* ``fp32``: the task's trained model, exported as it is;
* ``ptq``: that model quantized by onnxruntime's ``quantize_static`` (the device's recipe, ranges
  calibrated on 256 training samples), no fine-tuning: what ``qat/int8: false`` ships for this plan;
* ``fp32+ft``: the model after ``--steps`` steps of distillation in fp32 (with ``--width``, a student that
  narrow), exported in fp32: what the PTQ below starts from;
* ``ptq+ft``: the same after ``--steps`` steps of distillation in fp32 (the fine-tune a PTQ trial gets
  when the plan also prunes; with ``--width``, of a student that narrow), then quantized: the fair PTQ
  baseline at equal training;
* ``ptq+ft2``: as ``ptq+ft``, but fine-tuned on QAT's schedule (two halves, each with its own cosine
  decay), all in fp32: what the schedule alone gives, so ``qat`` against it is what fake quantization gives;
* ``qat``: ``--steps`` steps of distillation, the second half through fake quantization (the first
  too at full width, where the model starts converged; ``qat/int8: true``), then exported with the
  trained ranges.

``ptq+ft`` and ``qat`` give files of the same graph layout (the same QDQ nodes), so they run at the
same speed; their latency is timed side by side (``LocalBackend.measure_set``, the local profile's
threads, each file twice in one interleaved set, the lower median kept) to show it. Prints one table and writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the BERT task file imports its helpers from there


def int8_layers(task, teacher, profile, *, every: bool = False) -> list[str]:
    """The layers the task's space lets take static int8 (``every``: with its ``exclude`` dropped too)."""
    from dataclasses import replace

    from autocomp.knobs import KNOBS
    from autocomp.setup import auto_space

    _, space = auto_space(teacher)
    if every:
        space = replace(space, exclude=())
    distributions = space.distributions(teacher, supported_bits=profile.supported_bits, example_inputs=task.example_inputs())
    prefix = KNOBS["bits"].prefix
    return [name[len(prefix):] for name, dist in distributions.items() if name.startswith(prefix) and 8 in dist.choices]


def run_task(
    spec: str, *, steps: int, seed: int, work: Path, every: bool = False, lr: float | None = None, width: float = 1.0
) -> dict:
    import torch

    from autocomp.compress.distill import DistillConfig, distill
    from autocomp.latency.local import LocalBackend
    from autocomp.pipeline import build_artifact, compress_model
    from autocomp.plan import CompressionPlan
    from autocomp.profiles import load_profile
    from autocomp.runtime import evaluate_onnx
    from autocomp.tasks import load_task

    profile = load_profile("local")
    task = load_task(spec)
    teacher = task.build_model()
    layers = int8_layers(task, teacher, profile, every=every)
    recipe = profile.int8_recipe
    finetune = DistillConfig(steps=steps, seed=seed, **({} if lr is None else {"lr": lr}))
    plans = {
        "fp32": (CompressionPlan(), teacher),
        "ptq": (CompressionPlan.of(bits={layer: 8 for layer in layers}), teacher),
    }
    narrow = {"distill": {"width": width}} if width < 1.0 else {}
    torch.manual_seed(seed)
    if narrow:  # a narrower student, distilled in fp32, then quantized: what a PTQ trial of this plan ships
        tuned = compress_model(task, teacher, CompressionPlan.of(**narrow), finetune=finetune, recipe=profile.int8_recipe)
    else:
        tuned = distill(teacher, teacher, task, config=finetune)  # a fine-tuned copy, in fp32
    plans["fp32+ft"] = (CompressionPlan.of(**narrow), tuned)  # what PTQ starts from: the loss is ptq+ft against it
    plans["ptq+ft"] = (CompressionPlan.of(bits={layer: 8 for layer in layers}, **narrow), tuned)
    # QAT's schedule (two halves, each with its own cosine decay) in fp32, then PTQ: what the schedule alone gives
    torch.manual_seed(seed)
    half = DistillConfig(steps=steps // 2, seed=seed, lr=finetune.lr)
    if narrow:
        first = compress_model(task, teacher, CompressionPlan.of(**narrow), finetune=half, recipe=profile.int8_recipe)
    else:
        first = distill(teacher, teacher, task, config=half)
    second = distill(first, teacher, task, config=replace(half, steps=steps - steps // 2))
    plans["ptq+ft2"] = (CompressionPlan.of(bits={layer: 8 for layer in layers}, **narrow), second)
    torch.manual_seed(seed)
    qat_plan = CompressionPlan.of(bits={layer: 8 for layer in layers}, qat={"int8": True}, **narrow)
    started = time.perf_counter()
    plans["qat"] = (qat_plan, compress_model(task, teacher, qat_plan, finetune=finetune, recipe=recipe))
    qat_s = time.perf_counter() - started
    row: dict = {
        "task": spec, "seed": seed, "width": width, "int8_layers": len(layers), "steps": steps, "lr": finetune.lr,
        "qat_finetune_s": round(qat_s, 1),
    }
    files = {}
    for name, (plan, model) in plans.items():
        artifact = build_artifact(task, model, plan, work / f"{Path(spec).stem}-{seed}-{name}", recipe=recipe)
        files[name] = artifact.onnx_path
        row[name] = evaluate_onnx(task, artifact.onnx_path)
    names = ("ptq+ft", "qat", "fp32")  # ptq+ft2 has ptq+ft's layout
    timed = LocalBackend().measure_set([(files[name], profile) for name in names * 2])  # each file twice, interleaved
    best = {name: min(timed[i].median_ms, timed[i + len(names)].median_ms) for i, name in enumerate(names)}
    row["ptq_ft_ms"], row["qat_ms"], row["fp32_ms"] = (round(best[name], 4) for name in names)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["digits", "digits-mobilenet", "tests/bert_task.py:make_task"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--lr", type=float, default=None, help="Fine-tuning learning rate (default: DistillConfig's).")
    parser.add_argument("--width", type=float, default=1.0, help="Student width of the plan (1.0: the model itself).")
    parser.add_argument("--every-layer", action="store_true", help="int8 on every layer, the space's exclude (first, last) too.")
    parser.add_argument("--out", type=Path, default=Path("qat-results.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="autocomp-qat-") as tmp:
        for spec in args.tasks:
            for seed in args.seeds:
                row = run_task(spec, steps=args.steps, seed=seed, work=Path(tmp), every=args.every_layer, lr=args.lr, width=args.width)
                rows.append(row)
                print(json.dumps(row), flush=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\n{'task':34} seed width  fp32     ptq      fp32+ft  ptq+ft   ptq+ft2  qat      ms ptq+ft / qat / fp32")
    for r in rows:
        print(f"{r['task']:34} {r['seed']:4} {r['width']:5}  {r['fp32']:.4f}   {r['ptq']:.4f}   {r['fp32+ft']:.4f}   {r['ptq+ft']:.4f}   "
              f"{r['ptq+ft2']:.4f}   {r['qat']:.4f}   {r['ptq_ft_ms']:.3f} / {r['qat_ms']:.3f} / {r['fp32_ms']:.3f}")


if __name__ == "__main__":
    main()
