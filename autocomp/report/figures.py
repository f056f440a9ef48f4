"""Drawing functions: the tables from ``autocomp.report.data`` -> Plotly figures.

No numbers are computed here beyond what a plot needs (sorting, picking the top rows);
everything a reader could check lives in ``data.py`` and is tested there. User-supplied
names (layers, parameters) are HTML-escaped before they reach Plotly, which interprets a
subset of HTML in text.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from autocomp.precision import weight_bits
from autocomp.knobs import KNOBS
from autocomp.report.data import OBJECTIVE_LABELS, Importances, StudyMeta, baseline_point, format_bytes

TEMPLATE = "plotly_white"
COLOURS = {
    "baseline": "#d62728",
    "chosen": "#ff7f0e",
    "infeasible": "#a8a8a8",
    "pareto_edge": "#111111",
    "base_bar": "#b8c4d6",
    "chosen_bar": "#1f6fb4",
    "best": "#2ca02c",
}
OBJECTIVE_COLOURS = {"accuracy": "#1f6fb4", "latency_ms": "#ff7f0e", "size_bytes": "#2ca02c"}
AXIS_LABELS = {"accuracy_pct": "accuracy (%)", "latency_ms": "latency (ms)", "size_mb": "size (MB)", "size_bytes": "size"}
SIZE_TICKS = {"tickformat": ".3~s", "ticksuffix": "B"}
"""Byte axes in SI units (4.58kB, 1.2MB), the units of ``format_bytes``. Plotly formats the
ticks itself so that they follow a zoom; fixed tick text would not."""


def _ticks(column: str) -> dict[str, Any]:
    return dict(SIZE_TICKS) if column == "size_bytes" else {}


def plot_text(name: Any) -> str:
    """A user-supplied name made safe and literal inside Plotly text (Plotly reads some HTML)."""
    return html.escape(str(name), quote=False)


def _hover(frame: pd.DataFrame) -> list[str]:
    lines = []
    for row in frame.itertuples(index=False):
        text = (
            f"trial {row.trial}<br>accuracy {row.accuracy_pct:.2f}%<br>latency {row.latency_ms:.3g} ms"
            f"<br>size {format_bytes(row.size_bytes)}"
        )
        cells = [f"{name} {getattr(row, name)}" for name in KNOBS if isinstance(getattr(row, name, None), str) and getattr(row, name)]
        if cells:
            text += "<br>" + "<br>".join(plot_text(cell) for cell in cells)
        if isinstance(row.violations, str) and row.violations:
            text += f"<br>violates: {plot_text(row.violations)}"
        lines.append(text)
    return lines


def pareto_figure(
    trials: pd.DataFrame, meta: StudyMeta, *, x: str = "latency_ms", colour: str = "size_bytes", title: str | None = None
) -> go.Figure:
    """Accuracy (y) against ``x``, coloured by ``colour``: feasible trials, the Pareto front
    (outlined diamonds), infeasible trials (grey crosses), the baseline (star) and the chosen
    trial (ring), with the accuracy floor and latency budget as dashed lines. Sizes are plotted
    as ``size_bytes`` with SI tick labels."""
    done = trials[trials["state"] == "COMPLETE"].astype({"size_bytes": float})
    feasible = done[done["feasible"] == True]  # noqa: E712
    infeasible = done[done["feasible"] != True]  # noqa: E712
    front = feasible[feasible["pareto"]]
    rest = feasible[~feasible["pareto"]]
    cmin = float(np.nanmin(done[colour])) if len(done) else 0.0
    cmax = float(np.nanmax(done[colour])) if len(done) else 1.0
    fig = go.Figure()

    def marker(frame: pd.DataFrame, **extra: Any) -> dict[str, Any]:
        return dict(color=frame[colour], coloraxis="coloraxis", **extra)

    fig.add_trace(
        go.Scatter(
            x=rest[x], y=rest["accuracy_pct"], mode="markers", name="feasible",
            marker=marker(rest, size=9, opacity=0.75, line=dict(width=0.5, color="white")),
            text=_hover(rest), hoverinfo="text",
        )
    )
    front_sorted = front.sort_values(x)
    fig.add_trace(
        go.Scatter(
            x=front_sorted[x], y=front_sorted["accuracy_pct"], mode="markers", name="Pareto front",
            marker=marker(front_sorted, size=14, symbol="diamond", line=dict(width=2, color=COLOURS["pareto_edge"])),
            text=_hover(front_sorted), hoverinfo="text",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=infeasible[x], y=infeasible["accuracy_pct"], mode="markers", name="infeasible (violates a constraint)",
            marker=dict(size=8, symbol="x-thin", line=dict(width=2, color=COLOURS["infeasible"]), color=COLOURS["infeasible"]),
            text=_hover(infeasible), hoverinfo="text",
        )
    )
    base = baseline_point(meta)
    if base is not None and not np.isnan(base.get(x, np.nan)) and not np.isnan(base["accuracy_pct"]):
        fig.add_trace(
            go.Scatter(
                x=[base[x]], y=[base["accuracy_pct"]], mode="markers+text", name="baseline (uncompressed)",
                marker=dict(size=18, symbol="star", color=COLOURS["baseline"], line=dict(width=1, color="white")),
                text=["baseline"], textposition="bottom center", textfont=dict(color=COLOURS["baseline"]),
                hovertext=[f"baseline<br>accuracy {base['accuracy_pct']:.2f}%<br>latency {base['latency_ms']:.3g} ms"
                           f"<br>size {format_bytes(base['size_bytes'])}"],
                hoverinfo="text",
            )
        )
    chosen = done[done["chosen"]]
    if len(chosen):
        fig.add_trace(
            go.Scatter(
                x=chosen[x], y=chosen["accuracy_pct"], mode="markers+text", name=f"chosen (trial {int(chosen['trial'].iloc[0])})",
                marker=dict(size=26, symbol="circle-open", line=dict(width=3), color=COLOURS["chosen"]),
                text=[f"chosen #{int(chosen['trial'].iloc[0])}"], textposition="top center",
                textfont=dict(color=COLOURS["chosen"], size=13), hoverinfo="skip",
            )
        )
    if meta.accuracy_floor is not None:
        fig.add_hline(
            y=meta.accuracy_floor * meta.accuracy_scale, line=dict(dash="dash", color="#888", width=1),
            annotation_text="accuracy floor", annotation_position="bottom right",
        )
    if x == "latency_ms" and meta.latency_budget_ms is not None:
        fig.add_vline(
            x=meta.latency_budget_ms, line=dict(dash="dash", color="#888", width=1),
            annotation_text="latency budget", annotation_position="top left",
        )
    fig.update_layout(
        template=TEMPLATE,
        title=title or f"accuracy vs {AXIS_LABELS[x]} (colour: {AXIS_LABELS[colour]})",
        xaxis=dict(title=AXIS_LABELS[x], **_ticks(x)), yaxis_title="accuracy (%)",
        coloraxis=dict(colorscale="Viridis", cmin=cmin, cmax=cmax,
                       colorbar=dict(title=AXIS_LABELS[colour], len=0.75, **_ticks(colour))),
        legend=dict(orientation="h", yanchor="bottom", y=-0.32, xanchor="left", x=0),
        height=520, margin=dict(l=60, r=30, t=60, b=110),
    )
    return fig


def history_figure(history: pd.DataFrame, meta: StudyMeta) -> go.Figure:
    """One panel per objective against trial number: each trial (grey when infeasible) and
    the running best among feasible trials, with the baseline as a dashed line."""
    specs = [("accuracy_pct", "best_accuracy_pct"), ("latency_ms", "best_latency_ms"), ("size_bytes", "best_size_bytes")]
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[AXIS_LABELS[c] for c, _ in specs])
    base = baseline_point(meta) or {}
    feasible = history["feasible"] == True  # noqa: E712
    for row, (column, best) in enumerate(specs, start=1):
        first = row == 1
        fig.add_trace(go.Scatter(x=history.loc[feasible, "trial"], y=history.loc[feasible, column], mode="markers",
                                 name="feasible trial", legendgroup="f", showlegend=first,
                                 marker=dict(size=7, color=COLOURS["chosen_bar"])), row=row, col=1)
        fig.add_trace(go.Scatter(x=history.loc[~feasible, "trial"], y=history.loc[~feasible, column], mode="markers",
                                 name="infeasible trial", legendgroup="i", showlegend=first,
                                 marker=dict(size=7, symbol="x-thin", line=dict(width=2, color=COLOURS["infeasible"]))),
                      row=row, col=1)
        fig.add_trace(go.Scatter(x=history["trial"], y=history[best], mode="lines", line=dict(shape="hv", color=COLOURS["best"], width=2),
                                 name="best feasible so far", legendgroup="b", showlegend=first),
                      row=row, col=1)
        value = base.get(column, np.nan)
        if not np.isnan(value):
            fig.add_hline(y=value, line=dict(dash="dash", color=COLOURS["baseline"], width=1), row=row, col=1,
                          annotation_text="baseline", annotation_position="top left",
                          annotation_font_color=COLOURS["baseline"])
    fig.update_xaxes(title_text="trial", row=3, col=1)
    fig.update_yaxes(row=3, col=1, **SIZE_TICKS)
    fig.update_layout(template=TEMPLATE, height=700,
                      legend=dict(orientation="h", yanchor="bottom", y=1.04, xanchor="left", x=0),
                      margin=dict(l=60, r=30, t=60, b=50))
    return fig


def layers_figure(layers: pd.DataFrame) -> go.Figure:
    """Chosen plan against the baseline per layer: channels, bit-width, estimated latency."""
    names = [plot_text(n) for n in layers["layer"]]
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=["output channels", "bit-width", "estimated latency (ms)"])
    panels = [("baseline_channels", "channels"), ("baseline_bits", "bits"), ("baseline_latency_ms", "est_latency_ms")]
    for row, (base_col, chosen_col) in enumerate(panels, start=1):
        first = row == 1
        base, chosen = layers[base_col], layers[chosen_col]
        if chosen_col == "bits":  # dynamic int8 ("dyn8") stores 8-bit weights
            base, chosen = base.map(weight_bits), chosen.map(weight_bits)
        fig.add_trace(go.Bar(x=names, y=base, name="baseline", legendgroup="b", showlegend=first,
                             marker_color=COLOURS["base_bar"]), row=row, col=1)
        fig.add_trace(go.Bar(x=names, y=chosen, name="chosen plan", legendgroup="c", showlegend=first,
                             marker_color=COLOURS["chosen_bar"]), row=row, col=1)
    fig.update_yaxes(tickvals=[8, 16, 32], row=2, col=1)
    fig.update_layout(template=TEMPLATE, barmode="group", title="chosen plan vs baseline, layer by layer",
                      height=640, legend=dict(orientation="h", yanchor="bottom", y=1.04, xanchor="right", x=1),
                      margin=dict(l=60, r=30, t=90, b=60))
    return fig


def importance_figure(result: Importances, *, top: int = 12) -> go.Figure:
    """Horizontal bars of each objective's PED-ANOVA importance for the ``top`` parameters
    (ranked by their largest importance over the objectives)."""
    table = result.table
    ranking = table.groupby("param")["importance"].max().sort_values(ascending=False).head(top)
    params = list(ranking.index[::-1])  # most important on top
    fig = go.Figure()
    for objective, group in table.groupby("objective", sort=False):
        values = group.set_index("param")["importance"].reindex(params).fillna(0.0)
        fig.add_trace(go.Bar(y=[plot_text(p) for p in params], x=values.to_numpy(), orientation="h",
                             name=OBJECTIVE_LABELS.get(str(objective), plot_text(objective)),
                             marker_color=OBJECTIVE_COLOURS.get(str(objective))))
    fig.update_layout(template=TEMPLATE, barmode="group", title=f"parameter importances (top {len(params)}, PED-ANOVA)",
                      xaxis_title="importance (normalised per objective)", height=max(360, 110 + 40 * len(params)),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1),
                      margin=dict(l=200, r=30, t=80, b=50))
    return fig


def sensitivity_figure(frame: pd.DataFrame) -> go.Figure:
    """Heatmap of the sensitivity profile: parameter (row) x value (column) -> accuracy drop without
    fine-tuning, hover: estimated latency saved. Rows in profile order; uniform changes (``bits/*``) too."""
    ok = frame[frame["error"] == ""]
    params = list(dict.fromkeys(ok["param"]))
    values = list(dict.fromkeys(ok["value"]))
    drop = ok.pivot_table(index="param", columns="value", values="accuracy_drop", aggfunc="first").reindex(index=params, columns=values)
    saved = ok.pivot_table(index="param", columns="value", values="latency_saved_pct", aggfunc="first").reindex(index=params, columns=values)
    hover = [[f"{plot_text(p)} = {plot_text(v)}<br>accuracy drop {drop.at[p, v]:.4f}<br>latency saved {saved.at[p, v]:.1f}%"
              if not pd.isna(drop.at[p, v]) else "" for v in values] for p in params]
    fig = go.Figure(go.Heatmap(z=drop.to_numpy(), x=[plot_text(v) for v in values], y=[plot_text(p) for p in params],
                               text=hover, hoverinfo="text", colorscale="Reds", colorbar=dict(title="accuracy drop")))
    fig.update_layout(template=TEMPLATE, title="sensitivity: each change alone, before fine-tuning",
                      height=max(320, 120 + 18 * len(params)), margin=dict(l=320, r=30, t=60, b=50),
                      yaxis=dict(autorange="reversed"))
    return fig


def cuts_figure(cuts: pd.DataFrame, chosen: str | None, *, link: str) -> go.Figure:
    """Every way to split the uncompressed model, in graph order (both ends first): the bytes each sends per
    sample (bars) and its estimated end-to-end latency over the study's link (line); the chosen plan's cut marked."""
    from plotly.subplots import make_subplots

    names = [plot_text(n) for n in cuts["name"]]
    colours = [COLOURS["chosen"] if name == (chosen or "device") else COLOURS["base_bar"] for name in cuts["name"]]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=names, y=cuts["bytes_fp32"], marker_color=colours, name="bytes sent (fp32)",
                         hovertext=[f"{n}: {format_bytes(b)} sent" for n, b in zip(names, cuts["bytes_fp32"])], hoverinfo="text"),
                  secondary_y=False)
    fig.add_trace(go.Scatter(x=names, y=cuts["total_ms"], mode="lines+markers", name=f"end to end over {plot_text(link)} (ms)",
                             marker=dict(color=COLOURS["chosen_bar"]),
                             hovertext=[f"{n}: {e:.3f} ms edge + {t - e - s:.3f} ms link + {s:.3f} ms server"
                                        for n, e, s, t in zip(names, cuts["edge_ms"], cuts["server_ms"], cuts["total_ms"])],
                             hoverinfo="text"), secondary_y=True)
    fig.update_layout(template=TEMPLATE, height=380, margin=dict(l=60, r=60, t=60, b=120),
                      title="where to cut the uncompressed model: bytes sent and end-to-end latency (the chosen plan's cut in its colour)")
    fig.update_yaxes(title_text="bytes sent per sample", type="log", secondary_y=False)
    fig.update_yaxes(title_text="ms", secondary_y=True)
    return fig
