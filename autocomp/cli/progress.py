"""A search's events (``autocomp.events``) drawn with rich: lines, spinners, and one bar per kind of work
with the time left estimated from this run's own pace."""

from __future__ import annotations

import contextlib
import time
from typing import Any, ContextManager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from autocomp.cli.app import console, err_console, styled
from autocomp.record import TrialRecord

BAR_TITLES = {"trials": "trials", "sensitivity": "sensitivity"}
BAR_NOTES = {"sensitivity": "each change alone: accuracy and estimated latency"}


class TrialsLeftColumn(ProgressColumn):
    """Time left from the work this run has done (rich's own estimate needs a sample every 30 s,
    which trials of a minute never give, so it showed -:--:-- for the whole search)."""

    def render(self, task) -> Text:
        done, started = task.fields.get("done_here", 0), task.fields.get("started_s")
        remaining = None if task.total is None else task.total - task.completed
        if not done or started is None or remaining is None:
            return Text("left: after the first one", style="progress.remaining")
        seconds = int((time.monotonic() - started) / done * max(remaining, 0))
        return Text(f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d} left", style="progress.remaining")


class RichEvents:
    """Use as a context manager around a search: the bars live until it ends."""

    def __init__(self) -> None:
        self._progress = Progress(
            SpinnerColumn(), TextColumn("{task.fields[what]}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TrialsLeftColumn(), TextColumn("{task.description}", markup=False),
            console=console, transient=False,
        )
        self._bars: dict[str, Any] = {}
        self._first: dict[str, int] = {}  # a bar's count when it opened: the time left counts this run's pace only
        self._open = False

    def __enter__(self) -> "RichEvents":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._open:
            self._progress.stop()

    def say(self, text: str, *, warning: bool = False) -> None:
        if warning:
            err_console.print(styled("warning:", "yellow", text))
        else:
            (self._progress.console if self._open else console).print(text, highlight=False, markup=False)

    def status(self, text: str) -> ContextManager[None]:
        return contextlib.nullcontext() if self._open else console.status(text)

    def progress(self, bar: str, done: int, total: int) -> None:
        if not self._open:
            self._progress.start()
            self._open = True
        if bar not in self._bars:
            self._first[bar] = done
            self._bars[bar] = self._progress.add_task(
                BAR_NOTES.get(bar, ""), total=total, completed=done, done_here=0, started_s=time.monotonic(),
                what=BAR_TITLES.get(bar, bar),
            )
        self._progress.update(self._bars[bar], completed=done, total=total, done_here=done - self._first[bar])

    def trial_ended(self, study: Any, trial: Any) -> None:
        from autocomp.study import choose_trial

        reason = TrialRecord.of(trial).fail_reason
        if reason:
            self._progress.console.print(f"  trial {trial.number} {trial.state.name.lower()}: {reason}", highlight=False, markup=False)
        chosen, _ = choose_trial(study)
        best = "no feasible trial yet" if chosen is None else f"best: #{chosen.number} {100 * chosen.values[0]:.1f}% {chosen.values[1]:.3f} ms"
        if "trials" in self._bars:
            self._progress.update(self._bars["trials"], description=best)
