"""What a running search tells whoever runs it: the CLI draws it with rich; a library caller may ignore it.

Call order: ``say`` and ``status`` at any time; ``progress(bar, done, total)`` again and again per bar
(``"trials"``, ``"sensitivity"``, ``"final fine-tune of trial N"``), a bar's first call opening it;
``trial_ended`` once per trial this process saw end, after the trials bar moved.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, ContextManager, Protocol

from autocomp.record import TrialRecord

log = logging.getLogger("autocomp")


class Events(Protocol):
    def say(self, text: str, *, warning: bool = False) -> None: ...

    def status(self, text: str) -> ContextManager[None]: ...

    def progress(self, bar: str, done: int, total: int) -> None: ...

    def trial_ended(self, study: Any, trial: Any) -> None: ...


class Quiet:
    """Events for a library caller: what a search says goes to the ``autocomp`` logger, nothing is drawn."""

    def say(self, text: str, *, warning: bool = False) -> None:
        log.log(logging.WARNING if warning else logging.INFO, "%s", text)

    def status(self, text: str) -> ContextManager[None]:
        log.info("%s", text)
        return contextlib.nullcontext()

    def progress(self, bar: str, done: int, total: int) -> None:
        pass

    def trial_ended(self, study: Any, trial: Any) -> None:
        reason = TrialRecord.of(trial).fail_reason
        if reason:
            log.info("trial %d %s: %s", trial.number, trial.state.name.lower(), reason)
