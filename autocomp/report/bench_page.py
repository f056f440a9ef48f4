"""The benchmark's page: every method's feasible trials overlaid, the results table and the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import plotly.graph_objects as go

from autocomp.report.data import format_bytes
from autocomp.report.figures import COLOURS, TEMPLATE, plot_text
from autocomp.report.html import PLOT_CONFIG, esc, page, table

METHOD_COLOURS = {"tpe": "#1f6fb4", "nsga2": "#2ca02c", "gp": "#9467bd", "random": "#8c564b", "uniform": "#ff7f0e"}
_COLUMNS = (
    ("method", False), ("seed", True), ("trials", True), ("feasible", True), ("hypervolume", True),
    ("chosen_trial", True), ("chosen_accuracy", True), ("chosen_latency_ms", True), ("chosen_size_bytes", True),
    ("measured_ms", True), ("wall_s", True),
)


def fronts_figure(runs: Sequence[Any]) -> go.Figure:
    """Accuracy vs latency of every feasible trial, one colour per method (all seeds together)."""
    fig = go.Figure()
    for method in dict.fromkeys(run.method for run in runs):
        points = [(t, run.seed) for run in runs if run.method == method for t in run.feasible()]
        fig.add_trace(
            go.Scatter(
                x=[t.values[1] for t, _ in points], y=[100 * t.values[0] for t, _ in points], mode="markers",
                name=plot_text(method), marker=dict(color=METHOD_COLOURS.get(method), size=8, opacity=0.75),
                text=[plot_text(f"{method} seed {seed} trial {t.number}") for t, seed in points],
                hovertemplate="%{text}<br>%{x:.3f} ms, %{y:.2f}%<extra></extra>",
            )
        )
    base = runs[0].baseline
    fig.add_trace(
        go.Scatter(
            x=[base.latency_ms], y=[100 * base.accuracy], mode="markers", name="baseline",
            marker=dict(symbol="star", size=16, color=COLOURS["baseline"]),
        )
    )
    fig.add_hline(y=100 * runs[0].floor, line_dash="dot", annotation_text="accuracy floor")
    fig.update_layout(
        template=TEMPLATE, title="feasible trials of every method (estimated latency)", height=520,
        xaxis_title="latency (ms)", yaxis_title="accuracy (%)",
    )
    return fig


def render_bench(runs: Sequence[Any], rows: Sequence[dict[str, Any]], summary_lines: Sequence[str], *, title: str) -> str:
    def cell(name: str, value: Any) -> tuple[str, Any]:
        if name.endswith("size_bytes") and isinstance(value, (int, float)) and not isinstance(value, bool):
            return esc(format_bytes(value)), value
        if isinstance(value, float):
            return esc(f"{value:.4g}"), value
        return esc(value), value

    headers = [(name.removesuffix("_bytes"), numeric) for name, numeric in _COLUMNS]  # sizes are shown in kB/MB
    body = [
        f"<header><h1>{esc(title)}</h1></header>",
        "<section><h2>summary</h2><ul>" + "".join(f"<li>{esc(line)}</li>" for line in summary_lines) + "</ul></section>",
    ]
    if runs:
        figure = fronts_figure(runs).to_html(full_html=False, include_plotlyjs=False, div_id="fig-fronts", config=PLOT_CONFIG)
        body.append(f'<section id="fronts"><h2>fronts</h2>{figure}</section>')
    body.append(
        '<section><h2>results</h2><div class="scroll">'
        + table(headers, (("", [cell(name, row[name]) for name, _ in _COLUMNS]) for row in rows), table_id="results", sortable=True)
        + "</div></section>"
    )
    return page(title, "".join(body), with_plotly=bool(runs))


def write_bench_page(path: Path, runs: Sequence[Any], rows: Sequence[dict[str, Any]], summary_lines: Sequence[str], *, title: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_bench(runs, rows, summary_lines, title=title), encoding="utf-8")
    return path
