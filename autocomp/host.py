"""What this machine gives the process: CPUs and the CPU kind (a calibration holds for one of each)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# the instruction-set extensions that change which onnxruntime kernels run (and how fast), widest first
_ISA_FLAGS = ("amx_int8", "avx512_vnni", "avx512f", "avx_vnni", "avx2", "asimddp", "asimd")


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpuinfo_flags() -> set[str]:
    try:
        return set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return set()


def host_cpu() -> str:
    """``"<model name> (<arch>: <isa flags>)"``, e.g. ``"AMD EPYC 7B13 (x86_64: avx2)"``; recorded by a calibration."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    model = fields.get("model name") or fields.get("hardware") or ""  # x86 / ARM boards
    flags = cpuinfo_flags()
    isa = ", ".join(f for f in _ISA_FLAGS if f in flags) or "baseline"
    return f"{model or platform.processor() or 'unknown CPU'} ({platform.machine()}: {isa})"
