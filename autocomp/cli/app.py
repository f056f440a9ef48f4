"""The Typer app object and the consoles shared by every command module."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="autocomp",
    help="Hardware-aware automated model compression: search pruning, quantization and distillation "
    "for a target edge device.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
