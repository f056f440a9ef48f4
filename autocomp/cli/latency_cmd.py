"""autocomp CLI commands (latency_cmd)."""

from autocomp.cli.app import app  # noqa: F401
