"""``autocomp splits``: where a model can be cut between a device and a server, and what each cut costs per link."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table
from rich.text import Text

from autocomp.cli.app import app, console
from autocomp.errors import ConfigError


@app.command()
def splits(
    task: str = typer.Option("digits", help="Built-in task, 'package.module:factory' or 'path/to/file.py:factory'."),
    model: Optional[Path] = typer.Option(None, "--model", help="An ONNX file to cut instead of the task's model (e.g. an exported model.onnx)."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Device profile of the edge part: prices each cut."),
    server: Optional[str] = typer.Option(None, "--server", help="Device profile of the server part (e.g. local)."),
    link: Optional[List[str]] = typer.Option(None, "--link", help="Link profile between them (device_profiles/links/, or a .yaml file); repeat to compare links."),
    wire: str = typer.Option("fp32", "--wire", help="How the activation is sent: fp32, fp16 or int8 (int8 calibrates on the task's samples)."),
) -> None:
    """List the cuts of a model (module boundaries where exactly one tensor crosses) and, with --device,
    --server and --link, price each end to end: edge part + transfer + server part, by the estimators.
    Several --link values price the same files for each link: the model is not retrained or re-exported."""
    from autocomp.split import WIRES, candidate_cuts

    if wire not in WIRES:
        raise ConfigError(f"--wire {wire!r} is not one of {', '.join(WIRES)}")
    given = [name for name, value in (("--device", device), ("--server", server), ("--link", link)) if value]
    if given and len(given) < 3:
        raise ConfigError(f"pricing the cuts needs --device, --server and --link together; {', '.join(given)} given")
    if model is not None and not model.is_file():
        raise ConfigError(f"--model {model} does not exist; give an .onnx file")
    profiles = _load(device, server, link) if given else None
    with tempfile.TemporaryDirectory(prefix="autocomp-splits-") as work, console.status("exporting the model"):
        loaded, onnx_path = _exported(task, model, Path(work), need_task=model is None or wire == "int8")
        if profiles is None:
            table = Table("cut", "activation", f"bytes sent ({wire})", title=f"cuts of {onnx_path.name if model else task}: one tensor crosses each")
            for cut in candidate_cuts(onnx_path):
                table.add_row(cut.name, "×".join(map(str, cut.shape)), f"{cut.bytes_sent(wire):,}")
        else:
            table = _priced(loaded, onnx_path, Path(work), wire=wire, **profiles)
    console.print(table)


def _load(device: str, server: str, links: list[str]) -> dict:
    from autocomp.latency import get_backend
    from autocomp.links import load_link
    from autocomp.profiles import load_profile

    edge, far = load_profile(device), load_profile(server)
    return {
        "device": (get_backend("estimate", profile=edge), edge),
        "server": (get_backend("estimate", profile=far), far),
        "links": [load_link(name) for name in links],
    }


def _exported(task: str, model: Path | None, work: Path, *, need_task: bool):
    from autocomp.pipeline import build_artifact
    from autocomp.plan import CompressionPlan
    from autocomp.profiles import Int8Recipe
    from autocomp.tasks import load_task

    loaded = load_task(task) if need_task else None
    if model is not None:
        return loaded, model
    artifact = build_artifact(loaded, loaded.build_model(), CompressionPlan(), work / "model", recipe=Int8Recipe())
    return loaded, artifact.onnx_path


def _priced(task, onnx_path: Path, work: Path, *, wire: str, device, server, links) -> Table:
    from autocomp.runtime import calibration_inputs
    from autocomp.split import time_parts

    samples = calibration_inputs(task, max_samples=64) if wire == "int8" else ()
    parts = time_parts(onnx_path, device=device, server=server, wire=wire, work_dir=work / "cuts", samples=samples)
    table = Table(
        title=f"end to end ms: {device[1].name} part + transfer + {server[1].name} part (estimates); * = fastest on that link; "
        + "; ".join(f"{link.name}: {link.bandwidth_mbps:g} Mbit/s, {link.rtt_ms:g} ms round trip" for link in links),
    )
    table.add_column("cut", no_wrap=True)
    for header in ("bytes sent", f"{device[1].name} ms", f"{server[1].name} ms", *(link.name for link in links)):
        table.add_column(header, justify="right", overflow="fold")
    prices = [[part.over(link) for link in links] for part in parts]  # the files are cut and timed once
    best = [min(column, key=lambda price: price.total_ms) for column in zip(*prices)]
    for part, row in zip(parts, prices):
        table.add_row(
            part.cut, f"{part.bytes_sent:,}", f"{part.edge_ms:.3f}", f"{part.server_ms:.3f}",
            *(Text(f"{'*' if price is b else ''}{price.total_ms:.3f}", style="bold" if price is b else "") for price, b in zip(row, best)),
        )
    return table
