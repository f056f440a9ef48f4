"""A split model across a real TCP socket on 127.0.0.1: the server part in its own process, the edge part here;
the answers are the whole model's, the bytes on the wire are the manifest's, and a bad frame is refused
without stopping the server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autocomp.export import export_onnx
from autocomp.runtime import onnx_predictor
from autocomp.split import split_model
from autocomp.tasks.models import ResNetDigits
from autocomp.wire import Edge, measure_link, receive, send

INPUTS = torch.randn(16, 1, 32, 32, generator=torch.Generator().manual_seed(0)).numpy()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("wire")
    torch.manual_seed(0)
    whole = export_onnx(ResNetDigits().eval(), (torch.as_tensor(INPUTS[:1]),), root / "model.onnx")
    files = split_model(whole, "layer2", root / "split", wire="int8", samples=[(INPUTS[i : i + 4],) for i in range(0, 16, 4)])
    server = subprocess.Popen(
        [sys.executable, "-m", "autocomp.wire", "serve", str(files.server), "--port", "0", "--threads", "1"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        line = server.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        yield whole, files, ("127.0.0.1", int(line.rsplit(":", 1)[1]))
    finally:
        server.kill()
        server.wait()


def test_the_edge_and_the_server_process_answer_what_the_whole_model_does(served):
    whole, files, address = served
    edge = Edge(files.edge, address, threads=1)
    try:
        expected = onnx_predictor(whole)(INPUTS)
        composed = np.concatenate([edge.infer(INPUTS[i : i + 4])[0] for i in range(0, 16, 4)])
        _, timing = edge.infer(INPUTS[:4])
    finally:
        edge.close()
    assert composed.shape == expected.shape and np.corrcoef(composed.ravel(), expected.ravel())[0, 1] > 0.99
    manifest = json.loads(files.manifest.read_text())
    payload = 4 * manifest["bytes_per_sample"]  # uint8 on the wire: one byte per element, four samples
    assert payload < timing.bytes_sent < payload + 200  # the frame's header is the rest
    assert timing.edge_ms > 0 and timing.round_trip_ms > timing.server_ms > 0


def test_the_link_to_the_server_is_measured_as_a_link_profile(served):
    _, _, address = served
    link = measure_link(address, sizes=(1_000, 100_000), repeats=5)
    assert link.bandwidth_mbps > 0 and link.rtt_ms >= 0 and link.error_pct >= 1 and "measured" in link.source


def test_a_frame_that_is_not_ours_is_refused_and_the_server_serves_on(served):
    _, files, address = served
    with socket.create_connection(address) as sock:
        sock.sendall((5).to_bytes(4, "big") + b"\x80\x04N." + b"x")  # a pickle, not a JSON header
        header, _ = receive(sock)
    assert header["op"] == "error"
    with socket.create_connection(address) as sock:
        send(sock, {"op": "infer", "dtype": "object", "shape": [1]})
        assert "refused an array of dtype 'object'" in receive(sock)[0]["error"]
    edge = Edge(files.edge, address)
    try:
        assert edge.infer(INPUTS[:1])[0].shape[0] == 1
    finally:
        edge.close()


def test_serving_a_missing_file_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "autocomp.wire", "serve", str(tmp_path / "none.onnx")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().startswith("error:") and "Traceback" not in done.stderr
    assert Path(tmp_path / "none.onnx").name in done.stderr
