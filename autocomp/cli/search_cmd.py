"""autocomp CLI commands (search_cmd)."""

from autocomp.cli.app import app  # noqa: F401
