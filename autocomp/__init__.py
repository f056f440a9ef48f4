"""autocomp: hardware-aware automated model-compression search."""

from autocomp.errors import AutocompError
from autocomp.plan import CompressionPlan
from autocomp.tasks import Task, load_task

__all__ = ["AutocompError", "CompressionPlan", "Task", "load_task"]
__version__ = "0.1.0"
