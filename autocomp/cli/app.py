"""The Typer app object and the consoles shared by every command module.

Both consoles print text as it is (``markup=False``): messages carry user
input (paths, names, ``pip install 'autocomp[ssh]'``) whose square brackets
rich would otherwise read as markup and swallow. Styling is applied with
``rich.text.Text`` where it is wanted.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.text import Text

app = typer.Typer(
    name="autocomp",
    help="Hardware-aware automated model compression: search pruning, quantization and distillation "
    "for a target edge device.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(markup=False, highlight=False, soft_wrap=True)  # paths and commands stay copyable
err_console = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def styled(label: str, style: str, message: str) -> Text:
    """``label`` in ``style``, then ``message`` verbatim (no markup is read from it)."""
    return Text.assemble((label, style), " ", message)


def error_line(message: str) -> None:
    """The one line a user sees for a bad input: 'error: <what is wrong and the fix>' on stderr, never wrapped."""
    err_console.print(styled("error:", "bold red", " ".join(message.split())))
