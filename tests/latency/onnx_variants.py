"""ONNX files for the latency tests: one tiny model in three precisions, and a two-input encoder."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from tiny_models import TinyEncoder, TinyResNet


def export(model: torch.nn.Module, inputs: tuple, path: Path, *, names: list[str], axes: dict | None = None) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), inputs, str(path), dynamo=False, external_data=False, input_names=names,
            dynamic_axes=axes or {n: {0: "batch"} for n in names},
        )
    return path


def resnet_precisions(folder: Path, *, width: float = 4.0) -> dict[str, Path]:
    """TinyResNet as fp32, fp16 and QDQ int8 files (same graph, three precisions)."""
    from autocomp.latency.calibrate import to_fp16, to_int8
    from autocomp.profiles import Int8Recipe

    torch.manual_seed(0)
    fp32 = export(TinyResNet(width=width), (torch.rand(1, 1, 16, 16),), folder / "resnet-fp32.onnx", names=["x"])
    return {
        "fp32": fp32,
        "fp16": to_fp16(fp32, folder / "resnet-fp16.onnx"),
        "int8": to_int8(fp32, folder / "resnet-int8.onnx", recipe=Int8Recipe(), input_shape=(1, 1, 16, 16)),
    }


def encoder(folder: Path) -> Path:
    """TinyEncoder (token ids + attention mask: two inputs, symbolic batch)."""
    torch.manual_seed(0)
    ids = torch.randint(0, 32, (1, 12))
    mask = torch.ones(1, 12, dtype=torch.long)
    axes = {n: {0: "batch", 1: "tokens"} for n in ("ids", "mask")}
    return export(TinyEncoder(), (ids, mask), folder / "encoder.onnx", names=["ids", "mask"], axes=axes)
