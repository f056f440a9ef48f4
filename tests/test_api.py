"""The library entry point: ``autocomp.search(...)`` runs the search the CLI runs, says what it does through
``events`` (nothing on stdout by default), returns the study and the choice, and refuses bad input first."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from optuna.trial import TrialState

import autocomp
from autocomp.errors import ConfigError
from test_search import SPACE

TESTS = Path(__file__).parent


class Recorder:
    """Events that keep what they hear."""

    def __init__(self) -> None:
        self.lines, self.bars, self.ended = [], {}, []

    def say(self, text, *, warning=False):
        self.lines.append(("warning: " if warning else "") + text)

    def status(self, text):
        self.lines.append(f"[{text}]")
        return contextlib.nullcontext()

    def progress(self, bar, done, total):
        self.bars.setdefault(bar, []).append((done, total))

    def trial_ended(self, study, trial):
        self.ended.append(trial.number)


def test_search_from_python_returns_the_study_and_the_choice(tmp_path, capsys):
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE)
    events = Recorder()
    result = autocomp.search(
        device="local", task=f"{TESTS / 'search_tasks.py'}:shapes", space=str(space), trials=3, out=tmp_path / "run",
        study_name="lib", seed=1, events=events,
    )
    assert isinstance(result, autocomp.SearchResult)
    assert [t.number for t in result.study.trials] == [0, 1, 2] and len(result.ran) == 3
    assert all(t.state == TrialState.COMPLETE for t in result.ran)
    assert result.report == tmp_path / "run" / "report.html" and result.report.is_file()
    assert result.size_key == "zip_bytes" and result.baseline.zip_bytes < result.baseline.size_bytes
    assert result.chosen is None or result.chosen.number in (0, 1, 2)
    assert events.ended == [0, 1, 2] and events.bars["trials"][-1] == (3, 3)
    assert any(line.startswith("baseline: accuracy") for line in events.lines)
    assert capsys.readouterr().out == ""  # a library prints nothing of its own

    # called again with a larger budget, it resumes: the finished trials are kept
    again = autocomp.search(
        device="local", task=f"{TESTS / 'search_tasks.py'}:shapes", space=str(space), trials=4, out=tmp_path / "run",
        study_name="lib", seed=1,
    )
    assert len(again.ran) == 1 and [t.number for t in again.study.trials] == [0, 1, 2, 3]


@pytest.mark.parametrize("kwargs, message", [
    ({"device": "no-such-board"}, "unknown device 'no-such-board'"),
    ({"device": "local", "min_accuracy": "lots"}, "--min-accuracy"),
    ({"device": "local", "storage": "mysql://u:secret@db/x"}, "mysql"),
])
def test_bad_input_raises_before_any_work(tmp_path, kwargs, message):
    with pytest.raises(ConfigError) as info:
        autocomp.search(task=f"{TESTS / 'search_tasks.py'}:shapes", out=tmp_path / "run", **kwargs)
    assert message in str(info.value) and "secret" not in str(info.value)
    assert not (tmp_path / "run").exists()
