"""The console script's entry point: the CLI is imported inside it, so an interrupt while torch and
the rest load (a few seconds on a cold start) ends as "interrupted", exit 130, like one during a command."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from autocomp.cli import main as run
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    run()
