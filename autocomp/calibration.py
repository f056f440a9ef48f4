"""Calibration: build a varied set of ONNX files, time it on the device, fit its cost model.

``calibrate_device("local")`` builds the set — random architectures mixing dense, residual,
depthwise-separable and linear layers at random per-layer widths, plus width/pruned variants of the
built-in residual CNN, each in several precisions (fp32, fp16, all-int8 and per-layer mixed int8)
and at the profile's calibration batch sizes, with chains of stand-alone element-wise kernels
(``build_probes``) and single convs (``build_conv_probes``) — times it with a real backend and fits
and scores the cost model (``latency.calibrate``). It lives outside ``latency/`` because making
the set takes the model zoo, pruning, quantization and export; the latency layer only times and
prices files.

The calibrated profile goes to ``config_dir()/calibrations/<device>.yaml`` and takes precedence
over the shipped file from then on.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import math
import random
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from autocomp.errors import ConfigError, LatencyError
from autocomp.host import host_cpu
from autocomp.latency.calibrate import (
    SETTLE_EXTRA_PASSES, SETTLE_PCT, CalibrationReport, Variant, calibrated_profile, default_precisions, fit_coefficients,
    fit_quality, measure_variants, on_this_host, predict_ms, split_by_base, write_profile,
)

log = logging.getLogger(__name__)


def _zoo_model(rng: random.Random):
    """A random small CNN: stem, 2-5 blocks (residual, inverted-residual, depthwise-separable, plain, pooling), linear head."""
    import torch
    from torch import nn

    def ch(low: int = 8, high: int = 128) -> int:
        return rng.choice([c for c in range(low, high + 1, 8)])

    class Basic(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.short = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.short(x))

    class Inverted(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, hidden: int) -> None:
            super().__init__()
            self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
            self.dw = nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
            self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.skip = stride == 1 and cin == cout

        def forward(self, x):
            y = self.project(self.dw(self.expand(x)))
            return x + y if self.skip else y

    in_channels = rng.choice([1, 1, 3])
    # the scale of the built-in tasks, and now and then a camera-sized input with a stride-2 stem
    size = rng.choice([16, 24, 32, 32, 32, 48, 64, 96] if in_channels == 3 else [16, 24, 32, 32])
    stem_stride = 2 if size >= 48 else 1
    layers: list[nn.Module] = []
    c = ch(8, 64)
    layers += [nn.Conv2d(in_channels, c, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(c), rng.choice([nn.ReLU(), nn.ReLU6()])]
    spatial = math.ceil(size / stem_stride)
    for _ in range(rng.randint(2, 5)):
        kind = rng.choice(["basic", "basic", "inverted", "inverted", "separable", "separable", "separable", "plain", "pool"])
        stride = 2 if spatial > 4 and rng.random() < 0.4 else 1
        if kind == "basic":
            out = ch(8, 128)
            layers.append(Basic(c, out, stride))
        elif kind == "inverted":
            out = ch(8, 96)
            layers.append(Inverted(c, out, stride, hidden=ch(16, 192)))
        elif kind == "separable":
            out = c if rng.random() < 0.5 else ch(8, 128)
            act = rng.choice([nn.ReLU, nn.ReLU6])
            layers.append(separable_block(c, out, stride, activation=act, skip=stride == 1 and out == c and rng.random() < 0.8))
        elif kind == "plain":
            out = ch(8, 128)
            k = rng.choice([1, 3])
            layers += [nn.Conv2d(c, out, k, stride, k // 2, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
        else:
            out, stride = c, 2 if spatial > 4 else 1
            if stride == 2:
                layers.append(rng.choice([nn.MaxPool2d(2), nn.AvgPool2d(2)]))
        spatial = math.ceil(spatial / stride)
        c = out
    head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if rng.random() < 0.5:
        hidden = ch(16, 256)
        head += [nn.Linear(c, hidden), nn.ReLU(), nn.Linear(hidden, 10)]
    else:
        head.append(nn.Linear(c, 10))
    model = nn.Sequential(*layers, *head).eval()
    _randomize_bn(model, rng)
    return model, (1, in_channels, size, size)


def separable_block(cin: int, cout: int, stride: int, *, activation=None, skip: bool = True):
    """MobileNet v1's block: a depthwise 3x3 conv, then a pointwise one, each with BatchNorm and its
    activation (default ReLU6), and a sum of input and output after the activation where ``skip`` and the
    shapes allow it (onnxruntime cannot fuse that sum into the conv)."""
    from torch import nn

    act = activation or nn.ReLU6

    class Separable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dw = nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), act())
            self.pw = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), act())
            self.skip = skip and stride == 1 and cin == cout

        def forward(self, x):
            y = self.pw(self.dw(x))
            return x + y if self.skip else y

    return Separable()


def _randomize_bn(model, rng: random.Random) -> None:
    import torch

    torch.manual_seed(rng.randrange(1 << 30))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)


def _builtin_model(family: str, rng: random.Random, *, prune: bool):
    """A width-scaled and (optionally) per-layer channel-pruned ResNetDigits / MobileNetDigits."""
    import torch

    from autocomp.tasks.models import MobileNetDigits, ResNetDigits

    cls = {"resnet": ResNetDigits, "mobilenet": MobileNetDigits}[family]
    width = rng.choice([0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0])
    torch.manual_seed(rng.randrange(1 << 30))
    model = cls(width=width).eval()
    _randomize_bn(model, rng)
    example = torch.randn(1, 1, 32, 32)
    if prune:
        try:
            from autocomp.compress.prune import prune_channels
            from autocomp.targets import compressible_layers

            layers = [n for n in compressible_layers(model) if not n.startswith("fc")]
            ratios = {n: rng.choice([0.0, 0.25, 0.5, 0.625]) for n in rng.sample(layers, k=max(1, len(layers) // 2))}
            model = prune_channels(model, ratios, (example,), round_to=8).eval()
        except ImportError:  # pruning not available: the width variant still varies channel counts
            pass
    return model, (1, 1, 32, 32), width


def _export(model, input_shape: tuple[int, ...], path: Path) -> Path:
    import torch

    # The legacy exporter is what autocomp.export uses by default, without its output check:
    # these variants are timed, never scored, and the check would double the build time.
    example = (torch.randn(*input_shape),)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, example, str(path), dynamo=False, external_data=False, input_names=["x"],
            output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )
    return path


def quantize_variant(src: Path, dst: Path, *, precision: str, recipe, input_shape: tuple[int, ...], rng: random.Random) -> Path:
    """``src`` at ``precision`` through ``autocomp.compress.quantize.quantize_onnx`` -- what the search ships.

    ``fp16``/``int8``: every layer at 16/8 bits (int8 only where the recipe
    quantizes the op type, the rest fp32); ``mixed``: each layer drawn from
    8/16/32 bits; ``ort-int8``: not ours but onnxruntime's own ``quantize_static``
    with its default recipe (QDQ, s8 activations and weights, every op it
    quantizes, per-tensor or, drawn, per-channel), the layout a user's own
    int8 file most often has. int8 ranges come from random inputs of the right
    shape (the values do not change the latency).
    """
    import onnx

    if precision == "ort-int8":
        return ort_quantized(src, dst, input_shape=input_shape, rng=rng, per_channel=rng.random() < 0.5)

    from autocomp.compress.quantize import quantize_onnx
    from autocomp.export import layer_nodes

    model = onnx.load(str(src), load_external_data=False)
    op_of = {n.name: n.op_type for n in model.graph.node}
    layers = layer_nodes(model)
    int8_ok = {layer for layer, nodes in layers.items() if all(op_of.get(n) in recipe.op_types for n in nodes)}
    bits: dict[str, int] = {}
    for layer in layers:
        if precision == "fp16":
            bits[layer] = 16
        elif precision == "int8":
            bits[layer] = 8 if layer in int8_ok else 32
        else:
            bits[layer] = rng.choice([8, 16, 32] if layer in int8_ok else [16, 32])
    data_rng = np.random.default_rng(rng.randrange(1 << 30))
    calibration = [(data_rng.standard_normal(input_shape).astype(np.float32),) for _ in range(4)] if 8 in bits.values() else []
    return quantize_onnx(src, dst, bits, calibration=calibration, recipe=recipe)


def ort_quantized(src: Path, dst: Path, *, input_shape: tuple[int, ...], rng: random.Random, per_channel: bool = False) -> Path:
    """``src`` quantized by onnxruntime's ``quantize_static`` after its ``quant_pre_process``: its default
    recipe (QDQ, s8 activations and weights), per-tensor unless ``per_channel``; ranges from 4 random inputs."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    data_rng = np.random.default_rng(rng.randrange(1 << 30))
    name = onnx.load(str(src), load_external_data=False).graph.input[0].name

    class Inputs(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = [{name: data_rng.standard_normal(input_shape).astype(np.float32)} for _ in range(4)]

        def get_next(self):
            return self.left.pop() if self.left else None

    prepared = dst.with_name(dst.stem + "-pre.onnx")
    quant_pre_process(str(src), str(prepared))
    try:
        quantize_static(str(prepared), str(dst), Inputs(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)
    return dst


def build_variants(
    out_dir: Path,
    *,
    profile,
    count: int,
    seed: int = 0,
    families: Sequence[str] = ("zoo", "resnet"),
    precisions: Sequence[str] = ("fp32", "fp16", "int8", "mixed"),
    prune: bool = True,
) -> list[Variant]:
    """``count`` base models from ``families`` (cycled), each exported in ``precisions``
    (fp16/int8/mixed made by ``quantize_onnx``, as the search makes them: see ``quantize_variant``).

    Precisions the profile cannot run are skipped; each base model gets one of
    the profile's calibration batch sizes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    runnable = set(profile.precisions)
    variants: list[Variant] = []
    for index in range(count):
        family = families[index % len(families)]
        base = f"{family}-{seed}-{index:03d}"
        if family == "zoo":
            model, shape = _zoo_model(rng)
            description = f"random net {shape[1]}x{shape[2]}x{shape[3]}"
        else:
            model, shape, width = _builtin_model(family, rng, prune=prune)
            description = f"{family} width {width}" + (" pruned" if prune else "")
        batch = rng.choice(list(profile.runtime.calibration_batch_sizes))
        fp32 = _export(model, shape, out_dir / f"{base}-fp32.onnx")
        int8_shape = (batch,) + tuple(shape[1:])
        for precision in precisions:
            if precision == "fp32":
                path = fp32
            else:
                if precision == "fp16" and "fp16" not in runnable or precision != "fp16" and "int8" not in runnable:
                    continue
                if precision == "ort-int8" and family != "zoo":
                    continue  # another tool's layout on the random architectures; ours covers the built-in ones
                path = quantize_variant(
                    fp32, out_dir / f"{base}-{precision}.onnx", precision=precision, recipe=profile.int8_recipe,
                    input_shape=int8_shape, rng=rng,
                )
            variants.append(Variant(path, family, base, precision, batch, description))
    return variants


def model_files(models_dir: Path) -> list[Path]:
    """The .onnx files of ``--models DIR``; a ConfigError naming the fix when there are none."""
    folder = Path(models_dir)
    if not folder.is_dir():
        raise ConfigError(f"--models {folder}: not a folder; give a folder of .onnx files of your model family")
    files = sorted(folder.glob("*.onnx"))
    if not files:
        raise ConfigError(f"--models {folder}: no .onnx files in it; export a few variants of your model (widths, precisions) there")
    return files


def model_variants(models_dir: Path, out_dir: Path, *, profile, precisions: Sequence[str], seed: int = 0) -> list[Variant]:
    """The user's own ONNX files in ``models_dir`` (``autocomp calibrate --models DIR``), each a base model.

    An fp32 file with one float input is also built in each of ``precisions`` (as ``build_variants``
    builds its own) at one of the profile's calibration batch sizes, drawn per file; a file that is
    already quantized, or whose inputs are not one float tensor (token ids), is timed as it is.
    """
    import onnx

    files = model_files(models_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed + 7)
    variants: list[Variant] = []
    for path in files:
        model = onnx.load(str(path), load_external_data=False)
        initializers = {t.name for t in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in initializers]
        quantized = any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "MatMulInteger") for n in model.graph.node)
        one_float = len(inputs) == 1 and inputs[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inputs[0].type.tensor_type.shape.dim] if inputs else []
        dynamic_batch = bool(dims) and dims[0] == 0
        batch = rng.choice(list(profile.runtime.calibration_batch_sizes)) if dynamic_batch else (dims[0] if dims else 1)
        base = f"user-{path.stem}"
        kind = "int8" if quantized else "fp32"
        variants.append(Variant(path, "user", base, kind, batch, f"your file {path.name}"))
        if quantized or not one_float or 0 in dims[1:]:
            continue
        shape = (batch, *dims[1:])
        for precision in precisions:
            needs = "fp16" if precision == "fp16" else "int8"
            if precision == "fp32" or needs not in profile.precisions:
                continue
            dst = out_dir / f"{base}-{precision}.onnx"
            try:
                quantize_variant(path, dst, precision=precision, recipe=profile.int8_recipe, input_shape=shape, rng=rng)
            except Exception as exc:  # a graph the quantizer cannot take: the file itself still joins the set
                log.warning("--models: %s in %s could not be built (%s: %s); timing the file as given", path.name, precision,
                            type(exc).__name__, " ".join(str(exc).split())[:200])
                continue
            variants.append(Variant(dst, "user", base, precision, batch, f"your file {path.name} in {precision}"))
    return variants


# Element-wise probes: (op, channels, height, width, chain length). Networks alone left the fixed cost of
# a call and of a stand-alone element-wise kernel unidentified, because in a conv net both move with the
# conv count: the fit priced them at 0 and 0.1 us, where the probes time a call at about 8 us and a Relu
# over 32x32x32 values at about 4 us on the development machine.
_PROBES = tuple(
    (op, *chw, length)
    for op in ("Relu", "Add")
    for chw in ((8, 16, 16), (32, 32, 32))
    for length in (1, 8)
)


def build_probes(out_dir: Path, *, profile) -> list[Variant]:
    """Chains of fp32 Relu or Add kernels (``_PROBES``) at each calibration batch size: calls and element-wise work alone."""
    import onnx
    from onnx import TensorProto, helper

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    variants = []
    for op, channels, height, width, length in _PROBES:
        shape = ["batch", channels, height, width]
        nodes, last = [], "x"
        for index in range(length):
            inputs = [last] if op == "Relu" else [last, "x"]
            nodes.append(helper.make_node(op, inputs, [f"t{index}"], name=f"{op.lower()}{index}"))
            last = f"t{index}"
        nodes[-1].output[0] = "y"
        graph = helper.make_graph(
            nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8  # readable by every onnxruntime the profiles name
        base = f"probe-{op.lower()}-{channels}x{height}x{width}-{length}"
        path = out_dir / f"{base}.onnx"
        onnx.save(model, path)
        for batch in profile.runtime.calibration_batch_sizes:
            variants.append(Variant(path, "probe", base, "fp32", batch, f"{length} x {op} on {channels}x{height}x{width}"))
    return variants


# Conv probes: (in channels, out channels, kernel, groups, height = width). Single convs identify what
# networks mix up: MLAS's NCHWc kernels load each input value once per 4 output blocks (few output
# channels cost nearly as much as 32), and x86 int8 convs take a generic, slower path unless their
# channel counts fit MLAS's symmetric kernels (``graph._int8_generic``); narrow layers are what pruning makes.
_CONV_PROBES = (
    (3, 8, 3, 1, 32), (4, 16, 3, 1, 32), (8, 8, 3, 1, 32), (8, 32, 3, 1, 16), (12, 8, 3, 1, 32),
    (16, 16, 3, 1, 16), (16, 40, 3, 1, 16), (24, 24, 3, 1, 16), (32, 64, 3, 1, 8),
    (16, 8, 1, 1, 32), (16, 48, 1, 1, 16), (32, 32, 1, 1, 16), (64, 16, 1, 1, 8),
    (8, 8, 3, 8, 32), (12, 12, 3, 12, 16), (16, 16, 3, 16, 32), (48, 48, 3, 48, 16),
)


def build_conv_probes(out_dir: Path, *, profile, precisions: Sequence[str] = ("fp32", "int8")) -> list[Variant]:
    """One conv + ReLU per ``_CONV_PROBES`` entry, in each of ``precisions`` the profile runs, at each calibration batch size."""
    import torch
    from torch import nn

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    variants = []
    for cin, cout, kernel, groups, size in _CONV_PROBES:
        torch.manual_seed(rng.randrange(1 << 30))
        model = nn.Sequential(nn.Conv2d(cin, cout, kernel, 1, kernel // 2, groups=groups), nn.ReLU()).eval()
        base = f"probe-conv-{cin}-{cout}-k{kernel}-g{groups}-{size}"
        shape = (1, cin, size, size)
        fp32 = _export(model, shape, out_dir / f"{base}-fp32.onnx")
        for precision in precisions:
            if precision not in profile.precisions:
                continue
            path = fp32 if precision == "fp32" else quantize_variant(
                fp32, out_dir / f"{base}-{precision}.onnx", precision=precision, recipe=profile.int8_recipe,
                input_shape=shape, rng=rng,
            )
            for batch in profile.runtime.calibration_batch_sizes:
                variants.append(Variant(path, "probe", base, precision, batch, f"{cin}->{cout} {kernel}x{kernel}/{groups} at {size}x{size}"))
    return variants


# Sum probes: (channels, height = width). Two convs, the second with its ReLU6, and the sum of both outputs:
# onnxruntime cannot fuse a sum after an activation, so it adds two NCHWc tensors on its own -- what
# depthwise-separable nets with skips do, at a fixed cost per sum the networks of the set rarely show.
_SUM_PROBES = ((16, 16), (32, 32), (64, 8))


def build_sum_probes(out_dir: Path, *, profile) -> list[Variant]:
    """fp32 conv -> conv + ReLU6 -> sum of both (``_SUM_PROBES``), at each calibration batch size."""
    import torch
    from torch import nn

    class SumAfterActivation(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.first = nn.Conv2d(channels, channels, 1)
            self.second = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU6())

        def forward(self, x):
            y = self.first(x)
            return y + self.second(y)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    variants = []
    for channels, size in _SUM_PROBES:
        torch.manual_seed(channels)
        base = f"probe-sum-{channels}-{size}"
        path = _export(SumAfterActivation(channels).eval(), (1, channels, size, size), out_dir / f"{base}-fp32.onnx")
        for batch in profile.runtime.calibration_batch_sizes:
            variants.append(Variant(path, "probe", base, "fp32", batch, f"conv, conv + ReLU6, sum on {channels}x{size}x{size}"))
    return variants


def calibrate_device(
    device: str,
    *,
    backend: str = "local",
    board=None,
    variants: int = 48,
    held_out: float = 0.25,
    seed: int = 0,
    work_dir: Path | None = None,
    families: Sequence[str] = ("zoo", "resnet"),
    precisions: Sequence[str] | None = None,
    output: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    prune: bool = True,
    passes: int = 2,
    settle_pct: float | None = SETTLE_PCT,
    rounds: int | None = None,
    probes: bool = True,
    threads: int | None = None,
    models: Path | None = None,
    also_time: Sequence[Variant] = (),
) -> CalibrationReport:
    """Build, time and fit; write the calibrated profile (default: the user's calibration dir).

    ``board`` (an ``SshTarget``) replaces the profile's ssh: board for ``backend="ssh"``; the
    calibrated profile keeps the shipped ssh: section (a one-off --board is not remembered).
    ``passes``: times the whole set is timed (each variant keeps its lowest);
    ``settle_pct``: variants whose lowest two times disagree by more are timed
    again (see ``measure_variants``; None: never); ``rounds``: the local backend's rounds over the set
    (``LocalBackend.measure_set``; the ssh backend times files one by one, as its profile says).
    ``threads`` (``--threads``) times with that many intra-op threads instead of the profile's, and the
    calibrated profile then runs with it: a cost model holds at the thread count it was fitted at.
    ``models`` (``--models DIR``): the user's own ONNX files join the set (``model_variants``).
    ``also_time``: files timed in the same interleaved passes but kept out of the fit and its held-out
    figure (a benchmark's test set: a shared host's speed then moves both alike); their rows say
    ``also_timed``.
    """
    from autocomp.latency import get_backend
    from autocomp.latency.estimate import coefficients_for
    from autocomp.profiles import calibration_dir, load_profile, with_threads

    if backend == "estimate":
        raise LatencyError("calibration needs a real backend (local or ssh); the estimate is what it fits")
    if rounds is not None and backend != "local":
        raise ConfigError(f"--rounds is for the local backend, which times its set interleaved; the {backend} backend times "
                          "file by file, as many runs as the profile's runtime.runs says")
    shipped = with_threads(load_profile(device, calibrated=False), threads)
    if backend == "local":
        shipped = on_this_host(shipped)
    if precisions is None:
        precisions = default_precisions(shipped)
    if models is not None:
        model_files(models)  # a wrong folder fails now, not after the set is built
    base = shipped if board is None else dataclasses.replace(shipped, ssh=board)
    options: dict[str, Any] = {}
    if backend == "local" and rounds is not None:
        options["rounds"] = rounds
    timer = get_backend(backend, profile=base, cache=False, **options)
    with tempfile.TemporaryDirectory(prefix="autocomp-calibrate-") as tmp:
        folder = Path(work_dir) if work_dir else Path(tmp)
        built = build_variants(
            folder, profile=base, count=variants, seed=seed, families=families, precisions=precisions, prune=prune
        )
        if models is not None:
            built += model_variants(models, folder / "models", profile=base, precisions=precisions, seed=seed)
        if probes:
            built += build_probes(folder, profile=base)
            built += build_conv_probes(folder, profile=base, precisions=[p for p in precisions if p in ("fp32", "fp16", "int8")])
            built += build_sum_probes(folder, profile=base)
        random.Random(seed).shuffle(built)  # interleave models so a burst of load does not hit one model's variants
        extra = {variant.path for variant in also_time}
        timed = built + list(also_time)
        if also_time:
            random.Random(seed + 1).shuffle(timed)
        measured = measure_variants(
            timed, profile=base, backend=timer, progress=progress, passes=passes, settle_pct=settle_pct
        )
        samples = [s for s in measured if s.variant.path not in extra]
    # probes always train: the held-out figure is about networks
    train, test = split_by_base([s for s in samples if s.variant.family != "probe"], held_out=held_out, seed=seed)
    train += [s for s in samples if s.variant.family == "probe"]
    prior = coefficients_for(base)
    coefficients, unfitted = fit_coefficients(train, prior=prior)
    quality = fit_quality(test, coefficients)
    import onnxruntime

    from autocomp.latency.confidence import coverage, error_by_class, precision_class

    calibration = {
        "date": _dt.date.today().isoformat(),
        "backend": backend if backend != "ssh" else f"ssh:{base.ssh.host if base.ssh else '?'}",
        "base_profile": str(base.path),
        "samples": len(train),
        "held_out": len(test),
        "fit": quality,
        "variants": f"{variants} base models from {', '.join(families)} in {', '.join(precisions)} at batch sizes {list(base.runtime.calibration_batch_sizes)} (seed {seed})"
        + (f", {sum(s.variant.family == 'user' for s in samples)} files of the user's own from {models}" if models is not None else "")
        + (f", {sum(s.variant.family == 'probe' for s in samples)} element-wise and conv probes" if probes else "")
        + f", timed in {passes} passes"
        + (f" and again until the lowest two agree within {settle_pct:g}% (at most {passes + SETTLE_EXTRA_PASSES} times)" if settle_pct else ""),
        "onnxruntime": onnxruntime.__version__,
        "threads": base.runtime.threads,
        **({"cpu": host_cpu()} if backend == "local" else {}),  # a board's CPU is the profile's own
        "coverage": coverage([s.graph for s in train], [s.features for s in train]),
        "error_by_class": error_by_class(
            [precision_class(s.graph.ops) for s in test],
            [(predict_ms(s.features, coefficients) / s.measured_ms - 1.0) * 100.0 for s in test],
        ),
    }
    profile = calibrated_profile(shipped, coefficients=coefficients, unfitted=unfitted, calibration=calibration)
    path = write_profile(profile, output or calibration_dir() / f"{base.name}.yaml")
    rows = [
        {
            "file": s.variant.path.name, "family": s.variant.family, "precision": s.variant.precision,
            "batch_size": s.variant.batch_size, "measured_ms": round(s.measured_ms, 4),
            "estimated_ms": round(predict_ms(s.features, coefficients), 4), "held_out": s in test,
            "passes_ms": [round(ms, 4) for ms in s.passes_ms], **({"also_timed": True} if s.variant.path in extra else {}),
        }
        for s in measured
    ]
    return CalibrationReport(
        device=device, backend=calibration["backend"], samples=len(train), held_out=len(test),
        median_abs_error_pct=quality.get("median_abs_error_pct", float("nan")),
        p90_abs_error_pct=quality.get("p90_abs_error_pct", float("nan")),
        within_10pct=quality.get("within_10pct", float("nan")), path=path, unfitted=unfitted, rows=rows,
        error_by_class=calibration["error_by_class"],
    )
