"""Assemble the report: one self-contained HTML page that works offline.

plotly.js is inlined once in the head (about 5 MB; no CDN, so the page opens on a machine
with no network), every figure is a ``full_html=False`` fragment, and the trials table is
sorted by a few lines of vanilla JavaScript. Every user-supplied name (study, task, device,
layers, parameters, sources, failure reasons, paths, versions) is HTML-escaped here or in
``figures.py``.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any, Collection, Iterable

import optuna
import pandas as pd
import plotly.graph_objects as go
import plotly.offline

from autocomp.precision import PRECISION_NAMES, precision
from autocomp.record import StudyRecord
from autocomp.report import data, figures

PLOT_CONFIG = {"displaylogo": False, "responsive": True}

CSS = """
:root { --ink:#1d2633; --muted:#5b6675; --line:#d9dee5; --accent:#1f6fb4; --bad:#b42318; --good:#1a7f37; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink);
       margin: 0; background: #fff; }
main { max-width: 1320px; margin: 0 auto; padding: 20px 28px 60px; }
header { border-bottom: 3px solid var(--accent); padding-bottom: 10px; margin-bottom: 16px; }
h1 { font-size: 26px; margin: 0 0 6px; } h2 { font-size: 20px; margin: 30px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 16px; margin: 14px 0 6px; }
.meta { color: var(--muted); margin: 0; } .meta b { color: var(--ink); font-weight: 600; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; font-size: 14px; }
.cards { display: flex; gap: 14px; flex-wrap: wrap; margin: 10px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; min-width: 190px; background: var(--bg); }
.card .k { color: var(--muted); font-size: 13px; } .card .v { font-size: 22px; font-weight: 650; }
.card .s { color: var(--muted); font-size: 13px; }
.note { background: #fff8e6; border-left: 4px solid #e0a400; padding: 8px 12px; margin: 10px 0; }
.note.info { background: #eef5fc; border-left-color: var(--accent); }
.empty { background: #fdeceb; border-left: 4px solid var(--bad); padding: 14px 16px; font-size: 17px; }
.grid2 { display: grid; grid-template-columns: minmax(300px, 0.8fr) minmax(420px, 1.2fr); gap: 24px; align-items: start; }
.grid2f { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: var(--bg); position: sticky; top: 0; }
table.sortable th { cursor: pointer; user-select: none; white-space: nowrap; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
/* A table wider than the page scrolls sideways inside its box instead of running past the edge.
   The shadows (local covers over fixed shades) show there is more to the side even where
   scrollbars are hidden: overlay scrollbars, screenshots. */
.scroll { max-height: 640px; max-width: 100%; overflow: auto; border: 1px solid var(--line);
          background: linear-gradient(to right, #fff 30%, rgba(255,255,255,0)) left center / 40px 100% no-repeat local,
                      linear-gradient(to left, #fff 30%, rgba(255,255,255,0)) right center / 40px 100% no-repeat local,
                      radial-gradient(farthest-side at 0 50%, rgba(0,0,0,.2), rgba(0,0,0,0)) left center / 14px 100% no-repeat scroll,
                      radial-gradient(farthest-side at 100% 50%, rgba(0,0,0,.2), rgba(0,0,0,0)) right center / 14px 100% no-repeat scroll; }
#trials td, #layers td { white-space: nowrap; } #trials th, #trials td { padding: 4px 6px; }
#trials th { white-space: normal; } #trials td.wrap { white-space: normal; min-width: 100px; }
pre.cmd { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; margin: 6px 0;
          white-space: pre-wrap; overflow-wrap: anywhere; font-size: 13px; }
pre.cmd code { background: none; padding: 0; }
tr.chosen td { background: #fff1e0; font-weight: 600; } tr.pareto td:first-child { border-left: 4px solid var(--ink); }
tr.infeasible td { color: #8a8f98; } tr.FAIL td, tr.PRUNED td { color: var(--bad); }
.facts td:first-child { color: var(--muted); white-space: nowrap; width: 1%; }
ul.why { margin: 6px 0; padding-left: 20px; } ul.why li { margin: 3px 0; }
.tag { display: inline-block; border-radius: 4px; padding: 0 6px; font-size: 12px; font-weight: 600; }
.tag.est { background: #fff1e0; color: #8a4b00; } .tag.meas { background: #e6f4ea; color: var(--good); }
.delta.bad { color: var(--bad); } .delta.good { color: var(--good); }
code { background: var(--bg); padding: 0 3px; border-radius: 3px; }
"""

SORT_JS = """
(function () {
  function key(cell, numeric) {
    var raw = cell.getAttribute('data-v');
    if (raw === null) raw = cell.textContent;
    if (!numeric) return raw.toLowerCase();
    var v = parseFloat(raw);
    return isNaN(v) ? null : v;
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener('click', function () {
        var asc = th.getAttribute('aria-sort') !== 'ascending';
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
        var numeric = th.classList.contains('num');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col], numeric), y = key(b.cells[col], numeric);
          if (x === y) return 0;
          if (x === null) return 1;   /* blanks last, whatever the direction */
          if (y === null) return -1;
          return (x < y ? -1 : 1) * (asc ? 1 : -1);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
"""


def esc(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _isnan(value: Any) -> bool:
    try:
        return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
    except TypeError:
        return False


def _precision(bits: Any) -> str:
    value = precision(bits)
    return "–" if value is None else PRECISION_NAMES[value]


def _fmt(value: Any, spec: str = ".3g", suffix: str = "") -> str:
    return "–" if _isnan(value) else f"{value:{spec}}{suffix}"


def _figure_html(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)


def table(headers: list[tuple[str, bool]], rows: Iterable[tuple[str, list[tuple[str, Any]]]], *, table_id: str,
           sortable: bool = False, wrap: Collection[str] = ()) -> str:
    """Rows are (css class, [(display html, sort value)]); headers are (label, numeric).

    Cells of the columns labelled in ``wrap`` (long free text) may wrap, so the table stays narrow.
    """
    head = "".join(f'<th class="{"num" if num else ""}" scope="col">{esc(label)}</th>' for label, num in headers)
    body = []
    for css, cells in rows:
        tds = []
        for (label, num), (shown, sort_value) in zip(headers, cells):
            attr = "" if sort_value is None or _isnan(sort_value) else f' data-v="{esc(sort_value)}"'
            classes = " ".join(c for c, on in (("num", num), ("wrap", label in wrap)) if on)
            tds.append(f'<td class="{classes}"{attr}>{shown}</td>')
        body.append(f'<tr class="{esc(css)}">{"".join(tds)}</tr>')
    cls = ' class="sortable"' if sortable else ""
    return f'<table id="{table_id}"{cls}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _trials_table_html(trials: pd.DataFrame, *, size_label: str = "size") -> str:
    knob_cells = data.knob_cells(trials)  # the techniques some trial uses: a line each in the plan column
    headers = [
        ("trial", True), ("state", False), ("accuracy %", True), ("latency ms", True), ("p90 ms", True),
        (size_label, True), ("params", True), ("feasible", False), ("Pareto", False), ("violations", False),
        ("plan", False), ("latency source", False),
        ("seconds", True), ("fail reason", False),
    ]
    rows = []
    for r in trials.itertuples(index=False):
        css = [r.state]
        if r.chosen:
            css.append("chosen")
        if r.pareto:
            css.append("pareto")
        if r.feasible is False:
            css.append("infeasible")
        feasible = "" if r.feasible is None else ("yes" if r.feasible else "no")
        rows.append((" ".join(css), [
            (f"{r.trial}{' ★' if r.chosen else ''}", r.trial),
            (esc(r.state), r.state),
            (_fmt(r.accuracy_pct, ".2f"), r.accuracy_pct),
            (_fmt(r.latency_ms), r.latency_ms),
            (_fmt(r.latency_p90_ms), r.latency_p90_ms),
            (esc(data.format_bytes(r.size_bytes)), r.size_bytes),
            (_fmt(r.params, ","), r.params),
            (feasible, feasible),
            ("yes" if r.pareto else "", "yes" if r.pareto else ""),
            (esc(r.violations), r.violations),
            _plan_cell(r, knob_cells),
            (esc(r.latency_source) + (f'<br><small>{esc(r.latency_sure)}</small>' if r.latency_sure else ""), r.latency_source),
            (_fmt(r.seconds, ".1f"), r.seconds),
            (esc(r.fail_reason), r.fail_reason),
        ]))
    return table(headers, rows, table_id="trials", sortable=True, wrap=("violations", "plan", "latency source", "fail reason"))


def _plan_cell(row: Any, names: list[str]) -> tuple[str, str]:
    """A trial's plan, a line per technique (``knobs.summaries``), sorted by its text."""
    lines = [f"{name} {getattr(row, name)}" for name in names if getattr(row, name)]
    return "<br>".join(esc(line) for line in lines), " · ".join(lines)


def _layers_table_html(layers: pd.DataFrame) -> str:
    # attention heads are a column only for models that have them (transformers)
    with_heads = "heads" in layers and pd.to_numeric(layers["heads"], errors="coerce").notna().any()
    extra = data.knob_columns(layers)  # a knob's own cells, shown as they come
    headers = [
        ("layer", False), ("channels", True), *([("heads", True)] if with_heads else []), ("pruned", True),
        ("sparsity", True), ("bits", True), ("est. ms", True), ("speedup", True),
        *((column.replace("_", " "), True) for column in extra),
    ]

    def arrow(a: Any, b: Any, spec: str) -> str:
        return f"{_fmt(a, spec)} → {_fmt(b, spec)}"

    rows = []
    for r in layers.itertuples(index=False):
        heads = [(arrow(r.baseline_heads, r.heads, "g"), r.heads)] if with_heads else []
        rows.append(("", [
            (f"<code>{esc(r.layer)}</code>", r.layer),
            (_removed(r) or arrow(r.baseline_channels, r.channels, "g"), r.channels),
            *heads,
            (_fmt(r.prune_ratio * 100, ".0f", "%"), r.prune_ratio),
            (_fmt(r.sparsity_ratio * 100, ".0f", "%"), r.sparsity_ratio),
            (f"{_precision(r.baseline_bits)} → {_precision(r.bits)}", _precision(r.bits)),
            (arrow(r.baseline_latency_ms, r.est_latency_ms, ".3g"), r.est_latency_ms),
            (_fmt(r.speedup, ".2f", "×"), r.speedup),
            *((_plain(getattr(r, column)), getattr(r, column)) for column in extra),
        ]))
    return table(headers, rows, table_id="layers", sortable=True)


def _plain(value: Any) -> str:
    """A knob's own cell: a number as ``g``, anything else escaped, nothing for a missing value."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _fmt(value, "g")
    return "" if value is None or (isinstance(value, float) and value != value) else esc(str(value))


def _removed(row: Any) -> str:
    """The channels cell of a layer whose whole block depth pruning removed."""
    block = getattr(row, "removed_block", None)
    if not isinstance(block, str) or not block:
        return ""
    return f"{_fmt(row.baseline_channels, 'g')} → removed with <code>{esc(block)}</code>"


def _header(meta: data.StudyMeta) -> str:
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(meta.state_counts.items())) or "no trials"
    items = [("task", meta.task), ("device", meta.device), ("search space", meta.space), ("latency backend", meta.backend)]
    facts = " · ".join(f"{label} <b>{esc(value)}</b>" for label, value in items if value)
    return (
        f'<header><h1>autocomp report: <span id="study-name">{esc(meta.study_name)}</span></h1>'
        f'<p class="meta">{facts}</p><p class="meta">trials: {esc(counts)}</p>'
        '<nav><a href="#summary">summary</a><a href="#run">how this search ran</a><a href="#pareto">Pareto front</a><a href="#plan">chosen plan</a>'
        '<a href="#history">history</a><a href="#importance">importances</a><a href="#trials-section">all trials</a></nav>'
        "</header>"
    )


def _provenance_html(prov: dict[str, Any], meta: data.StudyMeta) -> str:
    sources = ", ".join(f"<code>{esc(k)}</code> ×{v}" for k, v in prov["sources"].items()) or "none recorded"
    kind = prov["kind"]
    tag = {"estimated": '<span class="tag est">ESTIMATED</span>', "measured": '<span class="tag meas">MEASURED</span>',
           "mixed": '<span class="tag est">MIXED</span>'}.get(kind, '<span class="tag est">UNKNOWN</span>')
    explain = {
        "estimated": f"latencies come from the cost model of the <b>{esc(meta.device)}</b> profile, not from running the model on the device",
        "measured": "latencies were measured by running the exported ONNX file",
        "mixed": "some latencies were estimated by the cost model and some measured: compare them with care",
    }.get(kind, "the study does not record where its latencies come from")
    base = f"; baseline: <code>{esc(prov['baseline_source'])}</code>" if prov.get("baseline_source") else ""
    sure = f" How sure the chosen model's estimate is: {esc(prov['chosen_sure'])}." if prov.get("chosen_sure") else ""
    return f'<p class="note info" id="latency-provenance">{tag} {explain}. Sources: {sources}{base}.{sure}</p>'


def _side_by_side_html(pair: tuple[float, float] | None) -> str:
    if not pair:
        return ""
    trial_ms, baseline_ms = pair
    return (f'<br>timed again side by side: {_fmt(trial_ms, ".3g", " ms")} vs {_fmt(baseline_ms, ".3g", " ms")} '
            f'baseline · {_fmt(baseline_ms / trial_ms, ".2f", "× faster")}')


def _summary_html(summary: dict[str, Any] | None, meta: data.StudyMeta, prov: dict[str, Any]) -> str:
    parts = ['<section id="summary"><h2>summary</h2>']
    if summary is None:
        parts.append('<p class="note">No trial was chosen: no complete trial satisfied the selection rule'
                     + (f" (<i>{esc(meta.chosen_rule)}</i>)" if meta.chosen_rule else "") + ".</p>")
    else:
        delta = summary["accuracy_delta_pts"]
        cls = "bad" if not _isnan(delta) and delta < 0 else "good"
        cards = [
            ("chosen trial", f"#{summary['trial']}", esc(meta.chosen_rule or "")),
            ("accuracy", _fmt(summary["accuracy_pct"], ".2f", "%"),
             f'baseline {_fmt(summary["baseline_accuracy_pct"], ".2f", "%")} '
             f'<span class="delta {cls}">({_fmt(delta, "+.2f")} pts)</span>'),
            ("latency", _fmt(summary["latency_ms"], ".3g", " ms"),
             f'baseline {_fmt(summary["baseline_latency_ms"], ".3g", " ms")} · {_fmt(summary["speedup"], ".2f", "× faster")}'
             + _side_by_side_html(summary.get("side_by_side"))),
            (meta.size_label, esc(data.format_bytes(summary["size_bytes"])),
             f'baseline {esc(data.format_bytes(summary["baseline_size_bytes"]))} · {_fmt(summary["size_ratio"], ".2f", "× smaller")}'),
        ]
        parts.append('<div class="cards">' + "".join(
            f'<div class="card"><div class="k">{k}</div><div class="v">{v}</div><div class="s">{s}</div></div>'
            for k, v, s in cards) + "</div>")
    constraints = []
    if meta.accuracy_floor is not None:
        constraints.append(f"accuracy ≥ {meta.accuracy_floor * meta.accuracy_scale:g}%")
    if meta.latency_budget_ms is not None:
        constraints.append(f"latency ≤ {meta.latency_budget_ms:g} ms")
    if constraints:
        parts.append(f'<p class="meta">constraints: {esc(" and ".join(constraints))} (trials violating one are infeasible)</p>')
    parts.append(_provenance_html(prov, meta))
    parts.append("</section>")
    return "".join(parts)


def _run_html(run: data.RunFacts) -> str:
    """The "how this search ran" section: the export command first, then what a rerun needs."""
    if run.export_trial is None:
        lead = ("No trial was chosen, so there is no compressed model to export; this exports the uncompressed "
                "baseline (<code>--trial baseline</code>):")
    else:
        lead = f"Export the chosen trial (#{run.export_trial}), its model files and metrics:"

    def facts(rows: list[tuple[str, str]], table_id: str) -> str:
        return (f'<table class="facts" id="{table_id}">'
                + "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>")

    return (
        '<section id="run"><h2>how this search ran</h2><div class="grid2">'
        f'<div><h3>export</h3><p>{lead}</p>'
        f'<pre class="cmd" id="export-command"><code>{esc(run.export_command)}</code></pre>'
        f'<p class="meta"><code>--study</code> is the run folder holding <code>study.db</code> (where '
        "<code>autocomp search</code> wrote this report); the command exports into its <code>export</code> folder.</p></div>"
        f'<div><h3>search</h3>{facts(run.rows, "run-facts")}<h3>versions</h3>{facts(run.version_rows, "run-versions")}</div>'
        "</div></section>"
    )


def _device_html(meta: data.StudyMeta, layers: pd.DataFrame, notes: list[str] = ()) -> str:
    facts = data.device_facts(meta)
    reasons = data.device_reasons(meta, layers) + list(notes)
    title = f'device: <code>{esc(meta.device)}</code>' if meta.device else "device"
    out = [f'<div id="device"><h3>{title}</h3>']
    if facts:
        out.append('<table class="facts">' + "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in facts) + "</table>")
    else:
        out.append('<p class="note">The study does not record the device profile.</p>')
    if reasons:
        out.append('<h3>why this plan on this device</h3><ul class="why" id="device-reasons">'
                   + "".join(f"<li>{esc(r)}</li>" for r in reasons) + "</ul>")
    out.append("</div>")
    return "".join(out)


def _importance_html(result: data.Importances) -> str:
    out = ['<section id="importance"><h2>parameter importances</h2>']
    if not result.table.empty:
        out.append(_figure_html(figures.importance_figure(result), "fig-importance"))
        out.append('<p class="meta">PED-ANOVA over complete trials: which parameters matter for reaching good values '
                   "of each objective (accuracy negated, so high accuracy counts as good).</p>")
    for note in result.notes:
        out.append(f'<p class="note importance-note">{esc(note)}</p>')
    out.append("</section>")
    return "".join(out)


def _split_html(study: optuna.Study, meta: data.StudyMeta) -> str:
    view = data.split_view(study, meta)
    if view is None:
        return ""
    link = view.link
    where = "the model stays on the device (nothing chosen beats the baseline)" if view.chosen_cut in (None, "device") else (
        "all on the server, the input sent" if view.chosen_cut == "server" else f"cut after {esc(view.chosen_cut)}")
    out = ['<section id="split"><h2>edge/cloud split</h2>',
           f'<p>Over {esc(link.get("name"))} ({_fmt(link.get("bandwidth_mbps"), "g")} Mbit/s, {_fmt(link.get("rtt_ms"), "g")} ms round trip, '
           f'±{_fmt(link.get("error_pct"), "g")}%: {esc(link.get("source"))}): {where}.</p>',
           '<p class="meta">The same trials re-priced for other links, without re-training: each trial\'s edge and server '
           "parts as estimated in its trial, plus that link's round trip and bytes at its bandwidth; the fastest feasible "
           "trial per link, or the baseline.</p>"]
    headers = [("link", False), ("Mbit/s", True), ("round trip ms", True), ("trial", False), ("runs", False),
               ("total ms", True), ("why", False)]
    rows = [("", [
        (esc(r.link), r.link), (_fmt(r.bandwidth_mbps, "g"), r.bandwidth_mbps), (_fmt(r.rtt_ms, "g"), r.rtt_ms),
        (esc(str(r.trial)), str(r.trial)),
        (esc({"device": "all on the device", "server": "all on the server"}.get(r.cut, f"cut after {r.cut}")), r.cut),
        (_fmt(r.total_ms, ".3f"), r.total_ms), (esc(r.reason), r.reason),
    ]) for r in view.repriced.itertuples(index=False)]
    out.append(table(headers, rows, table_id="split-links", sortable=True, wrap=("why",)))
    if not view.cuts.empty:
        out.append(_figure_html(figures.cuts_figure(view.cuts, view.chosen_cut, link=str(link.get("name"))), "fig-cuts"))
    out.append("</section>")
    return "".join(out)


def _sensitivity_html(study: optuna.Study) -> str:
    frame, proposals = data.sensitivity_table(study), data.proposals_table(study)
    if frame.empty and proposals.empty:
        return ""
    seconds = StudyRecord.of(study).sensitivity_s
    out = ['<section id="sensitivity"><h2>sensitivity and proposals</h2>',
           f'<p class="meta">{len(frame)} changes, each alone, scored on their ONNX files without fine-tuning and priced '
           "by the device's estimator"
           + (f" in {seconds:.0f} s" if seconds is not None else "")
           + "; the plans proposed from them were queued after the hand-made anchors and fine-tuned like any trial. "
           "Failed changes are never proposed.</p>"]
    if not frame.empty:
        out.append(_figure_html(figures.sensitivity_figure(frame), "fig-sensitivity"))
    if not proposals.empty:
        headers = [("trial", True), ("round", True), ("predicted accuracy", True), ("accuracy", True),
                   ("predicted latency", True), ("latency ms", True), ("predicted in", False), ("priced before fine-tuning", False)]
        rows = [("", [
            (str(r.trial), r.trial), (str(r.round), r.round),
            (_fmt(r.predicted_accuracy, ".4f"), r.predicted_accuracy), (_fmt(r.accuracy, ".4f"), r.accuracy),
            (_fmt(r.predicted_latency_ms, ".3f"), r.predicted_latency_ms), (_fmt(r.latency_ms, ".3f"), r.latency_ms),
            (esc(r.latency_unit), r.latency_unit), (esc(r.priced), r.priced),
        ]) for r in proposals.itertuples(index=False)]
        out.append(table(headers, rows, table_id="proposals", sortable=True))
    out.append("</section>")
    return "".join(out)


def render(study: optuna.Study, *, run_dir: Path | None = None) -> str:
    """The whole report page for ``study`` as one HTML string.

    ``run_dir`` is the run folder (holding ``study.db``) that the export command names; None
    writes a ``RUN_DIR`` placeholder there.
    """
    meta = data.study_meta(study)
    trials = data.trials_table(study)
    prov = data.latency_provenance(trials, meta)
    run = _run_html(data.run_facts(study, run_dir=run_dir, meta=meta))
    n_complete = int((trials["state"] == "COMPLETE").sum())
    body = [_header(meta)]
    has_figures = n_complete > 0
    if not has_figures:
        body.append(
            '<section id="summary"><p class="empty" id="no-complete-trials">No complete trials in this study yet, so there '
            f"is no Pareto front, history or importance to show. {len(trials)} trial(s) finished without a result; their "
            "reasons are listed below.</p></section>"
        )
        body.append(run)
        if meta.profile:
            body.append(f'<section id="plan"><h2>device</h2>{_device_html(meta, pd.DataFrame())}</section>')
    else:
        layers = data.chosen_layers(study, meta)
        body.append(_summary_html(data.chosen_summary(trials, meta), meta, prov))
        body.append(run)
        body.append(
            '<section id="pareto"><h2>Pareto front</h2>'
            '<p class="meta">Feasible trials are coloured dots; the Pareto front (best trade-offs among feasible trials '
            "over all three objectives) is outlined diamonds; infeasible trials are grey crosses; the star is the "
            "uncompressed baseline; the ring is the chosen trial.</p>"
            '<div class="grid2f">'
            + _figure_html(figures.pareto_figure(trials, meta, x="latency_ms", colour="size_bytes",
                                                 title="accuracy vs latency (colour: size)"), "fig-pareto-latency")
            + _figure_html(figures.pareto_figure(trials, meta, x="size_bytes", colour="latency_ms",
                                                 title="accuracy vs size (colour: latency)"), "fig-pareto-size")
            + "</div></section>"
        )
        plan = ['<section id="plan"><h2>chosen plan vs baseline</h2><div class="grid2">', _device_html(meta, layers, data.technique_notes(trials, layers))]
        if layers.empty:
            plan.append('<div><p class="note">No chosen trial, so there is no plan to compare with the baseline.</p></div>')
        else:
            plan.append('<div><h3>layer by layer <span class="meta">(baseline → chosen)</span></h3>'
                        f'<div class="scroll">{_layers_table_html(layers)}</div></div>')
        plan.append("</div>")
        if not layers.empty:
            plan.append(_figure_html(figures.layers_figure(layers), "fig-layers"))
        plan.append("</section>")
        body.append("".join(plan))
        body.append('<section id="history"><h2>optimization history</h2>'
                    + _figure_html(figures.history_figure(data.history_table(trials), meta), "fig-history") + "</section>")
        body.append(_importance_html(data.importances(study)))
        body.append(_sensitivity_html(study))
        body.append(_split_html(study, meta))
    body.append(
        f'<section id="trials-section"><h2>all trials ({len(trials)})</h2>'
        '<p class="meta">Click a column header to sort; a table wider than the page scrolls sideways. ★ chosen trial; '
        "a dark left edge marks the Pareto front; grey rows are infeasible; red rows failed or were stopped early.</p>"
        f'<div class="scroll">{_trials_table_html(trials, size_label=meta.size_label)}</div></section>'
    )
    return page(f"autocomp report: {meta.study_name}", "".join(body), with_plotly=has_figures)


def page(title: str, body_html: str, *, with_plotly: bool) -> str:
    """A self-contained page: plotly.js inlined once (works offline), the report's style and sortable tables."""
    plotly_js = f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>' if with_plotly else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style>{plotly_js}</head>"
        f'<body><main>{body_html}</main><script>{SORT_JS}</script></body></html>'
    )
