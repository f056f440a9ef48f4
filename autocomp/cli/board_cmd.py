"""``autocomp board check``: can this board time models over SSH, and if not, what is missing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from autocomp.cli.app import app, console, styled
from autocomp.cli.checks import check_range
from autocomp.errors import ConfigError

board_app = typer.Typer(
    name="board",
    help="Real boards reached over SSH (the ssh latency backend).",
    no_args_is_help=True,
)
app.add_typer(board_app, name="board")

# The board options, the same on every command that can reach a board.
BOARD_OPTION = typer.Option(None, "--board", help="user@host[:port] of the board (overrides the profile's ssh: host).")
KEY_OPTION = typer.Option(None, "--key", help="Private key file for the board (its path is used, never its contents).")
KNOWN_HOSTS_OPTION = typer.Option(
    None, "--known-hosts", help="known_hosts file that verifies the board's host key (default ~/.ssh/known_hosts)."
)
PYTHON_OPTION = typer.Option(None, "--python", help="The board's python (default: the profile's ssh: python, or python3).")


def resolve_target(
    *,
    profile,
    board: str | None,
    key: Path | None,
    known_hosts: Path | None,
    python: str | None = None,
):
    """The SshTarget from ``profile`` (a DeviceProfile or None) and the overriding options.

    Shared with the measure/search/calibrate commands so ``--board``/``--key`` mean the same everywhere.
    """
    from autocomp import profiles

    device = profile.name if profile is not None else None
    if board:
        parsed = profiles.parse_board(board)
        if profile is not None and profile.ssh is not None:  # a new address; the profile's key and python stay
            target = dataclasses.replace(profile.ssh, host=parsed.host, user=parsed.user, port=parsed.port)
        else:
            target = parsed
    elif profile is not None and profile.ssh is not None:
        target = profile.ssh
    elif profile is not None:
        raise ConfigError(
            f"device profile {device!r} has no ssh: section; add ssh: {{host, user, port, key, python}} "
            "to it or pass --board user@host[:port]"
        )
    else:
        raise ConfigError("no board given: pass --device NAME (a profile with an ssh: section) or --board user@host[:port]")
    return _overridden(target, key=key, known_hosts=known_hosts, python=python)


def _overridden(target, *, key: Path | None, known_hosts: Path | None, python: str | None):
    """``target`` with the --key/--known-hosts/--python that were given."""
    given = {"key": None if key is None else str(key), "known_hosts": None if known_hosts is None else str(known_hosts), "python": python}
    return dataclasses.replace(target, **{k: v for k, v in given.items() if v is not None})


def board_args(*, board: str | None, key: Path | None, known_hosts: Path | None, python: str | None) -> list[str]:
    """The board options as given, for a child process (``autocomp search --jobs``) to take the same boards."""
    given = {"--board": board, "--key": key, "--known-hosts": known_hosts, "--python": python}
    return [part for flag, value in given.items() if value is not None for part in (flag, str(value))]


def with_board(profile, *, board: str | None, key: Path | None, known_hosts: Path | None, python: str | None):
    """``profile`` with its ssh: board replaced by --board/--key/--known-hosts/--python (unchanged when none is given).

    ``--board`` times on that one board, a pool's other boards left out."""
    if board is None and key is None and known_hosts is None and python is None:
        return profile
    if board is None and profile.pool:  # --key/--known-hosts/--python apply to every board of the pool
        pool = tuple(_overridden(b, key=key, known_hosts=known_hosts, python=python) for b in profile.pool)
        return dataclasses.replace(profile, ssh=pool[0], pool=pool)
    target = resolve_target(profile=profile, board=board, key=key, known_hosts=known_hosts, python=python)
    return dataclasses.replace(profile, ssh=target, pool=())  # --board: that one board


def _size(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


@board_app.command("check")
def check(
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Device profile whose ssh: section and runtime to use."),
    board: Optional[str] = BOARD_OPTION,
    key: Optional[Path] = KEY_OPTION,
    known_hosts: Optional[Path] = KNOWN_HOSTS_OPTION,
    python: Optional[str] = PYTHON_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
    connect_timeout_s: float = typer.Option(10.0, "--connect-timeout", help="Seconds to wait for the connection."),
) -> None:
    """Connect to a board and report its python, onnxruntime, execution providers, CPUs and free disk.

    Exit code 0 when the board can time models for the profile, 1 when something is missing (listed).
    """
    from autocomp.latency.ssh import check_board

    from autocomp.profiles import load_profile

    check_range("--connect-timeout", connect_timeout_s, low=0, low_open=True)
    profile = load_profile(device) if device else None
    target = resolve_target(profile=profile, board=board, key=key, known_hosts=known_hosts, python=python)
    info = check_board(target, runtime=profile.runtime if profile else None, connect_timeout_s=connect_timeout_s)
    if as_json:
        console.print_json(json.dumps(info.to_dict()))
    else:
        table = Table(title=f"board {info.board}", show_header=False)
        table.add_row("host key", info.host_key)
        table.add_row("python", f"{info.python_version or '-'} ({info.python or target.python})")
        table.add_row("onnxruntime", info.onnxruntime_version or "missing")
        table.add_row("providers", ", ".join(info.providers) or "-")
        table.add_row("numpy", info.numpy_version or "missing")
        table.add_row("trtexec", info.trtexec or "not found")
        table.add_row("machine", info.machine or "?")
        table.add_row("CPUs", str(info.cpu_count or "?"))
        table.add_row("free disk", f"{_size(info.free_disk_bytes)} in {info.tmpdir or '?'}")
        console.print(table)
        if info.problems:
            for problem in info.problems:
                console.print(styled("missing:", "bold red", problem))
        else:
            tool = profile.runtime.tool if profile else "onnxruntime"
            console.print(styled("ready:", "bold green", f"{info.board} can time models with {tool}"))
    if info.problems:
        raise typer.Exit(1)
