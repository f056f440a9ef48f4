"""``autocomp compress``: run one plan end to end and compare it with the baseline."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from autocomp.cli.app import app, console
from autocomp.cli.checks import check_range
from autocomp.errors import ConfigError


def _read_plan(path: Path):
    from autocomp.plan import CompressionPlan

    try:
        params = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read plan {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"plan {path} is not valid JSON (line {exc.lineno}): {exc.msg}") from exc
    if not isinstance(params, dict):
        raise ConfigError(f"plan {path} must be a JSON object like {{\"prune/layer1.0.conv1\": 0.5, \"bits/fc\": 8}}")
    return CompressionPlan.from_params(params)


@app.command()
def compress(
    plan: Path = typer.Option(..., "--plan", help="JSON plan: {\"prune/<layer>\": 0.5, \"bits/<layer>\": 8, \"distill/width\": 0.5}."),
    task: str = typer.Option("digits", help="Built-in task, 'package.module:factory' or 'path/to/file.py:factory'."),
    device: str = typer.Option("local", "--device", "-d", help="Device profile (bit-width support, int8 recipe, channel multiple)."),
    backend: str = typer.Option("local", help="Latency backend: estimate, local or ssh."),
    steps: int = typer.Option(200, help="Distillation fine-tuning steps."),
    out: Path = typer.Option(Path("reports/compress"), help="Folder for baseline/ and compressed/ ONNX files."),
) -> None:
    """Apply one compression PLAN and print accuracy, size and latency against the baseline."""
    from autocomp.compress.distill import DistillConfig
    from autocomp.latency import get_backend
    from autocomp.pipeline import run_plan
    from autocomp.plan import CompressionPlan
    from autocomp.profiles import load_profile
    from autocomp.tasks import load_task

    check_range("--steps", steps, low=0)
    compression = _read_plan(plan)
    profile = load_profile(device)
    loaded = load_task(task)
    latency = get_backend(backend, profile=profile)
    with console.status("preparing the model (the first run trains the built-in model, about a minute)"):
        teacher = loaded.build_model()
    compression.validate(teacher)
    rows = []
    for label, this_plan in (("baseline", CompressionPlan()), ("compressed", compression)):
        with console.status(f"{label}: compress, export, quantize, evaluate"):
            result = run_plan(
                loaded, teacher, this_plan, out / label, finetune=DistillConfig(steps=steps),
                recipe=profile.int8_recipe, round_to=profile.channel_multiple,
            )
        with console.status(f"{label}: measuring latency ({backend})"):
            timing = latency.measure(result.artifact.onnx_path, profile)
        rows.append((label, result, timing))
    table = Table(title=f"{plan} on {device}")
    for column in ("model", "accuracy %", "size kB", "params", "latency ms", "p90 ms", "source"):
        table.add_column(column, justify="right")
    for label, result, timing in rows:
        table.add_row(
            label, f"{100 * result.accuracy:.2f}", f"{result.artifact.stats.size_bytes / 1e3:.1f}",
            f"{result.artifact.stats.params:,}", f"{timing.median_ms:.3f}", f"{timing.p90_ms:.3f}", timing.source,
        )
    console.print(table)
    for label, result, _ in rows:
        console.print(f"{label}: {result.artifact.onnx_path}", highlight=False)
    base, comp = rows[0][2], rows[1][2]
    console.print(
        f"speedup {base.median_ms / comp.median_ms:.2f}x, size "
        f"{rows[0][1].artifact.stats.size_bytes / rows[1][1].artifact.stats.size_bytes:.2f}x smaller, "
        f"accuracy {100 * (rows[1][1].accuracy - rows[0][1].accuracy):+.2f} points",
        highlight=False,
    )
