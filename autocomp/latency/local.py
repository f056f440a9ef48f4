"""The ``local`` backend: onnxruntime on this machine, timed in a separate process.

A PyTorch forward in the same interpreter distorted the first onnxruntime
timings by up to 2x (STACK.md), so every measurement runs ``bench_onnx.py`` in a
fresh ``sys.executable``, with the profile's warm-up, run count, intra-op
threads and execution provider, and reads back its one JSON line.

Robust timing (measured on the shared 2-core hosts, 1 intra-op thread): a
warm-up of 20 runs left the first process of a series up to 60% slow on
0.1-0.3 ms models, and the host's speed flips between a fast and a 1.5-1.8x
slower state for tenths of a second to seconds at a time. So each process warms
up for at least ``WARMUP_S`` seconds, then times blocks of runs for at least
``TIMED_S`` seconds; the result's ``median_ms`` is the lowest block median
(``robust_ms`` of bench_onnx). Timing the same 96 files twice this way still
disagreed by more than 10% for 12-20% of them in four runs of
benchmarks/latency_predictor.py (34% in a fifth, noisier one): the slow state
can outlast the window, so ``autocomp calibrate`` times its whole set in passes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Mapping

from autocomp.errors import LatencyError
from autocomp.latency.base import LatencyResult

BENCH_SCRIPT = Path(__file__).with_name("bench_onnx.py")
WARMUP_S = 0.25
BLOCKS = 5
TIMED_S = 1.0  # time blocks for at least this long (see bench_onnx.py: the host's speed flips for seconds)


def batch_shapes(onnx_path: Path, *, batch_size: int, shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, tuple[int, ...]]:
    """Input shapes that put ``batch_size`` on each input's symbolic first dimension (other symbols: 1)."""
    fixed = {k: tuple(v) for k, v in (shapes or {}).items()}
    if batch_size == 1:
        return fixed
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in fixed or inp.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in inp.type.tensor_type.shape.dim]
        if dims and dims[0] is None:
            fixed[inp.name] = tuple([batch_size] + [d or 1 for d in dims[1:]])
    return fixed


class LocalBackend:
    """Time an ONNX file with onnxruntime in a child process (``LatencyBackend``)."""

    name = "local"

    def __init__(
        self,
        *,
        shapes: Mapping[str, tuple[int, ...]] | None = None,
        warmup: int | None = None,
        runs: int | None = None,
        timeout_s: float = 600.0,
        python: str | None = None,
        timed_s: float = TIMED_S,
    ) -> None:
        self.shapes = {k: tuple(v) for k, v in (shapes or {}).items()}
        self.warmup = warmup
        self.runs = runs
        self.timeout_s = timeout_s
        self.python = python or sys.executable
        self.timed_s = timed_s

    @property
    def cache_key(self) -> str:
        """What besides the file and the profile changes the result (for ``CachedBackend``)."""
        return json.dumps([sorted(self.shapes.items()), self.warmup, self.runs, self.timed_s])

    def command(self, onnx_path: Path, profile) -> list[str]:
        runtime = profile.runtime
        cmd = [
            self.python,
            str(BENCH_SCRIPT),
            str(onnx_path),
            "--warmup", str(runtime.warmup if self.warmup is None else self.warmup),
            "--warmup-s", str(WARMUP_S),
            "--runs", str(runtime.runs if self.runs is None else self.runs),
            "--blocks", str(BLOCKS),
            "--min-time-s", str(self.timed_s),
            "--threads", str(runtime.threads),
            "--provider", runtime.execution_provider,
        ]
        for name, dims in batch_shapes(onnx_path, batch_size=runtime.batch_size, shapes=self.shapes).items():
            cmd += ["--shape", f"{name}={'x'.join(str(d) for d in dims)}"]
        return cmd

    def measure(self, onnx_path: Path, profile) -> LatencyResult:
        path = Path(onnx_path)
        if not path.is_file():
            raise LatencyError(f"ONNX file {path} does not exist")
        if profile.runtime.tool != "onnxruntime":
            raise LatencyError(
                f"device {profile.name!r} times with {profile.runtime.tool}, which the local backend cannot run; "
                "use --backend estimate, or ssh with a board"
            )
        try:
            done = subprocess.run(
                self.command(path, profile), capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise LatencyError(f"timing {path.name} took longer than {self.timeout_s:.0f} s; lower runtime.runs in the profile") from None
        lines = [line for line in done.stdout.splitlines() if line.strip().startswith("{")]
        try:
            payload = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise LatencyError(f"the timing process for {path.name} failed (exit {done.returncode}): {tail}") from None
        if "error" in payload:
            reason = " ".join(str(payload["error"]).split())  # one line, whatever onnxruntime said
            raise LatencyError(f"onnxruntime could not time {path.name}: {reason}")
        return LatencyResult(
            median_ms=float(payload.get("robust_ms", payload["median_ms"])), p90_ms=float(payload["p90_ms"]), runs=int(payload["runs"]), source="local"
        )
