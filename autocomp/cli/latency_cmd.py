"""``autocomp measure``, ``autocomp calibrate`` and ``autocomp profiles list|show``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from autocomp.cli.app import app, console, styled
from autocomp.cli.checks import THREADS_OPTION, check_range, check_seed, check_threads
from autocomp.cli.board_cmd import BOARD_OPTION, KEY_OPTION, KNOWN_HOSTS_OPTION, PYTHON_OPTION, with_board
from autocomp.errors import ConfigError

profiles_app = typer.Typer(name="profiles", help="Device profiles: what each device rewards and how it is timed.", no_args_is_help=True)
app.add_typer(profiles_app, name="profiles")


def parse_shapes(items: List[str] | None) -> dict[str, tuple[int, ...]]:
    """``NAME=1x3x32x32`` options -> {name: dims}; a bad item is a ConfigError naming it."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        try:
            values = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            values = ()
        if not sep or not name or not values or any(v < 1 for v in values):
            raise ConfigError(f"--shape {item!r} is not NAME=DxDxD with positive sizes; e.g. --shape input=1x3x224x224")
        shapes[name] = values
    return shapes


@app.command()
def measure(
    model: Path = typer.Argument(..., help="An ONNX file (fp32, fp16 or QDQ int8; one or several inputs)."),
    device: str = typer.Option(..., "--device", "-d", help="Device profile name (see `autocomp profiles list`)."),
    backend: str = typer.Option("estimate", "--backend", "-b", help="estimate | local | ssh"),
    board: Optional[str] = BOARD_OPTION,
    key: Optional[Path] = KEY_OPTION,
    known_hosts: Optional[Path] = KNOWN_HOSTS_OPTION,
    python: Optional[str] = PYTHON_OPTION,
    shape: Optional[List[str]] = typer.Option(None, "--shape", help="NAME=DxDxD for an input with symbolic dimensions (repeatable)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Override the profile's batch size."),
    runs: Optional[int] = typer.Option(None, "--runs", help="Timed runs at least (local backend times for 1 s or more; default from the profile)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Measure again even if a cached result exists."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the LatencyResult fields."),
    threads: Optional[int] = THREADS_OPTION,
) -> None:
    """Latency of one ONNX file on a device, from the cost model or a real measurement."""
    from autocomp.latency import get_backend
    from autocomp.profiles import calibration_mismatch, load_profile, runtime_text, with_overrides, with_threads

    check_range("--batch-size", batch_size, low=1)
    check_range("--runs", runs, low=1)
    check_threads(threads)
    profile = with_threads(with_board(load_profile(device), board=board, key=key, known_hosts=known_hosts, python=python), threads)
    if batch_size is not None:
        profile = with_overrides(profile, batch_size=batch_size)
    options = {"runs": runs} if runs is not None and backend == "local" else {}
    latency = get_backend(backend, profile=profile, cache=not no_cache, shapes=parse_shapes(shape), **options)
    result = latency.measure(model, profile)
    data = result.to_dict()
    data.update(device=profile.name, calibrated=profile.is_calibrated, batch_size=profile.runtime.batch_size, threads=profile.runtime.threads)
    mismatch = calibration_mismatch(profile) if backend == "estimate" else None
    if mismatch:
        data["warning"] = mismatch
    if as_json:
        console.print_json(json.dumps(data))
        return
    console.print(
        f"{model.name} on {profile.name} ({result.source}): median {result.median_ms:.3f} ms, p90 {result.p90_ms:.3f} ms"
        + (f", {result.runs} runs" if result.runs else "")
        + f", {runtime_text(profile.runtime)}"
    )
    if mismatch:
        console.print(styled("warning:", "yellow", mismatch))
    unpriced = data.get("unpriced_ops") or {}
    if unpriced:
        ops = ", ".join(f"{t} x{n}" for t, n in sorted(unpriced.items()))
        console.print(styled("fallback:", "yellow", f"{ops} priced as element-wise work ({data.get('fallback_ms', 0):.3f} ms)"))
    sure = getattr(result, "confidence", None)
    if sure is not None:
        console.print(styled("outside:", "yellow", sure.text()) if sure.outside else f"sure: {sure.text()}")
    if backend == "estimate" and not profile.is_calibrated:
        console.print(f"coefficients: {profile.cost_model.get('source', 'datasheet')} (uncalibrated)", style="dim")


@app.command()
def calibrate(
    device: str = typer.Option("local", "--device", "-d", help="Device profile to calibrate."),
    backend: str = typer.Option("local", "--backend", "-b", help="local | ssh: where the variants are timed."),
    board: Optional[str] = BOARD_OPTION,
    key: Optional[Path] = KEY_OPTION,
    known_hosts: Optional[Path] = KNOWN_HOSTS_OPTION,
    python: Optional[str] = PYTHON_OPTION,
    variants: int = typer.Option(48, "--variants", help="Number of base models (each in several precisions)."),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="local backend: rounds over the whole set, timed in one process (default 30)."),
    held_out: float = typer.Option(0.25, "--held-out", help="Fraction of the set kept out of the fit."),
    seed: int = typer.Option(0, "--seed", help="Seed for the variant set."),
    passes: int = typer.Option(2, "--passes", help="Time the whole set this many times and keep each variant's lowest (a shared host's slow spells)."),
    settle_pct: Optional[float] = typer.Option(
        None, "--settle-pct",
        help="After the passes, time again (up to 3 more times) each variant whose two lowest times differ by more than this many percent (default 5; 0: never).",
    ),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Keep the variant ONNX files here (default: a temp dir)."),
    as_json: bool = typer.Option(False, "--json", help="Print the fit summary as one JSON object."),
    threads: Optional[int] = THREADS_OPTION,
    models: Optional[Path] = typer.Option(
        None, "--models",
        help="A folder of your own .onnx files (variants of your model family): they join the calibration set, each fp32 one also in the calibrated precisions.",
    ),
) -> None:
    """Fit a device's cost model to real measurements and make it the profile in force."""
    from autocomp.cli.app import err_console
    from autocomp.calibration import SETTLE_PCT, calibrate_device

    from autocomp.profiles import load_profile

    check_range("--variants", variants, low=8)
    check_range("--rounds", rounds, low=1)
    check_range("--held-out", held_out, low=0.05, high=0.9)
    check_seed("--seed", seed)
    check_range("--passes", passes, low=1)
    check_range("--settle-pct", settle_pct, low=0)
    check_threads(threads)
    board_target = with_board(load_profile(device, calibrated=False), board=board, key=key, known_hosts=known_hosts, python=python).ssh
    columns = (TextColumn("timing variants"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("timing", total=None)
        report = calibrate_device(
            device, backend=backend, board=board_target, variants=variants, rounds=rounds, held_out=held_out, seed=seed,
            work_dir=work_dir, progress=lambda done, total: bar.update(task, completed=done, total=total), passes=passes,
            settle_pct=SETTLE_PCT if settle_pct is None else settle_pct or None, threads=threads, models=models,
        )
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
        return
    console.print(f"calibrated {report.device} with {report.backend}: {report.samples} measurements, {report.held_out} held out")
    console.print(
        f"held-out fit: median |error| {report.median_abs_error_pct:.1f}%, "
        f"{report.within_10pct * 100:.0f}% of variants within ±10%"
    )
    for klass, row in report.error_by_class.items():
        if klass != "all":
            console.print(
                f"  {klass}: {row['files']} held-out files, p90 |error| {row['p90_abs_error_pct']:.1f}%, "
                f"{row['within_10pct'] * 100:.0f}% within ±10%"
            )
    console.print(f"written to {report.path}")


@profiles_app.command("list")
def profiles_list(as_json: bool = typer.Option(False, "--json", help="Print a JSON list.")) -> None:
    """Known devices, and whether each one's cost model is calibrated."""
    from autocomp.profiles import list_profiles, load_profile

    rows = []
    for name in list_profiles():
        profile = load_profile(name)
        rows.append({"name": name, "calibrated": profile.is_calibrated, "bits": list(profile.supported_bits), "description": profile.description, "path": str(profile.path)})
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("device", "bits", "cost model", "description")
    for row in rows:
        table.add_row(row["name"], "/".join(map(str, row["bits"])), "calibrated" if row["calibrated"] else "datasheet", row["description"])
    console.print(table)


@profiles_app.command("show")
def profiles_show(
    name: str = typer.Argument(..., help="Device name."),
    as_json: bool = typer.Option(False, "--json", help="Print the profile in force as JSON."),
) -> None:
    """The profile in force for NAME: where it was loaded from, its numbers and their sources, and its fit."""
    from autocomp.profiles import load_profile, profile_to_dict

    profile = load_profile(name)
    data = profile_to_dict(profile)
    data["in_force"] = str(profile.path)
    data["calibrated"] = profile.is_calibrated
    from autocomp.profiles import calibration_dir

    data["user_calibration"] = profile.path is not None and profile.path.parent == calibration_dir()
    if as_json:
        console.print_json(json.dumps(data, default=str))
        return
    console.print(styled(f"{profile.name}:", "bold", profile.description))
    from autocomp.profiles import calibration_dir

    user_file = profile.path is not None and profile.path.parent == calibration_dir()
    if profile.is_calibrated:
        cal = profile.calibration or {}
        fit = cal.get("fit", {})
        where = "your calibration" if user_file else "shipped calibrated profile"
        console.print(
            f"in force: {where} {profile.path} (calibrated {cal.get('date')} with {cal.get('backend')}; "
            f"held-out median |error| {fit.get('median_abs_error_pct', float('nan')):.1f}%, "
            f"{fit.get('within_10pct', float('nan')) * 100:.0f}% within ±10% on {cal.get('held_out')} variants)"
        )
    else:
        console.print(f"in force: shipped profile {profile.path} (datasheet coefficients, uncalibrated)")
    table = Table("precision", "peak GOPS", "faster than fp32", "source")
    for precision, spec in profile.precisions.items():
        faster = "yes" if spec.accelerated and precision != "fp32" else ("-" if precision == "fp32" else f"no (runs as {spec.runs_as or 'fp32'})")
        table.add_row(precision, f"{spec.peak_gops:g}", faster, spec.source)
    console.print(table)
    console.print(f"memory bandwidth: {profile.memory_bandwidth_gbps:g} GB/s ({profile.memory_bandwidth_source})")
    console.print(
        f"sparsity: unstructured speedup {'yes' if profile.unstructured_sparsity_speedup else 'no'}, "
        f"2:4 structured {'yes' if profile.structured_2to4_sparsity else 'no'} ({profile.sparsity_source})"
    )
    if profile.weight_sharing_source:
        console.print(f"weight sharing: size only, no speedup ({profile.weight_sharing_source})")
    console.print(f"channel multiple: {profile.channel_multiple} ({profile.channel_multiple_source})")
    rt = profile.runtime
    console.print(
        f"runtime: {rt.tool} {rt.execution_provider}, threads {rt.threads or 'auto'}, batch {rt.batch_size}, "
        f"warm-up {rt.warmup}, runs {rt.runs}" + (f" ({rt.source})" if rt.source else "")
    )
    console.print(f"cost model: {profile.cost_model.get('kind')} ({profile.cost_model.get('source')})")
    if profile.ssh is not None:
        console.print(f"board: {profile.ssh.label} (python {profile.ssh.python})")
