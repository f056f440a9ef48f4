"""``autocomp splits``: where a task's model can be cut between a device and a server, and what each cut costs."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from autocomp.cli.app import app, console
from autocomp.errors import ConfigError


@app.command()
def splits(
    task: str = typer.Option("digits", help="Built-in task, 'package.module:factory' or 'path/to/file.py:factory'."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Device profile of the edge part: prices each cut."),
    server: Optional[str] = typer.Option(None, "--server", help="Device profile of the server part (e.g. local)."),
    link: Optional[str] = typer.Option(None, "--link", help="Link profile between them (device_profiles/links/: wifi-20mbps, ...)."),
    wire: str = typer.Option("fp32", "--wire", help="How the activation is sent: fp32, fp16 or int8."),
) -> None:
    """List the cuts of a task's model (module boundaries where exactly one tensor crosses) and, with --device,
    --server and --link, price each one end to end: edge part + transfer + server part, by the estimators."""
    from autocomp.split import WIRES, candidate_cuts

    if wire not in WIRES:
        raise ConfigError(f"--wire {wire!r} is not one of {', '.join(WIRES)}")
    given = [name for name, value in (("--device", device), ("--server", server), ("--link", link)) if value]
    if given and len(given) < 3:
        raise ConfigError(f"pricing the cuts needs --device, --server and --link together; {', '.join(given)} given")
    profiles = _load(device, server, link) if given else None
    with tempfile.TemporaryDirectory(prefix="autocomp-splits-") as work, console.status("exporting the model"):
        task_, onnx_path = _exported(task, Path(work))
        if profiles is None:
            table = Table("cut", "activation", f"bytes sent ({wire})", title=f"cuts of {task}: one tensor crosses each")
            for cut in candidate_cuts(onnx_path):
                table.add_row(cut.name, "×".join(map(str, cut.shape)), f"{cut.bytes_sent(wire):,}")
        else:
            table = _priced(task_, onnx_path, Path(work), wire=wire, **profiles)
    console.print(table)


def _load(device: str, server: str, link: str) -> dict:
    from autocomp.latency import get_backend
    from autocomp.links import load_link
    from autocomp.profiles import load_profile

    edge, far = load_profile(device), load_profile(server)
    return {
        "device": (get_backend("estimate", profile=edge), edge),
        "server": (get_backend("estimate", profile=far), far),
        "link": load_link(link),
    }


def _exported(task: str, work: Path):
    from autocomp.pipeline import build_artifact
    from autocomp.plan import CompressionPlan
    from autocomp.profiles import Int8Recipe
    from autocomp.tasks import load_task

    loaded = load_task(task)
    artifact = build_artifact(loaded, loaded.build_model(), CompressionPlan(), work / "model", recipe=Int8Recipe())
    return loaded, artifact.onnx_path


def _priced(task, onnx_path: Path, work: Path, *, wire: str, device, server, link) -> Table:
    from autocomp.runtime import calibration_inputs
    from autocomp.split import price_cuts

    samples = calibration_inputs(task, max_samples=64) if wire == "int8" else ()
    prices = price_cuts(onnx_path, device=device, server=server, link=link, wire=wire, work_dir=work / "cuts", samples=samples)
    best = min(prices, key=lambda p: p.total_ms)
    table = Table(
        "cut", "bytes sent", f"{device[1].name} ms", f"{link.name} ms", f"{server[1].name} ms", "end to end ms",
        title=f"{device[1].name} → {link.name} ({link.bandwidth_mbps:g} Mbit/s, "
        f"{link.rtt_ms:g} ms round trip) → {server[1].name}; estimates, * = fastest",
    )
    for price in prices:
        mark = "*" if price is best else ""
        table.add_row(
            f"{mark}{price.cut}", f"{price.bytes_sent:,}", f"{price.edge_ms:.3f}", f"{price.transfer_ms:.3f}",
            f"{price.server_ms:.3f}", Text(f"{price.total_ms:.3f}", style="bold" if price is best else ""),
        )
    return table
