"""Benchmark: what weight sharing (the ``cluster`` knob) buys: the ONNX file deflated, against its raw size and accuracy.

    python benchmarks/weight_sharing.py [--tasks digits digits-mobilenet] [--bits 6 4] [--steps 60]

Per task, every layer but the first and the last shares 2^b values (``cluster/<layer>: b``), fine-tuned
``--steps`` steps with the shared values training; the file's raw bytes, its bytes deflated (zlib level 9,
the search's size objective) and its accuracy in onnxruntime, beside the uncompressed model's.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    from autocomp.compress.distill import DistillConfig
    from autocomp.pipeline import build_artifact, compress_model
    from autocomp.plan import CompressionPlan
    from autocomp.profiles import load_profile
    from autocomp.runtime import evaluate_onnx
    from autocomp.targets import compressible_layers
    from autocomp.tasks import load_task

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["digits", "digits-mobilenet"])
    parser.add_argument("--bits", type=int, nargs="+", default=[6, 4])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    recipe = load_profile("local").int8_recipe
    print(f"{'task':18} {'plan':14} {'raw bytes':>10} {'deflated':>10} {'smaller':>8} {'accuracy':>9}")
    with tempfile.TemporaryDirectory(prefix="autocomp-sharing-") as tmp:
        for spec in args.tasks:
            task = load_task(spec)
            teacher = task.build_model()
            layers = compressible_layers(teacher)[1:-1]
            base = build_artifact(task, teacher, CompressionPlan(), Path(tmp) / f"{spec}-fp32", recipe=recipe)
            zipped = base.stats.zip_bytes
            print(f"{spec:18} {'fp32':14} {base.stats.size_bytes:10} {zipped:10} {1.0:8.2f} {evaluate_onnx(task, base.onnx_path):9.4f}")
            for bits in args.bits:
                plan = CompressionPlan.of(cluster={layer: bits for layer in layers})
                model = compress_model(task, teacher, plan, finetune=DistillConfig(steps=args.steps), recipe=recipe)
                artifact = build_artifact(task, model, plan, Path(tmp) / f"{spec}-{bits}", recipe=recipe)
                print(f"{spec:18} {f'{2 ** bits} values':14} {artifact.stats.size_bytes:10} {artifact.stats.zip_bytes:10} "
                      f"{zipped / artifact.stats.zip_bytes:8.2f} {evaluate_onnx(task, artifact.onnx_path):9.4f}", flush=True)


if __name__ == "__main__":
    main()
