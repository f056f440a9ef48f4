"""The cost model prices the kernels onnxruntime really runs: its reading of a graph against the optimized graph."""

from __future__ import annotations

import pytest

from autocomp.latency.calibrate import build_variants
from autocomp.latency.graph import analyze
from autocomp.latency.kernels import host_nchwc_block, kernel_mismatch, runtime_kernels, simulated_kernels
from autocomp.profiles import load_profile


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kernels")
    profile = load_profile("local", calibrated=False)
    built = build_variants(folder, profile=profile, count=2, seed=11, families=("resnet", "mobilenet"))
    return built


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "mixed"])
def test_kernel_lists_match_onnxruntime(variants, precision):
    """Fusions, NCHWc reorders, int8 layout transposes and inserted Casts, kernel kind by kernel kind."""
    block = host_nchwc_block()
    chosen = [v for v in variants if v.precision == precision]
    assert {v.family for v in chosen} == {"resnet", "mobilenet"}
    for variant in chosen:
        graph = analyze(variant.path, batch_size=variant.batch_size, fp16_as_fp32=True, nchwc_block=block)
        runtime = runtime_kernels(variant.path)
        mismatch = kernel_mismatch(simulated_kernels(graph), runtime)
        if precision == "mixed":
            # Known gaps at fp16/int8/fp32 borders: Casts onnxruntime keeps around fp16 data-movement ops,
            # DequantizeLinear it duplicates per consumer, a ReLU it fuses, Transposes it places otherwise.
            # The convs, the quantizations and the NCHWc reorders match.
            assert not {"mac", "QuantizeLinear", "ReorderInput", "ReorderOutput"} & set(mismatch), variant.path.name
            assert abs(sum(simulated_kernels(graph).values()) - sum(runtime.values())) <= 0.15 * sum(runtime.values())
        else:
            assert mismatch == {}, variant.path.name
        if block and precision in ("fp16", "mixed"):
            assert runtime["ReorderOutput"] >= 1  # the check sees the layout pass, not only the conv count


def test_without_nchwc_there_are_no_reorders(variants):
    graph = analyze(next(v for v in variants if v.precision == "mixed").path, fp16_as_fp32=True, nchwc_block=0)
    assert not any(op.op_type.startswith("Reorder") for op in graph.ops)


def test_fp16_clip_at_a_region_border_runs_in_fp16(tmp_path):
    """A 16-bit conv + ReLU6 before an fp32 conv: onnxruntime keeps the Clip in fp16 (a scalar loop on x86)
    between two Casts; the estimate prices it as such and its kernel list matches onnxruntime's.
    (Inside an all-fp16 graph from this exporter onnxruntime fuses the Clip into the conv, which the
    estimate does not yet: a known gap, see test_kernel_lists_match_onnxruntime for the graphs it matches.)"""
    import torch
    from torch import nn

    from autocomp.compress.quantize import quantize_onnx
    from autocomp.export import export_onnx

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
    ).eval()
    fp32 = export_onnx(model, (torch.rand(1, 1, 16, 16),), tmp_path / "m.onnx")
    mixed = quantize_onnx(fp32, tmp_path / "mixed.onnx", {"0": 16, "3": 32}, calibration=[])
    graph = analyze(mixed, fp16_as_fp32=True, nchwc_block=host_nchwc_block())
    assert [op.kind for op in graph.ops if op.op_type == "Clip"] == ["scalar"]  # the border Clip, in fp16
    assert [op.fused for op in graph.ops if op.op_type == "Conv"] == [(), ("Clip",)]  # the fp32 conv fuses its own
    assert kernel_mismatch(simulated_kernels(graph), runtime_kernels(mixed)) == {}


@pytest.mark.parametrize("channels", [3, 4, 6, 10, 12])
def test_pruned_channel_counts_get_onnxruntime_layout(tmp_path, channels):
    """Pruning leaves counts like 3, 6 or 12 channels. onnxruntime blocks a conv whose channels are a
    multiple of 4 (not only of the block), and a dense conv with fewer input channels than a block reads
    plain NCHW, one kernel call per output row (counted in ``rows``, 1x1 or not)."""
    import torch
    from torch import nn

    from autocomp.export import export_onnx

    block = host_nchwc_block()
    if not block:
        pytest.skip("this CPU has no NCHWc layout")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, channels, 1), nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels), nn.ReLU(),  # depthwise
        nn.Conv2d(channels, 16, 1), nn.ReLU(),
        nn.Conv2d(16, 8, 3, padding=1),
    ).eval()
    path = export_onnx(model, (torch.rand(1, 1, 16, 16),), tmp_path / "m.onnx")
    graph = analyze(path, batch_size=2, fp16_as_fp32=True, nchwc_block=block)
    assert kernel_mismatch(simulated_kernels(graph), runtime_kernels(path)) == {}
    convs = [op for op in graph.ops if op.kind in ("conv", "dwconv")]
    plain_reader = convs[3]  # the 1x1 conv after the pruned layer
    assert plain_reader.rows == (2 * 16 if channels < block else 0)
