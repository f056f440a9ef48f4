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
can outlast the window. So a set of files (``measure_set``: calibration, the
benchmark) is timed in one process, interleaved in rounds, each file's blocks
spread over the whole measurement: 64 files timed twice that way agreed within
1.6% at worst.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Mapping, Sequence

from autocomp.errors import LatencyError
from autocomp.latency.base import LatencyResult, check_onnx_file

BENCH_SCRIPT = Path(__file__).with_name("bench_onnx.py")
WARMUP_S = 0.25
BLOCKS = 5
TIMED_S = 1.0  # time blocks for at least this long (see bench_onnx.py: the host's speed flips for seconds)
SET_ROUNDS = 30  # measure_set: rounds over the set (64 files: 30 rounds agreed with 60 within 2%)
SET_BLOCK_MS = 10.0  # measure_set: one file's block of runs per round
SET_WARMUP_S = 0.05  # measure_set: per file, before the rounds (the rounds warm it up further)


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
        rounds: int = SET_ROUNDS,
    ) -> None:
        self.shapes = {k: tuple(v) for k, v in (shapes or {}).items()}
        self.warmup = warmup
        self.runs = runs
        self.timeout_s = timeout_s
        self.python = python or sys.executable
        self.timed_s = timed_s
        self.rounds = rounds

    @property
    def cache_key(self) -> str:
        """What besides the file and the profile changes the result (for ``CachedBackend``)."""
        return json.dumps([sorted(self.shapes.items()), self.warmup, self.runs, self.timed_s])

    def _runtime_args(self, runtime) -> list[str]:
        return [
            "--warmup", str(runtime.warmup if self.warmup is None else self.warmup),
            "--threads", str(runtime.threads),
            "--provider", runtime.execution_provider,
        ]

    def command(self, onnx_path: Path, profile) -> list[str]:
        runtime = profile.runtime
        cmd = [
            self.python, str(BENCH_SCRIPT), str(onnx_path), *self._runtime_args(runtime),
            "--warmup-s", str(WARMUP_S),
            "--runs", str(runtime.runs if self.runs is None else self.runs),
            "--blocks", str(BLOCKS),
            "--min-time-s", str(self.timed_s),
        ]
        for name, dims in batch_shapes(onnx_path, batch_size=runtime.batch_size, shapes=self.shapes).items():
            cmd += ["--shape", f"{name}={'x'.join(str(d) for d in dims)}"]
        return cmd

    def measure(self, onnx_path: Path, profile) -> LatencyResult:
        path = _checked(onnx_path, profile)
        payload = self._run(self.command(path, profile), what=path.name, timeout_s=self.timeout_s, fix="lower runtime.runs in the profile")
        return _result(payload)

    def measure_set(
        self, items: Sequence[tuple[Path, object]], *, progress: Callable[[int, int], None] | None = None, min_s: float = 0.0
    ) -> list[LatencyResult]:
        """Time several (file, profile) pairs in one process, interleaved in ``self.rounds`` rounds, or more where
        the rounds' blocks must add up to ``min_s`` seconds (see the module docstring).

        The profiles may differ in batch size only: one process runs them all with the same threads and provider.
        ``progress(done, rounds)`` after each round.
        """
        if not items:
            return []
        runtimes = {(p.runtime.threads, p.runtime.execution_provider) for _, p in items}
        if len(runtimes) > 1:
            raise LatencyError("measure_set times with one thread count and execution provider; got several profiles' settings")
        spec = [
            {"model": str(_checked(path, profile)), "shapes": batch_shapes(path, batch_size=profile.runtime.batch_size, shapes=self.shapes)}
            for path, profile in items
        ]
        rounds = max(self.rounds, math.ceil(min_s * 1000.0 / (len(items) * SET_BLOCK_MS)))
        with tempfile.TemporaryDirectory(prefix="autocomp-time-") as tmp:
            spec_path = Path(tmp) / "set.json"
            spec_path.write_text(json.dumps(spec))
            cmd = [
                self.python, str(BENCH_SCRIPT), "--set", str(spec_path), *self._runtime_args(items[0][1].runtime),
                "--warmup-s", str(SET_WARMUP_S), "--rounds", str(rounds), "--block-ms", str(SET_BLOCK_MS),
            ]
            # a generous bound: each file's round is about SET_BLOCK_MS plus one run
            timeout_s = self.timeout_s + len(items) * rounds * 1.0
            payload = self._run(cmd, what=f"a set of {len(items)} files", timeout_s=timeout_s, fix="time fewer rounds", progress=progress)
        return [_result(entry) for entry in payload["results"]]

    def _run(
        self, cmd: list[str], *, what: str, timeout_s: float, fix: str, progress: Callable[[int, int], None] | None = None
    ) -> dict:
        """Run bench_onnx.py; its last JSON line, passing ``{"progress": [done, total]}`` lines to ``progress``."""
        with tempfile.TemporaryFile(mode="w+") as stderr:
            try:
                # stdout is read as it comes (progress lines); stderr goes to a file so that neither pipe can fill up
                with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True) as process:
                    payload = None
                    try:
                        for line in _lines_until(process, timeout_s):
                            if not line.strip().startswith("{"):
                                continue
                            try:
                                payload = json.loads(line)
                            except json.JSONDecodeError:
                                continue
                            if "progress" in payload and progress is not None:
                                progress(*payload["progress"])
                    except BaseException:  # Ctrl-C or a timeout: no orphan keeps the CPU busy
                        process.kill()
                        raise
            except subprocess.TimeoutExpired:
                raise LatencyError(f"timing {what} took longer than {timeout_s:.0f} s; {fix}") from None
            if payload is None or "progress" in payload:
                stderr.seek(0)
                tail = (stderr.read().strip().splitlines() or ["no output"])[-1]
                raise LatencyError(f"the timing process for {what} failed (exit {process.returncode}): {tail}")
        if "error" in payload:
            reason = " ".join(str(payload["error"]).split())  # one line, whatever onnxruntime said
            raise LatencyError(f"onnxruntime could not time {what}: {reason}")
        return payload


def _lines_until(process: subprocess.Popen, timeout_s: float):
    """The process's stdout lines; ``subprocess.TimeoutExpired`` if it was killed for running past ``timeout_s``."""
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        process.kill()

    timer = threading.Timer(timeout_s, kill)
    timer.start()
    try:
        yield from process.stdout
    finally:
        timer.cancel()
    if expired.is_set():
        raise subprocess.TimeoutExpired(process.args, timeout_s)


def _checked(onnx_path: Path, profile) -> Path:
    path = check_onnx_file(onnx_path)
    if profile.runtime.tool != "onnxruntime":
        raise LatencyError(
            f"device {profile.name!r} times with {profile.runtime.tool}, which the local backend cannot run; "
            "use --backend estimate, or ssh with a board"
        )
    return path


def _result(payload: dict) -> LatencyResult:
    return LatencyResult(
        median_ms=float(payload.get("robust_ms", payload["median_ms"])), p90_ms=float(payload["p90_ms"]), runs=int(payload["runs"]),
        source="local",
    )
