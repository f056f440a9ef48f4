"""Render the example report in headless Chromium and save ``reports/example-report.png``.

    python tests/report/make_screenshot.py [--out reports/example-report.png] [--keep-html PATH]
    python tests/report/make_screenshot.py --report reports/digits-jetson-nano/report.html

With ``--report`` an existing report (a real search's) is screenshotted; otherwise the
report is built from the synthetic study in ``study_factory.py``. Either is opened exactly
the way the Chromium test opens it (same flags, network closed), so the screenshot shows
what the test checked. The HTML (about 5 MB) is written to a temp dir and not kept unless
asked: it is not committed.

The Chromium helpers here are shared with ``test_report_html.py``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
INSTALL_HINT = (
    "headless Chromium is needed to check the HTML report and was not found on PATH; "
    "install Debian's package with `sudo apt-get install -y chromium` (CI installs it)"
)


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_command(binary: str, user_data_dir: Path, *extra: str) -> list[str]:
    """Headless Chromium with everything that would reach the network switched off."""
    return [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={user_data_dir}",
        *extra,
    ]


def screenshot(html_path: Path, png_path: Path, *, width: int = 1400, height: int = 3000, timeout_s: float = 120) -> Path:
    """Screenshot ``html_path`` at ``width`` x ``height`` after the plots have rendered."""
    binary = find_chromium()
    if binary is None:
        raise SystemExit(INSTALL_HINT)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="autocomp-chromium-") as profile:
        cmd = chromium_command(
            binary,
            Path(profile),
            f"--screenshot={png_path.resolve()}",
            f"--window-size={width},{height}",
            "--virtual-time-budget=20000",
            html_path.resolve().as_uri(),
        )
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout_s)
    return png_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "example-report.png")
    parser.add_argument("--keep-html", type=Path, default=None, help="also write the report HTML here")
    parser.add_argument("--report", type=Path, default=None, help="screenshot this existing report.html instead")
    args = parser.parse_args(argv)
    if args.report is not None:
        screenshot(args.report, args.out)
        print(f"wrote {args.out}")
        return 0

    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(REPO))
    import optuna

    from autocomp.report import write_report
    from study_factory import make_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = make_study()
    with tempfile.TemporaryDirectory(prefix="autocomp-report-") as tmp:
        html_path = write_report(study, args.keep_html or Path(tmp) / "report.html")
        screenshot(html_path, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
