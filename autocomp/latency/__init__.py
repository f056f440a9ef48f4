"""Latency backends behind one interface: ``measure(onnx_path, profile) -> LatencyResult``."""

from autocomp.latency.base import LatencyBackend, LatencyResult

__all__ = ["LatencyBackend", "LatencyResult"]
