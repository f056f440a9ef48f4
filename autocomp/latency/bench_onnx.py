"""Time one ONNX file with onnxruntime and print one JSON object.

Runs standalone, here (the local backend starts it in a fresh interpreter so
that no PyTorch state distorts the timings) and on a board (the SSH backend
copies it there). It must therefore stay compatible with Python 3.6 (JetPack 4)
and use only the standard library, numpy and onnxruntime.

    python bench_onnx.py MODEL.onnx [--warmup N] [--warmup-s S] [--runs N] [--blocks B] [--min-time-s S]
                         [--threads N] [--provider NAME] [--shape NAME=1x3x32x32 ...]

Output: {"median_ms", "p90_ms", "runs", "onnxruntime", "providers", "min_ms",
"block_medians_ms", "robust_ms"}; on error, {"error": "..."} and exit code 1.

``median_ms``/``p90_ms`` are over all timed runs. ``robust_ms`` is the lowest
of the medians of consecutive blocks of runs (``--blocks`` blocks of ``--runs``,
and more blocks of that size until ``--min-time-s`` has passed): the machine's
speed when nothing else competes for it. On the shared 2-core hosts one
thread's speed flips between two states for tenths of a second to seconds at a
time (every kernel 1.5-1.8x slower, seen with onnxruntime's profiler), so a
30 ms measurement is entirely fast or entirely slow; one spread over a second
or two nearly always sees a fast stretch. (16 files timed 4 times with 2 s
windows: 92% of pairs within 10% with the lowest block, 83% with the 10th
percentile, 49% with the median.) ``--warmup-s`` keeps
warming up until that much time has passed (at least ``--warmup`` runs): on the
shared 2-core hosts 20 runs of a 0.1 ms model (2 ms) left the first process of
a series up to 60% slow; 0.25 s brought repeat-to-repeat changes to 1-2%.
"""

import argparse
import json
import sys
import time

_NUMPY_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def _parse_shapes(items):
    shapes = {}
    for item in items or []:
        name, _, dims = item.partition("=")
        shapes[name] = [int(d) for d in dims.lower().split("x") if d]
    return shapes


def _feeds(session, shapes, np):
    feeds = {}
    rng = np.random.RandomState(0)
    for inp in session.get_inputs():
        if inp.name in shapes:
            shape = shapes[inp.name]
        else:
            # symbolic or unknown dimensions are taken as 1 (batch 1, one token...)
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        dtype = _NUMPY_TYPES.get(inp.type)
        if dtype is None:
            raise ValueError("input %r has unsupported type %s" % (inp.name, inp.type))
        if dtype.startswith("int") or dtype.startswith("uint"):
            feeds[inp.name] = np.ones(shape, dtype=dtype)  # ids/masks: 1 is valid for any vocabulary
        elif dtype == "bool":
            feeds[inp.name] = np.ones(shape, dtype=bool)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _percentile(sorted_values, q):
    position = (len(sorted_values) - 1) * q
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def main(argv=None):
    parser = argparse.ArgumentParser(description="time an ONNX file with onnxruntime")
    parser.add_argument("model")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--warmup-s", type=float, default=0.0, help="keep warming up for at least this many seconds")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--blocks", type=int, default=1, help="split the runs into this many blocks (robust_ms)")
    parser.add_argument("--min-time-s", type=float, default=0.0, help="keep timing blocks until this many seconds have passed")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 lets onnxruntime choose")
    parser.add_argument("--provider", default="CPUExecutionProvider")
    parser.add_argument("--shape", action="append", help="NAME=DxDxD for an input with symbolic dimensions")
    args = parser.parse_args(argv)
    try:
        import numpy as np
        import onnxruntime as ort

        options = ort.SessionOptions()
        if args.threads > 0:
            options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        if args.provider not in ort.get_available_providers():
            raise RuntimeError(
                "execution provider %s is not available here (available: %s)"
                % (args.provider, ", ".join(ort.get_available_providers()))
            )
        session = ort.InferenceSession(args.model, options, providers=[args.provider])
        feeds = _feeds(session, _parse_shapes(args.shape), np)
        started = time.perf_counter()
        done = 0
        while done < args.warmup or time.perf_counter() - started < args.warmup_s:
            session.run(None, feeds)
            done += 1
        blocks = max(1, min(args.blocks, args.runs))
        per_block = [args.runs // blocks + (1 if b < args.runs % blocks else 0) for b in range(blocks)]
        times_ms = []
        block_medians = []
        timing_started = time.perf_counter()
        index = 0
        while index < len(per_block) or time.perf_counter() - timing_started < args.min_time_s:
            block = []
            for _ in range(per_block[index % len(per_block)]):
                start = time.perf_counter()
                session.run(None, feeds)
                block.append((time.perf_counter() - start) * 1000.0)
            times_ms.extend(block)
            block_medians.append(_percentile(sorted(block), 0.5))
            index += 1
        times_ms.sort()
        result = {
            "median_ms": _percentile(times_ms, 0.5),
            "p90_ms": _percentile(times_ms, 0.9),
            "runs": len(times_ms),
            "min_ms": times_ms[0],
            "block_medians_ms": block_medians,
            "robust_ms": min(block_medians),
            "onnxruntime": ort.__version__,
            "providers": session.get_providers(),
        }
    except Exception as exc:  # reported as JSON so the caller can show one clear line
        print(json.dumps({"error": "%s: %s" % (type(exc).__name__, exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
