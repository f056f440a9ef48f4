"""Error types. The library raises these; only the CLI turns them into one line and exit code 2.

Every message names the problem and, where there is one, the fix.
"""


class AutocompError(Exception):
    """Root of every error autocomp reports to a user as one line."""


class ConfigError(AutocompError):
    """Bad user input: a task spec, plan, search space, device profile or CLI option."""


class TaskError(ConfigError):
    """A user task cannot be loaded or does not satisfy the Task protocol."""


class PlanError(ConfigError):
    """A compression plan that does not fit the model (unknown layer, ratio out of range, bad bit-width)."""


class CompressionError(AutocompError):
    """A compressor could not produce a model from a valid plan."""


class ExportError(AutocompError):
    """PyTorch -> ONNX export failed, or the ONNX file disagrees with the PyTorch outputs."""


class LatencyError(AutocompError):
    """A latency backend could not price or time a model."""


class DeviceError(AutocompError):
    """A real board is unreachable, untrusted, or lacks what a measurement needs."""


class TrialStopped(AutocompError):
    """Our own early-stopping rule (Optuna cannot prune multi-objective trials) ended a trial."""


class TrialScreened(TrialStopped):
    """The multi-fidelity screen (``autocomp.fidelity``) ended a trial after its short fine-tune."""


def first_line(exc: BaseException, *, limit: int = 300) -> str:
    """The first line of an exception's message, at most ``limit`` characters: what a one-line error quotes."""
    return (str(exc).strip().splitlines() or [""])[0][:limit]
