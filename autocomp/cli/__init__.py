"""The ``autocomp`` command line: a thin Typer app over the library.

Each command group lives in its own module and registers itself on ``app``.
The library never prints or exits; ``main`` turns an AutocompError, and every
usage error Typer raises, into one line on stderr and exit code 2.

Only what the package declares is imported here: Typer vendors its own copy of
Click (``typer._click``) and a fresh install has no ``click`` package, so usage
errors are caught as ``typer.exceptions.TyperException``, Typer's public root
of them, never as Click's classes.
"""

from __future__ import annotations

import logging
import sys
from typing import Sequence

from typer.exceptions import Abort, TyperException

from autocomp.cli.app import app, console, err_console, error_line
from autocomp.errors import AutocompError, first_line

# Command modules register on import.
from autocomp.cli import bench_cmd, board_cmd, latency_cmd, pipeline_cmd, search_cmd, split_cmd, worker_cmd  # noqa: E402,F401

__all__ = ["app", "console", "err_console", "main"]

PROG = "autocomp"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BUG = 3


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: run one command and exit with its code.

    0 ok, 1 a failed outcome, 2 bad input, 3 a bug in autocomp (traceback saved to a file), 130 Ctrl-C.
    """
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=args, prog_name=PROG, standalone_mode=False)
    except AutocompError as exc:
        error_line(str(exc))
        sys.exit(EXIT_USAGE)
    except (KeyboardInterrupt, Abort):
        err_console.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except TyperException as exc:  # usage errors: bad value, unknown option or command, missing argument
        if exc.format_message().strip():  # empty for a bare 'autocomp', whose help Typer has just printed
            error_line(_usage_message(exc, args))
        sys.exit(getattr(exc, "exit_code", EXIT_USAGE) or EXIT_USAGE)
    except Exception as exc:  # a bug of ours: one line for the user, the traceback in a file for the report
        log_path = _save_traceback()
        first = first_line(exc)
        error_line(
            f"unexpected {type(exc).__name__}: {first} (a bug in autocomp, not your input; the traceback is in "
            f"{log_path}: please attach it to a bug report)"
        )
        sys.exit(EXIT_BUG)
    # In non-standalone mode Typer returns typer.Exit's code (Ctrl-C arrives as Exit(130)) instead of exiting.
    sys.exit(code if isinstance(code, int) else 0)


def _save_traceback() -> str:
    import tempfile
    import traceback

    from autocomp.paths import cache_dir

    text = traceback.format_exc()
    try:
        path = cache_dir() / "last-error.log"
        path.write_text(text)
    except OSError:  # an unwritable cache: a temp file still keeps it
        with tempfile.NamedTemporaryFile("w", prefix="autocomp-error-", suffix=".log", delete=False) as handle:
            handle.write(text)
            path = handle.name
    return str(path)


def _usage_message(exc: TyperException, args: list[str]) -> str:
    """One line: the command, what is wrong (with the value given, where there is one) and where help is."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else PROG
    message = " ".join(exc.format_message().split()).removesuffix(".")
    param = getattr(exc, "param", None)
    raw = _raw_value(args, getattr(param, "opts", None) or [])
    if raw is not None:
        message = f"{message} (got {raw!r})"
    return f"{command}: {message}; see '{command} --help'"


def _raw_value(args: list[str], opts: list[str]) -> str | None:
    """The text a user gave for an option (``--x 3`` or ``--x=3``), to quote it back in the error."""
    for i, arg in enumerate(args):
        for opt in opts:
            if arg == opt and i + 1 < len(args):
                return args[i + 1]
            if opt.startswith("--") and arg.startswith(opt + "="):
                return arg[len(opt) + 1 :]
    return None
