"""Benchmark: a split model run across a real socket on 127.0.0.1, measured end to end against its price.

    python benchmarks/split_loopback.py [--task digits] [--cuts server layer2 pool] [--wires fp32 int8] [--runs 200]

The server part runs in its own process (``python -m autocomp.wire serve``, 1 thread), the edge part here
(1 thread). The link to it is measured first (``wire.measure_link``: echoes of 1 kB to 1 MB). Each cut's
price is what the search would add up: the edge file and the server file timed by the ``local`` backend
(1 thread), plus the measured link's ``transfer_ms`` of the bytes sent. The measured figure is the median
over ``--runs`` batch-1 inferences of the edge part, the send, the server part and the answer. Cuts are
run interleaved, round after round, so a drift of the shared host reaches every cut alike.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    from autocomp.latency import get_backend
    from autocomp.pipeline import build_artifact
    from autocomp.plan import CompressionPlan
    from autocomp.profiles import Int8Recipe, load_profile, with_threads
    from autocomp.runtime import calibration_inputs
    from autocomp.split import ON_SERVER, split_model
    from autocomp.tasks import load_task
    from autocomp.wire import Edge, measure_link

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--cuts", nargs="+", default=[ON_SERVER, "layer1", "layer2", "pool"])
    parser.add_argument("--wires", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    task = load_task(args.task)
    samples = calibration_inputs(task, max_samples=64)
    x = samples[0][0][:1]
    profile = with_threads(load_profile("local"), 1)
    local = get_backend("local", profile=profile, cache=False)
    with tempfile.TemporaryDirectory(prefix="autocomp-loopback-") as tmp:
        whole = build_artifact(task, task.build_model(), CompressionPlan(), Path(tmp) / "model", recipe=Int8Recipe()).onnx_path
        cases = []
        for cut in args.cuts:
            for wire in ([None] if cut == ON_SERVER else args.wires):
                if cut == ON_SERVER:  # the whole model on the server: the edge part sends its input as it is
                    edge, server = None, whole
                else:
                    files = split_model(whole, cut, Path(tmp) / f"{cut}-{wire}", wire=wire, samples=samples)
                    edge, server = files.edge, files.server
                cases.append((cut, wire or "input", edge, server))
        servers = {}
        try:
            for cut, wire, edge, server in cases:
                proc = subprocess.Popen([sys.executable, "-m", "autocomp.wire", "serve", str(server), "--threads", "1"],
                                        stdout=subprocess.PIPE, text=True)
                servers[(cut, wire)] = (proc, ("127.0.0.1", int(proc.stdout.readline().rsplit(":", 1)[1])))
            link = measure_link(next(iter(servers.values()))[1])
            print(f"link measured: {link.bandwidth_mbps:,.0f} Mbit/s, round trip {link.rtt_ms:.3f} ms, error ±{link.error_pct:.0f}%")
            identity = Path(tmp) / "identity.onnx"
            _identity(identity, x.shape)
            priced, measured = {}, {key: [] for key in servers}
            for (cut, wire, edge, server) in cases:
                edge_ms = 0.0 if edge is None else local.measure(edge, profile).median_ms
                sent = x.nbytes if edge is None else None
                priced[(cut, wire)] = [edge_ms, local.measure(server, profile).median_ms, sent]
            clients = {key: Edge(edge if edge is not None else identity, servers[(cut, wire)][1], threads=1)
                       for (cut, wire, edge, server), key in zip(cases, servers)}
            for _ in range(args.rounds):
                for key, client in clients.items():
                    for _ in range(args.runs // args.rounds):
                        _, timing = client.infer(x)
                        measured[key].append(timing)
                        priced[key][2] = timing.bytes_sent
            print("priced: edge + link + server ms; measured in the run: the same three (link = round trip less the server part)")
            print(f"{'cut':8} {'wire':6} {'bytes':>8} {'priced ms':>26} {'total':>7} {'measured ms':>26} {'total':>7} {'ratio':>6}")
            for key, (edge_ms, server_ms, sent) in priced.items():
                total = edge_ms + link.transfer_ms(sent) + server_ms
                runs = measured[key]
                got = [statistics.median(t.edge_ms for t in runs), statistics.median(t.round_trip_ms - t.server_ms for t in runs),
                       statistics.median(t.server_ms for t in runs)]
                whole = statistics.median(t.total_ms for t in runs)
                parts = f"{edge_ms:8.3f} {link.transfer_ms(sent):8.3f} {server_ms:8.3f}"
                print(f"{key[0]:8} {key[1]:6} {sent:8,} {parts:>26} {total:7.3f} {got[0]:8.3f} {got[1]:8.3f} {got[2]:8.3f} {whole:7.3f} {whole / total:6.2f}")
            for client in clients.values():
                client.close()
        finally:
            for proc, _ in servers.values():
                proc.kill()
                proc.wait()
                proc.stdout.close()


def _identity(path: Path, shape) -> None:
    """An edge part that sends the input as it is (the whole model on the server)."""
    import onnx
    from onnx import TensorProto, helper

    dims = ["batch", *shape[1:]]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


if __name__ == "__main__":
    main()
