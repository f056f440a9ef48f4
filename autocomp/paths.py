"""Where autocomp keeps per-user state: trained weights (cache) and calibrations (config).

``AUTOCOMP_CACHE_DIR`` and ``AUTOCOMP_CONFIG_DIR`` override the platform defaults
(tests point them at temporary folders).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable

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


def given_file(text: str, *, what: str) -> Path | None:
    """``text`` as a YAML file when it reads as a path (then it must exist), or None: it is a name to look up.
    ``what`` is the file's kind, ``device profile``: a missing file names it and the way out."""
    if not (text.endswith((".yaml", ".yml")) or os.sep in text):
        return None
    path = Path(text)
    if not path.is_file():
        from autocomp.errors import ConfigError

        raise ConfigError(f"{what} file {path} does not exist; give a {what.split()[0]} name or an existing .yaml file")
    return path


def yaml_files(folders: Iterable[Path]) -> dict[str, Path]:
    """``name -> file`` for the ``*.yaml`` files of ``folders``; for a name in several, the first folder's wins."""
    found: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found


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
