"""autocomp CLI commands (pipeline_cmd)."""

from autocomp.cli.app import app  # noqa: F401
