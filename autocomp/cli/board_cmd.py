"""autocomp CLI commands (board_cmd)."""

from autocomp.cli.app import app  # noqa: F401
