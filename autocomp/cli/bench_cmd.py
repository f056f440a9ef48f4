"""``autocomp bench``: the samplers and the uniform hand-made plans compared in one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from autocomp.cli.app import app, console
from autocomp.cli.checks import THREADS_OPTION, check_range, check_threads
from autocomp.errors import ConfigError
from autocomp.study import DEFAULT_SAMPLER, DEFAULT_TRIALS, SAMPLERS


@app.command()
def bench(
    device: str = typer.Option("local", "--device", "-d", help="Device profile to search for."),
    task: str = typer.Option("digits", help="Built-in task name, pkg.module:factory or file.py:factory."),
    space: str = typer.Option("default", help="Search space name or YAML path."),
    trials: int = typer.Option(DEFAULT_TRIALS, help="Trials per sampler and seed at the most (the search's default budget)."),
    budget_s: Optional[float] = typer.Option(
        None, "--budget-s",
        help="Wall time per search, its sensitivity pass included (default: the uniform grid's own wall time, so every "
        "method gets the same; without --uniform, no limit but --trials).",
    ),
    final: bool = typer.Option(True, help="Give every method's chosen model the space's final fine-tune before comparing."),
    seeds: int = typer.Option(3, help="Seeds per sampler (0 .. N-1)."),
    samplers: str = typer.Option(",".join(SAMPLERS), help="Comma-separated samplers to compare."),
    uniform: bool = typer.Option(True, help="Also run the uniform plans (one pruning ratio everywhere x one precision)."),
    measure: bool = typer.Option(True, help="Time the chosen models with onnxruntime on this machine."),
    rounds: int = typer.Option(3, help="Interleaved timing rounds of the chosen models (lowest median kept)."),
    backend: str = typer.Option("estimate", help="Latency backend of the searches: estimate, local or ssh."),
    min_accuracy: str = typer.Option("-1", help="Accuracy floor: absolute (0.97, 97%) or points below baseline (-1)."),
    out: Path = typer.Option(Path("reports/bench"), help="Folder for bench.db, results.csv, summary.json, bench.html."),
    threads: Optional[int] = THREADS_OPTION,
) -> None:
    """Compare samplers (by hypervolume over seeds) and uniform baselines at equal budgets; resumable."""
    import pandas as pd

    from autocomp.anchors import uniform_grid
    from autocomp.bench import UNIFORM, measure_chosen, overhead, peak_rss_mb, result_rows, run_bench, summarize
    from autocomp.latency import get_backend
    from autocomp.objective import SearchContext
    from autocomp.profiles import load_profile, with_threads
    from autocomp.report.bench_page import write_bench_page
    from autocomp.search_space import load_space
    from autocomp.tasks import load_task, task_name

    from autocomp.study import parse_accuracy_spec

    check_range("--trials", trials, low=1)
    check_range("--seeds", seeds, low=1)
    check_range("--rounds", rounds, low=1)
    check_range("--budget-s", budget_s, low=0, low_open=True)
    check_threads(threads)
    parse_accuracy_spec(min_accuracy)
    names = [s.strip() for s in samplers.split(",") if s.strip()]
    unknown = [s for s in names if s not in SAMPLERS]
    if not names or unknown:
        raise ConfigError(f"--samplers {samplers!r}: choose from {', '.join(SAMPLERS)} (comma-separated)")
    profile = with_threads(load_profile(device), threads)
    search_space = load_space(space)
    loaded_task = load_task(task)
    out_dir = out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with console.status(f"preparing {task_name(loaded_task)} (the first run trains the built-in model, about a minute)"):
        teacher = loaded_task.build_model()
    distributions = search_space.distributions(teacher, supported_bits=profile.supported_bits, example_inputs=loaded_task.example_inputs())
    plans = uniform_grid(distributions, supported_bits=profile.supported_bits) if uniform else []
    ctx = SearchContext(
        task=loaded_task, teacher=teacher, space=search_space, profile=profile,
        backend=get_backend(backend, profile=profile), estimator=get_backend("estimate", profile=profile),
        out_dir=out_dir, accuracy_floor=None, latency_budget_ms=None,
    )
    settings = {"task": task, "device": device, "space": space, "backend": backend, "threads": profile.runtime.threads}
    columns = (SpinnerColumn(), TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("bench", total=len(names) * seeds * trials + len(plans))

        def on_end(name: str, trial) -> None:
            progress.update(bar, advance=1, description=f"{name}: trial {trial.number} {trial.state.name.lower()}")

        runs = run_bench(
            ctx, storage=f"sqlite:///{out_dir / 'bench.db'}", samplers=names, seeds=range(seeds),
            trials=trials, settings=settings, min_accuracy=min_accuracy, uniform=plans, on_trial_end=on_end,
            budget_s=budget_s, final=final,
        )
    baseline_ms = None
    if measure:
        with console.status(f"timing the chosen models with onnxruntime ({rounds} interleaved rounds)"):
            here = with_threads(load_profile("local"), threads)  # this machine, as the models would be deployed on it
            timer = get_backend("local", profile=here, cache=False)
            baseline_ms = measure_chosen(runs, backend=timer, profile=here, rounds=rounds)
    rows = result_rows(runs, baseline_measured_ms=baseline_ms)
    pd.DataFrame(rows).to_csv(out_dir / "results.csv", index=False)
    summary = summarize(rows)
    profiled = [r for r in runs if r.method == DEFAULT_SAMPLER]
    times = overhead(profiled or runs)
    lines = summary_lines(
        summary, times, baseline_measured_ms=baseline_ms, peak_mb=peak_rss_mb(), uniform=UNIFORM,
        profiled=DEFAULT_SAMPLER if profiled else "all methods",
    )
    summary_json = {**summary, "overhead_s": times, "baseline_measured_ms": baseline_ms, "lines": lines}
    (out_dir / "summary.json").write_text(json.dumps(summary_json, indent=2, default=str))
    page = write_bench_page(out_dir / "bench.html", runs, rows, lines, title=f"autocomp bench: {task_name(loaded_task)} on {profile.name}")
    for line in lines:
        console.print(line, highlight=False)
    console.print(f"results: {out_dir / 'results.csv'}\npage: {page}", highlight=False)


def summary_lines(
    summary: dict, times: dict, *, baseline_measured_ms: float | None, peak_mb: float, uniform: str, profiled: str
) -> list[str]:
    """The benchmark's findings as sentences, each with its numbers (printed, and on the page)."""
    methods = summary["methods"]
    lines = []
    for method, m in methods.items():
        text = f"{method}: median hypervolume {m['hypervolume']:.4f} over {m['runs']} run(s) of {m['wall_s']:.0f} s"
        if m["latency_ms"] is not None:
            text += f"; chosen {m['latency_ms']:.3f} ms estimated at {100 * m['accuracy']:.2f}%"
        if m["measured_ms"] is not None and baseline_measured_ms:
            text += f", {m['measured_ms']:.3f} ms measured ({baseline_measured_ms / m['measured_ms']:.2f}x the baseline's {baseline_measured_ms:.3f} ms)"
        lines.append(text)
    default, best = summary["default_sampler"], summary["best_sampler"]
    if default in methods and "random" in methods:
        d, r = methods[default]["hypervolume"], methods["random"]["hypervolume"]
        lines.append(f"default sampler {default} vs random: median hypervolume {d:.4f} vs {r:.4f} ({'beats' if d > r else 'does NOT beat'} random)")
    if best is not None:
        lines.append(f"best sampler by median hypervolume: {best}" + ("" if best == default else f" (the default is {default})"))
    if default in methods and uniform in methods:
        d, u = methods[default]["measured_ms"], methods[uniform]["measured_ms"]
        if d and u:
            da, ua = methods[default]["shipped_accuracy"], methods[uniform]["shipped_accuracy"]
            lines.append(
                f"measured, after the same final fine-tune: {default}'s chosen model {d:.3f} ms vs the best uniform plan "
                f"{u:.3f} ms ({u / d:.2f}x) at {100 * da:.2f}% vs {100 * ua:.2f}% accuracy"
                + (" (target >= 1.3x at equal or better accuracy: " + ("met" if u / d >= 1.3 and da >= ua else "missed") + ")")
            )
    if times.get("wall"):
        wall = times["wall"]
        own = wall - times["finetune"] - times["evaluate"] - times["latency"]
        lines.append(
            f"time per search ({profiled}): fine-tuning {100 * times['finetune'] / wall:.1f}%, evaluation {100 * times['evaluate'] / wall:.1f}%, "
            f"latency {100 * times['latency'] / wall:.1f}%, export+quantization {100 * times['export'] / wall:.1f}%, "
            f"other {100 * times['other'] / wall:.1f}%: the tool's own overhead is {100 * own / wall:.1f}%"
        )
    lines.append(f"peak memory of this process: {peak_mb:.0f} MB")
    return lines
