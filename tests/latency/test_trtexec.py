"""The trtexec report parser, on recorded trtexec output (tests/data/trtexec_*.txt)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autocomp.errors import LatencyError
from autocomp.latency.trtexec import parse_trtexec_output, trtexec_args

DATA = Path(__file__).resolve().parents[1] / "data"


def test_tensorrt_8_2_jetson_nano_summary():
    summary = parse_trtexec_output((DATA / "trtexec_8.2_jetson_nano_fp16.txt").read_text())
    # the "Latency:" line (host latency), not "End-to-End Host Latency", "H2D Latency" or "D2H Latency"
    assert summary.median_ms == pytest.approx(0.381836)
    assert summary.p90_ms == pytest.approx(0.40918)
    assert (summary.min_ms, summary.max_ms, summary.mean_ms) == pytest.approx((0.368164, 0.722412, 0.390741))
    assert summary.runs == 100
    assert summary.gpu_compute_median_ms == pytest.approx(0.300781)
    assert summary.tensorrt_version == "8.2.1"


def test_tensorrt_8_6_several_percentiles():
    summary = parse_trtexec_output((DATA / "trtexec_8.6_orin_int8.txt").read_text())
    assert summary.median_ms == pytest.approx(0.149414)
    assert summary.percentiles_ms == pytest.approx({90.0: 0.160156, 95.0: 0.172119, 99.0: 0.289307})
    assert summary.p90_ms == pytest.approx(0.160156)
    assert summary.runs == 100
    assert summary.tensorrt_version == "8.6.2"


def test_failed_build_reports_trtexec_errors():
    with pytest.raises(LatencyError, match="Failed to parse onnx file") as info:
        parse_trtexec_output((DATA / "trtexec_8.2_failed_parse.txt").read_text())
    assert "\n" not in str(info.value)


def test_missing_p90_says_how_to_get_it():
    text = "[I] Latency: min = 1 ms, max = 3 ms, mean = 1.5 ms, median = 1.4 ms, percentile(99%) = 2.9 ms\n"
    summary = parse_trtexec_output(text)
    assert summary.runs is None and summary.median_ms == 1.4
    with pytest.raises(LatencyError, match="--percentile=90"):
        summary.p90_ms


def test_no_summary_at_all():
    with pytest.raises(LatencyError, match="no 'Latency: min"):
        parse_trtexec_output("&&&& RUNNING TensorRT.trtexec\n[I] H2D Latency: min = 0.1 ms, max = 0.2 ms\n")


def test_args_time_single_inferences_like_onnxruntime():
    args = trtexec_args("/tmp/run dir/model.onnx", runs=50, fp16=True, int8=False)
    assert args[0] == "--onnx=/tmp/run dir/model.onnx"  # one argv element: no shell involved
    assert "--iterations=50" in args and "--avgRuns=1" in args and "--percentile=90" in args
    assert "--duration=0" in args and "--fp16" in args and "--int8" not in args
