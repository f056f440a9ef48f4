"""Where autocomp keeps per-user state: trained weights (cache) and calibrations (config).

``AUTOCOMP_CACHE_DIR`` and ``AUTOCOMP_CONFIG_DIR`` override the platform defaults
(tests point them at temporary folders).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    path = Path(os.environ.get("AUTOCOMP_CACHE_DIR") or platformdirs.user_cache_dir("autocomp"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_dir() -> Path:
    path = Path(os.environ.get("AUTOCOMP_CONFIG_DIR") or platformdirs.user_config_dir("autocomp"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dirs(folder: str, *, env: str) -> list[Path]:
    """Folders holding shipped YAML data (``device_profiles``, ``search_spaces``), in search order.

    ``env`` (os.pathsep-separated) first, then the repository root (an editable
    install), then ``<prefix>/share/autocomp/<folder>`` (a wheel install, via
    the data-files in pyproject.toml).
    """
    dirs = [Path(p) for p in os.environ.get(env, "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parent.parent / folder)
    dirs.append(Path(sys.prefix) / "share" / "autocomp" / folder)
    return dirs


RUN_FOLDERS = ("baseline", "trials", "final")
"""The folders of a run folder whose files a study records by path."""


def in_run(recorded: str | Path, run_dir: Path) -> Path:
    """A file a study recorded (an absolute path), found in ``run_dir`` when the run folder was moved or copied.

    Studies record where they wrote a trial's files; a run folder moved to another disk or machine
    keeps them under the same ``trials/NNNN/...`` tail, so that tail is looked up in ``run_dir``.
    """
    path = Path(recorded)
    if path.exists():
        return path
    tails = [i for i, part in enumerate(path.parts) if part in RUN_FOLDERS]
    if tails:
        moved = run_dir.joinpath(*path.parts[tails[-1]:])
        if moved.exists():
            return moved
    return path
