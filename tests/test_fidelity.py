"""Multi-fidelity trials: the screen after a short fine-tune, the rule that promotes, and what a screen costs a trial."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from autocomp.fidelity import dominated_by, screen_decision
from autocomp.record import TrialRecord
from test_search import SPACE, cli, open_study, search_args


def test_dominance_counts_points_at_least_as_good_on_both_and_better_on_one():
    assert dominated_by((0.9, 1.0), [(0.95, 0.8), (0.9, 1.0), (0.92, 1.0), (0.99, 1.2)]) == 2  # itself-equal does not count


def test_the_screen_keeps_the_best_share_of_the_rung_by_dominance():
    rung = [(0.99, 1.0), (0.98, 0.8), (0.97, 0.6), (0.90, 1.5), (0.85, 1.4)]
    assert screen_decision((0.96, 0.5), rung, keep=0.34, min_screened=4).promoted  # on the front
    demoted = screen_decision((0.95, 0.9), rung, keep=0.34, min_screened=4)
    assert not demoted.promoted and "dominated by 2 of 5" in demoted.reason
    assert screen_decision((0.95, 0.9), rung, keep=1.0, min_screened=4).promoted  # keep everything
    assert screen_decision((0.5, 9.0), rung[:2], keep=0.34, min_screened=4).promoted  # too few to compare with
    assert screen_decision((0.5, 9.0), rung, keep=0.34, min_screened=4, queued=True).promoted  # anchors and proposals


def test_a_plan_that_cannot_reach_the_floor_even_with_the_largest_gain_seen_from_as_low_is_screened_out():
    rung = [(0.9, 1.0), (0.8, 0.5)]
    low = [(0.6, 0.02), (0.65, 0.05)]  # two finished trials that screened lower than 0.7 gained at most 0.05
    cannot = screen_decision((0.7, 0.1), rung, keep=1.0, min_screened=0, floor=0.8, gains=low)
    assert not cannot.promoted and "stays below the floor 0.8000" in cannot.reason
    assert screen_decision((0.76, 0.1), rung, keep=1.0, min_screened=0, floor=0.8, gains=low).promoted
    assert screen_decision((0.7, 0.1), rung, keep=1.0, min_screened=0, floor=0.8, gains=low[:1]).promoted  # one is no evidence
    # trials that screened higher say nothing about how far a worse start recovers
    high = [(0.95, 0.01), (0.97, 0.0)]
    assert screen_decision((0.7, 0.1), rung, keep=1.0, min_screened=0, floor=0.8, gains=high).promoted


SCREENED = SPACE.replace("finetune: {steps: 8,", "finetune: {screen: {after_steps: 4, keep: KEEP, min_screened: 2}, steps: 8,")


def test_every_decision_replays_from_the_earlier_screens_and_screened_out_trials_are_pruned(tmp_path):
    space = tmp_path / "screen.yaml"
    space.write_text(SCREENED.replace("KEEP", "0.2"))
    out = tmp_path / "run"
    code, stdout, stderr = cli(*search_args(out, space, trials=10, extra=("--sampler", "random")))
    assert code == 0, stderr
    study = open_study(out)
    earlier: list[tuple[float, float]] = []
    gains: list[float] = []
    screened_out = 0
    for trial in study.trials:  # one job: each trial screened against the trials before it
        record = TrialRecord.of(trial).screen
        if record is None:  # a plan with nothing to fine-tune (precisions only) has no screen
            assert trial.state == TrialState.COMPLETE
            continue
        assert (record["steps"], record["of_steps"]) == (4, 8)
        point = (record["accuracy"], record["latency_ms"])
        replay = screen_decision(
            point, earlier, keep=0.2, min_screened=2, queued="fixed_params" in trial.system_attrs,
            floor=study.user_attrs["accuracy_floor"], gains=gains,
        )
        assert (replay.promoted, replay.reason) == (record["promoted"], record["reason"])
        if record["promoted"]:
            assert trial.state == TrialState.COMPLETE
            gains.append((record["accuracy"], trial.values[0] - record["accuracy"]))
        else:
            screened_out += 1
            assert trial.state == TrialState.PRUNED
            assert trial.user_attrs["fail_reason"].startswith("screened out after 4 of 8 fine-tuning steps: accuracy")
        earlier.append(point)
    assert screened_out >= 1, "seeded run: some random plan is dominated by earlier ones"
    assert "screened out after 4 of 8" in stdout.replace("\n", " ")
    screened = sum(TrialRecord.of(t).screen is not None for t in study.trials)
    assert f"{screened} plans screened after 4 of 8 fine-tuning steps: {screened_out} screened out" in (out / "report.html").read_text()


def test_a_promoted_trial_ends_exactly_where_an_unscreened_one_does(tmp_path):
    """The screen exports a copy and draws nothing from the trial's random stream: with every plan
    promoted, the study is the unscreened study, trial for trial, to the ONNX file's hash."""
    runs = {}
    for name, text in (("plain", SPACE), ("screened", SCREENED.replace("KEEP", "1.0"))):
        space = tmp_path / f"{name}.yaml"
        space.write_text(text)
        out = tmp_path / name
        code, _, stderr = cli(*search_args(out, space, trials=4))
        assert code == 0, stderr
        runs[name] = open_study(out).trials
    screens = [TrialRecord.of(t).screen for t in runs["screened"]]
    assert any(screens) and all(s is None or s["promoted"] for s in screens)
    assert [t.params for t in runs["plain"]] == [t.params for t in runs["screened"]]
    assert [t.values for t in runs["plain"]] == [t.values for t in runs["screened"]]
    assert [t.user_attrs["onnx_sha256"] for t in runs["plain"]] == [t.user_attrs["onnx_sha256"] for t in runs["screened"]]


@pytest.mark.parametrize("screen, message", [
    ("{after_steps: 8}", "screen.after_steps 8 must be below steps 8"),
    ("{after_steps: 2, keep: 0}", "screen.keep: 0 must be a number"),
    ("{after: 2}", "after"),
])
def test_a_bad_screen_setting_is_one_line(tmp_path, screen, message):
    space = tmp_path / "bad.yaml"
    space.write_text(SPACE.replace("finetune: {steps: 8,", f"finetune: {{screen: {screen}, steps: 8,"))
    code, _, stderr = cli(*search_args(tmp_path / "run", space, trials=1))
    assert code == 2 and message in stderr and "Traceback" not in stderr
