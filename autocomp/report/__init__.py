"""The HTML report of a search: ``write_report(study, out_path)``.

``data`` turns a study into tables (pure, tested), ``figures`` draws them with Plotly,
``html`` assembles one self-contained page (plotly.js inline, works offline).
"""

from __future__ import annotations

from pathlib import Path

import optuna

from autocomp.report.html import render

__all__ = ["render", "write_report"]


def write_report(study: optuna.Study, out_path: Path, *, run_dir: Path | None = None) -> Path:
    """Write the report of ``study`` to ``out_path`` (parents created) and return the path.

    The page is self-contained (about 5 MB with plotly.js inline) and works offline. A study
    with no complete trial gets a short page saying so, with the failure reasons. ``run_dir``
    is the run folder the page's export command names; by default the report's own folder,
    where ``autocomp search`` writes it beside ``study.db``. It is made absolute, so the
    command works from any working directory.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    page = render(study, run_dir=Path(run_dir if run_dir is not None else out_path.parent).resolve())
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out_path)  # never leave a half-written report behind
    return out_path
