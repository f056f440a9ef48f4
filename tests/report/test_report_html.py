"""The report page in a real headless Chromium: every figure renders, no script errors,
the table sorts, hostile names stay text, and nothing needs the network.

A copy of the report gets a small probe script at the top of <head>: it records window
errors, unhandled rejections, console.error and any alert() call, then (after load) checks
that every Plotly div holds Plotly's ``main-svg``, clicks a table header, and writes the
result as JSON into a <pre> that ``--dump-dom`` hands back. Chromium runs with the network
switched off, so a CDN reference would fail to render. Missing Chromium is a failure with
an install hint, not a skip: CI installs it.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

import optuna
import plotly.offline
import pytest

from autocomp.report import write_report
from make_screenshot import INSTALL_HINT, chromium_command, find_chromium
from study_factory import make_empty_study, make_study

HOSTILE_STUDY = "<script>alert(1)</script>"
HOSTILE_LAYER = "<img src=x onerror=alert(2)>"
HOSTILE_DEVICE = '"><svg onload=alert(3)>'
HOSTILE_TASK = "<b>bold&task</b>"
EXPECTED_PLOTS = {"fig-pareto-latency", "fig-pareto-size", "fig-layers", "fig-history", "fig-importance"}

PROBE = """<script>
(function () {
  var errors = [];
  window.__errors = errors;
  window.addEventListener('error', function (e) {
    errors.push('error: ' + (e.message || (e.target && (e.target.src || e.target.href)) || String(e)));
  }, true);
  window.addEventListener('unhandledrejection', function (e) { errors.push('rejection: ' + String(e.reason)); });
  var consoleError = console.error;
  console.error = function () { errors.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); consoleError.apply(console, arguments); };
  window.alert = function (m) { errors.push('alert called: ' + m); };
  window.addEventListener('load', function () {
    setTimeout(function () {
      var plots = {};
      document.querySelectorAll('.plotly-graph-div').forEach(function (div) {
        plots[div.id] = { svg: !!div.querySelector('.main-svg'), traces: div.querySelectorAll('.trace').length };
      });
      var sorted = {};
      var table = document.getElementById('trials');
      if (table) {
        var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
        var col = heads.findIndex(function (h) { return h.textContent.trim().indexOf('latency ms') === 0; });
        var read = function () {
          return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[col].getAttribute('data-v'); });
        };
        heads[col].click(); sorted.asc = read();
        heads[col].click(); sorted.desc = read();
      }
      var name = document.getElementById('study-name');
      var tickText = Array.prototype.map.call(document.querySelectorAll('#fig-layers text'), function (t) { return t.textContent; });
      var out = document.createElement('pre');
      out.id = '__report_check';
      out.textContent = JSON.stringify({
        errors: errors, plots: plots, sorted: sorted, title: document.title,
        studyName: name ? name.textContent : null, imgs: document.querySelectorAll('img').length,
        svgOnload: document.querySelectorAll('svg[onload]').length, tickText: tickText,
        bodyText: document.body.innerText
      });
      document.body.appendChild(out);
    }, 1500);
  });
})();
</script>"""


def render_in_chromium(report: Path, tmp_path: Path) -> dict:
    """Open a probed copy of ``report`` in headless Chromium; return the probe's JSON."""
    binary = find_chromium()
    if binary is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    page = report.read_text(encoding="utf-8")
    assert page.count("<head>") == 1
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    cmd = chromium_command(binary, tmp_path / "chromium-profile", "--dump-dom", "--virtual-time-budget=30000", probed.as_uri())
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'<pre id="__report_check">(.*?)</pre>', result.stdout, re.S)
    assert found, "the probe never reported: the page did not finish loading\n" + result.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory) -> Path:
    """A realistic study in which every user-supplied name tries to inject markup."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = make_study(
        study_name=HOSTILE_STUDY, task_name=HOSTILE_TASK, device_name=HOSTILE_DEVICE, extra_layer=HOSTILE_LAYER, n_trials=30
    )
    return write_report(study, tmp_path_factory.mktemp("report") / "reports" / "x" / "report.html")


@pytest.fixture(scope="module")
def hostile_probe(hostile_report, tmp_path_factory) -> dict:
    return render_in_chromium(hostile_report, tmp_path_factory.mktemp("chromium"))


def test_every_figure_renders_without_script_errors(hostile_probe):
    assert hostile_probe["errors"] == []
    assert set(hostile_probe["plots"]) == EXPECTED_PLOTS
    for plot_id, state in hostile_probe["plots"].items():
        assert state["svg"], f"{plot_id} has no main-svg: Plotly did not draw it"
        assert state["traces"] > 0, f"{plot_id} drew no traces"


def test_trials_table_sorts_by_clicked_column(hostile_probe):
    def numbers(values):
        return [float(v) for v in values if v is not None]

    ascending = numbers(hostile_probe["sorted"]["asc"])
    descending = numbers(hostile_probe["sorted"]["desc"])
    assert len(ascending) == 30  # every complete trial has a latency
    assert ascending == sorted(ascending)
    assert descending == sorted(descending, reverse=True)
    assert hostile_probe["sorted"]["asc"][-1] is None  # failed trials (no latency) go last


def test_user_supplied_names_render_as_text(hostile_probe, hostile_report):
    assert hostile_probe["studyName"] == HOSTILE_STUDY
    assert HOSTILE_STUDY in hostile_probe["title"]
    assert hostile_probe["imgs"] == 0 and hostile_probe["svgOnload"] == 0
    text = hostile_probe["bodyText"]
    for name in (HOSTILE_TASK, HOSTILE_DEVICE, HOSTILE_LAYER):
        assert name in text
    assert HOSTILE_LAYER in hostile_probe["tickText"]  # literal in Plotly's axis labels too
    page = hostile_report.read_text(encoding="utf-8")
    assert HOSTILE_STUDY not in page and HOSTILE_LAYER not in page


def test_page_is_self_contained(hostile_report):
    page = hostile_report.read_text(encoding="utf-8")
    plotly_js = plotly.offline.get_plotlyjs()
    assert page.count(plotly_js) == 1, "plotly.js must be inlined exactly once"
    ours = page.replace(plotly_js, "")  # plotly.js itself mentions its CDN (topojson URLs)
    assert len(ours) < 400_000
    found = re.findall(r"<script[^>]+src=|<link[^>]*>|https?://[^\s\"'<]+", ours)
    assert found == [], "the page refers to something outside itself"
    assert not list(hostile_report.parent.glob("*.tmp"))


def test_study_without_complete_trials_gets_a_clear_page(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    report = write_report(make_empty_study(n_failed=3), tmp_path / "report.html")
    assert report.stat().st_size < 100_000  # no figures, so no plotly.js
    probe = render_in_chromium(report, tmp_path)
    assert probe["errors"] == []
    assert probe["plots"] == {}
    assert "No complete trials" in probe["bodyText"]
    assert "pruned every channel" in probe["bodyText"]
    assert len(probe["sorted"]["asc"]) == 3


def test_study_without_optional_attrs_renders(tmp_path):
    """An older or interrupted study: no study attrs, no chosen trial, one complete trial."""
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.add_trial(
        optuna.trial.create_trial(
            values=[0.91, 2.5, 12_345],
            params={"prune/conv1": 0.25},
            distributions={"prune/conv1": optuna.distributions.FloatDistribution(0.0, 0.7)},
        )
    )
    page = write_report(study, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "No trial was chosen" in page
    assert "only 1 complete trial(s)" in page
    assert "does not record the device profile" in page
    assert 'id="fig-pareto-latency"' in page and 'id="fig-layers"' not in page
