"""Where autocomp keeps per-user state: trained weights (cache) and calibrations (config).

``AUTOCOMP_CACHE_DIR`` and ``AUTOCOMP_CONFIG_DIR`` override the platform defaults
(tests point them at temporary folders).
"""

from __future__ import annotations

import os
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
