"""A split model across a real TCP connection: the server part answers in one process, the edge part asks from another.

Each message is a frame: a 4-byte big-endian header length, a JSON header, then the raw array bytes the
header describes (``dtype``, ``shape``). Nothing is unpickled; a dtype outside ``DTYPES`` and a frame over
``MAX_FRAME_BYTES`` are refused. Two requests exist: ``infer`` (run the server part on the array, answer
its output and the milliseconds it took) and ``echo`` (answer the byte count only: what ``measure_link``
times, an activation out and a small answer back, as an inference does).

    python -m autocomp.wire serve server.onnx --host 127.0.0.1 --port 0

prints ``listening on HOST:PORT`` once it accepts connections, and serves until it is stopped.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import struct
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DTYPES = ("float32", "float16", "uint8", "int8", "int64", "int32")
MAX_FRAME_BYTES = 256 * 2**20
_LENGTH = struct.Struct("!I")


def _read(sock: socket.socket, count: int) -> bytes:
    chunks, left = [], count
    while left:
        chunk = sock.recv(min(left, 2**20))
        if not chunk:
            raise ConnectionError("the other side closed the connection in the middle of a frame")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def send(sock: socket.socket, header: dict[str, Any], array: np.ndarray | None = None) -> int:
    """Send one frame; returns the bytes put on the wire."""
    payload = b"" if array is None else np.ascontiguousarray(array).tobytes()
    if array is not None:
        header = {**header, "dtype": str(array.dtype), "shape": list(array.shape)}
    head = json.dumps(header).encode()
    sock.sendall(_LENGTH.pack(len(head)) + head + payload)
    return _LENGTH.size + len(head) + len(payload)


def receive(sock: socket.socket) -> tuple[dict[str, Any], np.ndarray | None]:
    (size,) = _LENGTH.unpack(_read(sock, _LENGTH.size))
    if size > 2**16:
        raise ValueError(f"a frame header of {size} bytes: not an autocomp peer")
    header = json.loads(_read(sock, size))
    if "dtype" not in header:
        return header, None
    if header["dtype"] not in DTYPES or not all(isinstance(d, int) and d >= 0 for d in header.get("shape", [None])):
        raise ValueError(f"refused an array of dtype {header.get('dtype')!r}, shape {header.get('shape')!r}")
    nbytes = int(np.prod(header["shape"])) * np.dtype(header["dtype"]).itemsize
    if nbytes > MAX_FRAME_BYTES:
        raise ValueError(f"refused a {nbytes:,}-byte array (at most {MAX_FRAME_BYTES:,})")
    return header, np.frombuffer(_read(sock, nbytes), dtype=header["dtype"]).reshape(header["shape"])


def serve(server_onnx: Path, *, host: str = "127.0.0.1", port: int = 0, threads: int | None = None) -> None:
    """Answer requests on ``host:port`` until stopped, one connection at a time (see the module doc)."""
    from autocomp.runtime import onnx_predictor

    predict = onnx_predictor(server_onnx, threads=threads)
    with socket.create_server((host, port)) as listener:
        print(f"listening on {host}:{listener.getsockname()[1]}", flush=True)
        while True:
            conn, _ = listener.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _answer(conn, predict)


def _answer(conn: socket.socket, predict) -> None:
    while True:
        try:
            header, array = receive(conn)
        except ConnectionError:
            return
        except ValueError as exc:  # not a frame of ours (or a refused one): say why, drop this connection, serve on
            send(conn, {"op": "error", "error": str(exc)})
            return
        if header.get("op") == "echo":
            send(conn, {"op": "echo", "bytes": 0 if array is None else int(array.nbytes)})
        elif header.get("op") == "infer" and array is not None:
            started = time.perf_counter()
            out = np.asarray(predict(array))
            send(conn, {"op": "infer", "server_ms": 1e3 * (time.perf_counter() - started)}, out)
        else:
            send(conn, {"op": "error", "error": f"unknown request {header.get('op')!r}"})


@dataclass(frozen=True)
class Timing:
    """One inference across the link, in milliseconds, as the edge side saw it."""

    edge_ms: float  # the edge part on this side
    round_trip_ms: float  # from sending the activation to having the answer: transfer plus the server part
    server_ms: float  # the server part, as the server timed it
    bytes_sent: int

    @property
    def total_ms(self) -> float:
        return self.edge_ms + self.round_trip_ms


class Edge:
    """The edge part, connected to a server part: ``infer(*inputs)`` -> (output, Timing)."""

    def __init__(self, edge_onnx: Path, address: tuple[str, int], *, threads: int | None = None) -> None:
        from autocomp.runtime import onnx_predictor

        self.predict = onnx_predictor(edge_onnx, threads=threads)
        self.sock = socket.create_connection(address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def infer(self, *inputs: np.ndarray) -> tuple[np.ndarray, Timing]:
        started = time.perf_counter()
        activation = np.asarray(self.predict(*inputs))
        sent_at = time.perf_counter()
        sent = send(self.sock, {"op": "infer"}, activation)
        header, out = receive(self.sock)
        done = time.perf_counter()
        if header.get("op") != "infer" or out is None:
            raise ConnectionError(f"the server answered {header}")
        return out, Timing(1e3 * (sent_at - started), 1e3 * (done - sent_at), float(header["server_ms"]), sent)

    def close(self) -> None:
        self.sock.close()


def measure_link(address: tuple[str, int], *, sizes: Sequence[int] = (1_000, 10_000, 100_000, 1_000_000), repeats: int = 30):
    """A link profile of the way to ``address``, from timed ``echo`` requests of each size: the round trip
    and the bandwidth by least squares on each size's median, the error as the largest miss of that line on
    any size's median (``links.Link``). An echo is answered at once; an inference's answer comes after the
    server part, and on 127.0.0.1 such a request took about 0.09 ms more than the echoes say (see
    ``benchmarks/split_loopback.py``): a gap a millisecond-scale link hides, and this one does not."""
    from autocomp.links import Link

    medians = []
    with socket.create_connection(address) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for size in sizes:
            payload, times = np.zeros(size, np.uint8), []
            for _ in range(repeats):
                started = time.perf_counter()
                send(sock, {"op": "echo"}, payload)
                receive(sock)
                times.append(1e3 * (time.perf_counter() - started))
            medians.append(statistics.median(times))
    slope, rtt = np.polyfit(np.asarray(sizes, float), np.asarray(medians), 1)
    slope, rtt = max(float(slope), 1e-12), max(float(rtt), 0.0)
    link = Link(
        name=f"measured-{address[0]}", description=f"the way to {address[0]}:{address[1]}, measured", bandwidth_mbps=8 / (slope * 1000),
        rtt_ms=rtt, error_pct=1.0, source=f"measured by autocomp.wire.measure_link: {len(sizes)} sizes x {repeats} echoes",
    )
    misses = [abs(link.transfer_ms(s) - m) / m for s, m in zip(sizes, medians)]
    return replace(link, error_pct=max(1.0, 100 * max(misses)))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m autocomp.wire", description="Serve the server part of a split model.")
    sub = parser.add_subparsers(dest="command", required=True)
    serving = sub.add_parser("serve", help="answer inference requests with SERVER_ONNX")
    serving.add_argument("server_onnx", type=Path)
    serving.add_argument("--host", default="127.0.0.1")
    serving.add_argument("--port", type=int, default=0)
    serving.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if not args.server_onnx.is_file():
        parser.exit(2, f"error: {args.server_onnx} does not exist; give the server part's .onnx file (split.json names it)\n")
    try:
        serve(args.server_onnx, host=args.host, port=args.port, threads=args.threads)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
