"""The ``autocomp`` command line: a thin Typer app over the library.

Each command group lives in its own module and registers itself on ``app``.
The library never prints or exits; ``main`` turns an AutocompError into one
line on stderr and exit code 2.
"""

from __future__ import annotations

import logging
import sys

from autocomp.cli.app import app, console, err_console
from autocomp.errors import AutocompError

# Command modules register on import.
from autocomp.cli import bench_cmd, board_cmd, latency_cmd, pipeline_cmd, search_cmd  # noqa: E402,F401

__all__ = ["app", "console", "err_console", "main"]


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        app(args=argv, standalone_mode=False)
    except AutocompError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # Click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            err_console.print("aborted")
            sys.exit(130)
        raise
