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

    python bench_onnx.py --set SPEC.json [--rounds R] [--block-ms MS] [--threads N] [--provider NAME]

times many files in one process, interleaved: ``SPEC.json`` lists
``{"model": PATH, "shapes": {NAME: [DIMS]}}``; each of ``--rounds`` rounds
visits every file once, in a shuffled order, for one untimed run and a block
of runs lasting about ``--block-ms``. A file's blocks are thus spread over the
whole measurement, and its ``robust_ms`` (lowest block median) is taken in a
fast stretch unless the host is slow for nearly all of it. (64 files timed twice
this way agreed within 1.6% at worst; two one-file-per-process passes over the
same files in the same half hour differed by up to 47%.) Output: a
``{"progress": [done, rounds]}`` line after each round, then
``{"results": [...one object per file, as above...], "onnxruntime", "providers"}``.
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


def _session(path, shapes, args, ort, np):
    options = ort.SessionOptions()
    if args.threads > 0:
        options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=[args.provider])
    return session, _feeds(session, shapes, np)


def _summary(times_ms, block_medians):
    times_ms = sorted(times_ms)
    return {
        "median_ms": _percentile(times_ms, 0.5),
        "p90_ms": _percentile(times_ms, 0.9),
        "runs": len(times_ms),
        "min_ms": times_ms[0],
        "block_medians_ms": block_medians,
        "robust_ms": min(block_medians),
    }


def _warm_up(session, feeds, runs, seconds):
    """Run at least ``runs`` times and for at least ``seconds``; the mean time of one run, in ms."""
    started = time.perf_counter()
    done = 0
    while done < runs or time.perf_counter() - started < seconds:
        session.run(None, feeds)
        done += 1
    return (time.perf_counter() - started) * 1000.0 / max(1, done)


def _block(session, feeds, runs):
    times_ms = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times_ms.append((time.perf_counter() - start) * 1000.0)
    return times_ms


def _time_one(args, ort, np):
    session, feeds = _session(args.model, _parse_shapes(args.shape), args, ort, np)
    _warm_up(session, feeds, args.warmup, args.warmup_s)
    blocks = max(1, min(args.blocks, args.runs))
    per_block = [args.runs // blocks + (1 if b < args.runs % blocks else 0) for b in range(blocks)]
    times_ms = []
    block_medians = []
    timing_started = time.perf_counter()
    index = 0
    while index < len(per_block) or time.perf_counter() - timing_started < args.min_time_s:
        block = _block(session, feeds, per_block[index % len(per_block)])
        times_ms.extend(block)
        block_medians.append(_percentile(sorted(block), 0.5))
        index += 1
    result = _summary(times_ms, block_medians)
    result["providers"] = session.get_providers()
    return result


def _time_set(args, ort, np):
    import random

    with open(args.set) as handle:
        spec = json.load(handle)
    sessions = []
    for entry in spec:
        try:
            sessions.append(_session(entry["model"], entry.get("shapes") or {}, args, ort, np))
        except Exception as exc:
            raise RuntimeError("%s: %s: %s" % (entry["model"], type(exc).__name__, exc))
    runs_per_block = []
    for session, feeds in sessions:  # warm up, and size each file's block to about --block-ms
        per_run_ms = _warm_up(session, feeds, max(3, args.warmup), args.warmup_s)
        runs_per_block.append(max(5, int(args.block_ms / per_run_ms)))
    times_ms = [[] for _ in sessions]
    block_medians = [[] for _ in sessions]
    order = list(range(len(sessions)))
    shuffle = random.Random(0).shuffle
    for round_index in range(args.rounds):
        shuffle(order)
        for index in order:
            session, feeds = sessions[index]
            session.run(None, feeds)  # the previous file's data left the caches: one untimed run
            block = _block(session, feeds, runs_per_block[index])
            times_ms[index].extend(block)
            block_medians[index].append(_percentile(sorted(block), 0.5))
        print(json.dumps({"progress": [round_index + 1, args.rounds]}))
        sys.stdout.flush()
    return {
        "results": [_summary(t, b) for t, b in zip(times_ms, block_medians)],
        "providers": sessions[0][0].get_providers() if sessions else [],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description="time an ONNX file (or a set of them) with onnxruntime")
    parser.add_argument("model", nargs="?")
    parser.add_argument("--set", help="JSON list of {model, shapes}: time these files interleaved in rounds")
    parser.add_argument("--rounds", type=int, default=30, help="with --set: rounds over the whole set")
    parser.add_argument("--block-ms", type=float, default=10.0, help="with --set: length of one file's block of runs")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--warmup-s", type=float, default=0.0, help="keep warming up for at least this many seconds")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--blocks", type=int, default=1, help="split the runs into this many blocks (robust_ms)")
    parser.add_argument("--min-time-s", type=float, default=0.0, help="keep timing blocks until this many seconds have passed")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 lets onnxruntime choose")
    parser.add_argument("--provider", default="CPUExecutionProvider")
    parser.add_argument("--shape", action="append", help="NAME=DxDxD for an input with symbolic dimensions")
    args = parser.parse_args(argv)
    if (args.model is None) == (args.set is None):
        parser.error("give one MODEL.onnx or --set SPEC.json")
    try:
        import numpy as np
        import onnxruntime as ort

        if args.provider not in ort.get_available_providers():
            raise RuntimeError(
                "execution provider %s is not available here (available: %s)"
                % (args.provider, ", ".join(ort.get_available_providers()))
            )
        result = _time_set(args, ort, np) if args.set else _time_one(args, ort, np)
        result["onnxruntime"] = ort.__version__
    except Exception as exc:  # reported as JSON so the caller can show one clear line
        print(json.dumps({"error": "%s: %s" % (type(exc).__name__, exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
