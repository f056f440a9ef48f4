"""Device profiles: ``device_profiles/*.yaml`` -> frozen ``DeviceProfile``.

A profile says what a device rewards (which precisions run faster, whether
sparsity pays, the channel multiple pruning should round to), how to time a
model on it, and the coefficients of the latency cost model, with a source for
every number.

NOTE: the dataclasses below are the contract other modules code against; the
loader and validation are filled in by the latency work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

PRECISION_BITS = {"fp32": 32, "fp16": 16, "int8": 8}


@dataclass(frozen=True)
class Int8Recipe:
    """How int8 is applied to the ONNX graph on this device (the recipe decides whether int8 pays)."""

    activation_type: str = "u8"  # "u8" | "s8"
    weight_type: str = "s8"  # "u8" | "s8"
    per_channel: bool = True
    reduce_range: bool = True  # 7-bit weights: avoids u8s8 saturation on x86 without VNNI
    op_types: tuple[str, ...] = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class PrecisionSpec:
    peak_gops: float  # peak throughput at this precision, giga-operations (1 MAC = 2 ops) per second
    accelerated: bool  # does this precision run faster than fp32 on this device's runtime
    source: str  # datasheet reference, or "calibration <date> <backend>"


@dataclass(frozen=True)
class RuntimeSettings:
    tool: str = "onnxruntime"  # "onnxruntime" | "trtexec"
    execution_provider: str = "CPUExecutionProvider"
    threads: int = 0  # intra-op threads; 0 lets onnxruntime choose
    batch_size: int = 1
    warmup: int = 20
    runs: int = 100


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str
    port: int = 22
    key: str | None = None  # path to a private key file; never its contents
    python: str = "python3"
    known_hosts: str | None = None  # defaults to ~/.ssh/known_hosts


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    precisions: Mapping[str, PrecisionSpec]  # keys among "fp32", "fp16", "int8"
    memory_bandwidth_gbps: float
    memory_bandwidth_source: str
    unstructured_sparsity_speedup: bool
    structured_2to4_sparsity: bool
    channel_multiple: int
    runtime: RuntimeSettings = RuntimeSettings()
    int8_recipe: Int8Recipe = Int8Recipe()
    cost_model: Mapping[str, Any] = field(default_factory=dict)  # cost-model coefficients (latency work defines)
    calibration: Mapping[str, Any] | None = None  # date, backend, fit quality; None for datasheet-only
    ssh: SshTarget | None = None
    path: Path | None = None  # the file it was loaded from

    @property
    def supported_bits(self) -> tuple[int, ...]:
        """Bit-widths this device can run, widest first."""
        return tuple(sorted((PRECISION_BITS[p] for p in self.precisions), reverse=True))
