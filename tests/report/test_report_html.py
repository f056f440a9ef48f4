"""The report page in a real headless Chromium: every figure renders, no script errors,
the table sorts and scrolls sideways instead of clipping, hostile names (and paths and
versions) stay text, and nothing needs the network.

A copy of the report gets a small probe script at the top of <head>: it records window
errors, unhandled rejections, console.error and any alert() call, then (after load) checks
that every Plotly div holds Plotly's ``main-svg``, clicks a table header, measures the trials
table's box scrolled to its right end, and writes the result as JSON into a <pre> that ``--dump-dom`` hands back. Chromium runs with the network
switched off, so a CDN reference would fail to render. Missing Chromium is a failure with
an install hint, not a skip: CI installs it.
"""

from __future__ import annotations

import html
import json
import re
import shlex
import subprocess
from pathlib import Path

import optuna
import plotly.offline
import pytest

from autocomp.report import write_report
from make_screenshot import INSTALL_HINT, chromium_command, find_chromium
from study_factory import VERSIONS, make_empty_study, make_study

HOSTILE_STUDY = "<script>alert(1)</script>"
HOSTILE_LAYER = "<img src=x onerror=alert(2)>"
HOSTILE_DEVICE = '"><svg onload=alert(3)>'
HOSTILE_TASK = "<b>bold&task</b>"
HOSTILE_VERSION = "2.13.0+<img src=y onerror=alert(4)>"
HOSTILE_RUN_DIR = "<svg onload=alert(5)> 'run' & \"co\""  # a folder name: no slash
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
        var box = table.parentElement, wider = box.scrollWidth > box.clientWidth;
        box.scrollLeft = box.scrollWidth;
        var last = heads[heads.length - 1].getBoundingClientRect(), edge = box.getBoundingClientRect();
        var clip = { overflowX: getComputedStyle(box).overflowX, wider: wider, lastRight: last.right,
                     boxLeft: edge.left, boxRight: edge.right, viewport: document.documentElement.clientWidth };
        box.scrollLeft = 0;
      }
      var command = document.getElementById('export-command');
      var name = document.getElementById('study-name');
      var tickText = Array.prototype.map.call(document.querySelectorAll('#fig-layers text'), function (t) { return t.textContent; });
      var out = document.createElement('pre');
      out.id = '__report_check';
      out.textContent = JSON.stringify({
        errors: errors, plots: plots, sorted: sorted, title: document.title,
        studyName: name ? name.textContent : null, imgs: document.querySelectorAll('img').length,
        svgOnload: document.querySelectorAll('svg[onload]').length, tickText: tickText,
        clip: clip || null, exportCommand: command ? command.textContent : null, bodyText: document.body.innerText
      });
      document.body.appendChild(out);
    }, 1500);
  });
})();
</script>"""


def render_in_chromium(report: Path, tmp_path: Path, *, window_size: str | None = None) -> dict:
    """Open a probed copy of ``report`` in headless Chromium; return the probe's JSON.

    ``window_size`` ("1400,3000") replaces Chromium's default window (800 x 600).
    """
    binary = find_chromium()
    if binary is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    page = report.read_text(encoding="utf-8")
    assert page.count("<head>") == 1
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    window = [f"--window-size={window_size}"] if window_size else []
    cmd = chromium_command(binary, tmp_path / "chromium-profile", *window, "--dump-dom", "--virtual-time-budget=30000", probed.as_uri())
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
        study_name=HOSTILE_STUDY, task_name=HOSTILE_TASK, device_name=HOSTILE_DEVICE, extra_layer=HOSTILE_LAYER, n_trials=30,
        versions={**VERSIONS, "torch": HOSTILE_VERSION},
    )  # fmt: skip
    return write_report(study, tmp_path_factory.mktemp("report") / "reports" / HOSTILE_RUN_DIR / "report.html")


def export_command_of(report: Path) -> str:
    run_dir = report.parent.resolve()
    return shlex.join(["autocomp", "export", "--study", str(run_dir), "--out", str(run_dir / "export")])


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
    for name in (HOSTILE_TASK, HOSTILE_DEVICE, HOSTILE_LAYER, HOSTILE_VERSION):
        assert name in text
    assert HOSTILE_LAYER in hostile_probe["tickText"]  # literal in Plotly's axis labels too
    assert hostile_probe["exportCommand"] == export_command_of(hostile_report)  # the path, shell-quoted, as text
    page = hostile_report.read_text(encoding="utf-8")
    assert HOSTILE_STUDY not in page and HOSTILE_LAYER not in page


def test_trials_table_scrolls_sideways_instead_of_clipping(hostile_probe):
    """Chromium's default window is narrower than the table: its box scrolls, and scrolled to
    the end the last column lies inside the box, which itself fits the window."""
    clip = hostile_probe["clip"]
    assert clip["overflowX"] in ("auto", "scroll")
    assert clip["wider"], "the table fits the default window: this test no longer checks scrolling"
    assert clip["boxRight"] <= clip["viewport"] + 0.5
    assert clip["boxLeft"] - 0.5 <= clip["lastRight"] <= clip["boxRight"] + 0.5


def test_trials_table_fits_the_screenshot_width(tmp_path):
    """At the 1400 px of the example screenshot (which hides scrollbars) the whole table of a
    realistic study shows: long free-text cells wrap rather than push the last columns out of sight."""
    report = write_report(make_study(n_trials=30), tmp_path / "run" / "report.html")
    clip = render_in_chromium(report, tmp_path, window_size="1400,1000")["clip"]
    assert clip["viewport"] == 1400
    assert not clip["wider"], f"the trials table is wider than its box at 1400 px: {clip}"


def test_run_section_shows_export_command_seed_sampler_versions(hostile_report):
    page = hostile_report.read_text(encoding="utf-8")
    section = re.search(r'<section id="run">(.*?)</section>', page, re.S)
    assert section, "no 'how this search ran' section"
    run = section.group(1)
    assert "how this search ran" in run and 'href="#run"' in page
    assert f'<pre class="cmd" id="export-command"><code>{html.escape(export_command_of(hostile_report))}</code></pre>' in run
    assert "chosen trial (#" in run and "--trial baseline" not in run
    facts = dict(re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td></tr>", run))
    assert facts["sampler"] == "random" and facts["seed"] == "7"
    assert re.fullmatch(r"\d+ min \d\d s \(first trial start to last trial end, 34 finished trial\(s\)\)", facts["run time"])
    assert facts["task"] == html.escape(HOSTILE_TASK) and facts["device"] == html.escape(HOSTILE_DEVICE)
    assert facts["torch"] == html.escape(HOSTILE_VERSION) and facts["onnxruntime"] == VERSIONS["onnxruntime"]
    for raw in (HOSTILE_VERSION, HOSTILE_RUN_DIR, HOSTILE_TASK, HOSTILE_DEVICE):
        assert raw not in page


def test_sizes_are_in_human_units(hostile_report):
    page = hostile_report.read_text(encoding="utf-8").replace(plotly.offline.get_plotlyjs(), "")
    assert re.findall(r"\b0\.\d+ ?MB", page) == [], "a size below 1 MB is printed in MB"
    sizes = re.findall(r'<td class="num" data-v="(\d+)">([^<]*B)</td>', page)
    assert len(sizes) == 30  # one per complete trial
    assert all(re.fullmatch(r"\d+(\.\d+)? (B|kB|MB)", text) for _, text in sizes)


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
    command = shlex.join(["autocomp", "export", "--study", str(tmp_path.resolve()), "--out", str(tmp_path.resolve() / "export"),
                          "--trial", "baseline"])  # fmt: skip
    assert f'id="export-command"><code>{html.escape(command)}</code>' in page
    run = re.search(r'<section id="run">(.*?)</section>', page, re.S).group(1)
    facts = dict(re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td></tr>", run))
    assert facts["seed"] == facts["sampler"] == facts["versions"] == "not recorded"
    assert "12.3 kB" in page and not re.findall(r"\b0\.\d+ ?MB", page.replace(plotly.offline.get_plotlyjs(), ""))
    assert "only 1 complete trial(s)" in page
    assert "does not record the device profile" in page
    assert 'id="fig-pareto-latency"' in page and 'id="fig-layers"' not in page
