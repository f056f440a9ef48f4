"""autocomp: hardware-aware automated model-compression search.

The public names load on first use (PEP 562), so ``import autocomp`` and the
console script start without importing torch: a Ctrl-C during the seconds that
takes lands in ``autocomp.console``'s handler, not in a traceback.
"""

from typing import Any

from autocomp.errors import AutocompError

__all__ = ["AutocompError", "CompressionPlan", "SearchResult", "Task", "load_task", "search"]
__version__ = "0.1.0"

_LAZY = {
    "CompressionPlan": "autocomp.plan", "Task": "autocomp.tasks", "load_task": "autocomp.tasks",
    "search": "autocomp.api", "SearchResult": "autocomp.api",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'autocomp' has no attribute {name!r}")
