"""TensorRT ``trtexec``: the command line a board times with, and the parser for its report.

Boards whose profile says ``runtime.tool: trtexec`` (Jetsons on JetPack 4, where
no onnxruntime-gpu wheel exists) are timed by TensorRT itself. ``trtexec``
prints a performance summary such as (TensorRT 8.2 and later)::

    [I] === Performance summary ===
    [I] Throughput: 412.29 qps
    [I] Latency: min = 2.31 ms, max = 3.9 ms, mean = 2.41 ms, median = 2.39 ms, percentile(90%) = 2.48 ms, ...
    [I] GPU Compute Time: min = ...

The ``Latency`` line is host latency (H2D copy + GPU compute + D2H copy) of one
inference, which is what the onnxruntime backends time around
``session.run``; the ``GPU Compute Time`` line excludes the copies and is kept
only for reference. ``--avgRuns=1`` makes every sample a single inference
(trtexec's default averages 10 consecutive runs, which narrows the
distribution and would make its p90 incomparable with the other backends).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from autocomp.errors import LatencyError

# One summary line: "Latency: min = 2.31 ms, max = ..., percentile(90%) = 2.48 ms, ...".
# Anchored after the "[I] " tag or at line start so "H2D Latency:", "D2H Latency:" and
# "End-to-End Host Latency:" are not mistaken for it.
_SUMMARY_LINE = re.compile(r"^(?:\[[^\]]*\]\s*)*(?P<name>Latency|GPU Compute Time):\s*(?P<body>.*)$", re.MULTILINE)
_FIELD = re.compile(r"(?P<key>min|max|mean|median|percentile\((?P<pct>[\d.]+)%\))\s*=\s*(?P<value>[-+\d.eE]+)\s*ms")
_TAGS = re.compile(r"^(?:\[[^\]]*\]\s*)+")
_QUERIES = re.compile(r"Timing trace has (?P<n>\d+) queries")
_VERSION = re.compile(r"TensorRT version:\s*(?P<v>[\d.]+)")
_VERSION_TAG = re.compile(r"\[TensorRT v(?P<v>\d+)\]")  # "v8201" where the log has no "TensorRT version:"


@dataclass(frozen=True)
class TrtexecSummary:
    """The numbers of one trtexec performance summary, in milliseconds."""

    min_ms: float
    max_ms: float
    mean_ms: float
    median_ms: float
    percentiles_ms: dict[float, float]  # {90.0: ..., 99.0: ...}
    runs: int | None  # "Timing trace has N queries"; None where the report does not say
    gpu_compute_median_ms: float | None = None
    tensorrt_version: str | None = None

    @property
    def p90_ms(self) -> float:
        if 90.0 not in self.percentiles_ms:
            raise LatencyError(
                "trtexec report has no 90th percentile (it has "
                f"{sorted(self.percentiles_ms) or 'none'}); run trtexec with --percentile=90"
            )
        return self.percentiles_ms[90.0]


def _fields(body: str) -> tuple[dict[str, float], dict[float, float]]:
    plain: dict[str, float] = {}
    percentiles: dict[float, float] = {}
    for match in _FIELD.finditer(body):
        value = float(match["value"])
        if match["pct"] is not None:
            percentiles[float(match["pct"])] = value
        else:
            plain[match["key"]] = value
    return plain, percentiles


def parse_trtexec_output(text: str) -> TrtexecSummary:
    """Parse trtexec's stdout; raise LatencyError naming what is missing when it has no summary.

    A failed build ("&&&& FAILED TensorRT.trtexec") is reported with trtexec's own error lines.
    """
    latency = gpu = None
    for match in _SUMMARY_LINE.finditer(text):
        if match["name"] == "Latency" and latency is None:
            latency = _fields(match["body"])
        elif match["name"] == "GPU Compute Time" and gpu is None:
            gpu = _fields(match["body"])
    if latency is None or not {"min", "max", "mean", "median"} <= latency[0].keys():
        errors = [_TAGS.sub("", line).strip() for line in text.splitlines() if "[E]" in line]
        telling = [e for e in errors if "error" in e.lower() or "fail" in e.lower()] or errors
        detail = "; ".join(telling[:3]) if telling else "no 'Latency: min = ..., median = ...' summary line"
        raise LatencyError(f"could not read a latency summary from trtexec output: {detail}")
    plain, percentiles = latency
    queries = _QUERIES.search(text)
    version = _VERSION.search(text) or _VERSION_TAG.search(text)
    return TrtexecSummary(
        min_ms=plain["min"],
        max_ms=plain["max"],
        mean_ms=plain["mean"],
        median_ms=plain["median"],
        percentiles_ms=percentiles,
        runs=int(queries["n"]) if queries else None,
        gpu_compute_median_ms=gpu[0].get("median") if gpu else None,
        tensorrt_version=version["v"] if version else None,
    )


def trtexec_args(
    model_path: str,
    *,
    runs: int,
    warmup_ms: int = 200,
    fp16: bool = False,
    int8: bool = False,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> list[str]:
    """Arguments (after the executable) that time ``model_path`` like the onnxruntime backends do.

    trtexec warms up for a duration, not a count, hence ``warmup_ms``. ``--duration=0`` with
    ``--iterations=runs`` times exactly the requested number of inferences (at least; trtexec may
    add a few to fill its last batch of enqueues). ``--percentile=90`` works on TensorRT 8.0+
    (a single value there; a list from 8.6 on).
    """
    args = [
        f"--onnx={model_path}",
        f"--warmUp={int(warmup_ms)}",
        f"--iterations={int(runs)}",
        "--duration=0",
        "--avgRuns=1",
        "--percentile=90",
    ]
    if shapes:  # inputs with symbolic dimensions: trtexec builds the engine for exactly these
        args.append("--shapes=" + ",".join(f"{n}:" + "x".join(str(int(d)) for d in dims) for n, dims in shapes.items()))
    if fp16:
        args.append("--fp16")
    if int8:
        args.append("--int8")  # needed for explicit (QDQ) quantization to run in int8
    return args
