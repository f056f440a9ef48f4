"""The final fine-tune's promotion: a faster trial just under the floor gets the final fine-tune first and ships if it
reaches the floor; one too far under, or slower, or one that stays under, does not."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from autocomp.final import final_finetune, promotion_candidates
from autocomp.record import StudyRecord
from test_search import SPACE, cli, open_study, search_args

STEPS = 12


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A real search of the shapes task: trials with their weights on disk, no final fine-tune yet."""
    root = tmp_path_factory.mktemp("final")
    space = root / "space.yaml"
    space.write_text(SPACE.replace("finetune: {steps: 8,", f"finetune: {{final_steps: {STEPS}, promote: {{candidates: 0}}, steps: 8,"))
    out = root / "run"
    code, _, stderr = cli(*search_args(out, space, trials=2))
    assert code == 0, stderr
    done = [t for t in open_study(out).trials if t.state == TrialState.COMPLETE and t.user_attrs.get("artifact")]
    # each test adds trials with done[0]'s plan and weights and recorded figures of its choosing, at latencies
    # far below every real trial's (so no real one is "faster") and in its own accuracy window under its floor
    return out, space, done[0], min(t.values[1] for t in done) / 100


def _context(out, space_path, *, floor: float, candidates: int = 2, within: float = 0.005):
    from dataclasses import replace

    from autocomp.latency import get_backend
    from autocomp.objective import SearchContext
    from autocomp.profiles import load_profile
    from autocomp.search_space import load_space
    from search_tasks import shapes

    task = shapes()
    space = load_space(str(space_path))
    space = replace(space, finetune=replace(space.finetune, promote_candidates=candidates, promote_within=within))
    profile = load_profile("local")
    backend = get_backend("estimate", profile=profile)
    return SearchContext(
        task=task, teacher=task.build_model(), space=space, profile=profile, backend=backend, estimator=backend,
        out_dir=out, accuracy_floor=floor, latency_budget_ms=None, seed=1,
    )


def _recorded(study: optuna.Study, like: optuna.trial.FrozenTrial, *, accuracy: float, latency_ms: float) -> optuna.trial.FrozenTrial:
    """A trial with ``like``'s plan and weights and the given recorded figures (what its own trial would have scored)."""
    study.add_trial(create_trial(
        params=like.params, distributions=like.distributions, values=[accuracy, latency_ms, like.values[2]],
        user_attrs=like.user_attrs,
    ))
    return study.trials[-1]


def test_a_faster_trial_just_under_the_floor_is_promoted_and_ships(searched):
    out, space, real, ms = searched
    study = open_study(out)
    floor = 0.10  # every trained shapes model scores far above it after its final fine-tune
    chosen = _recorded(study, real, accuracy=0.50, latency_ms=2 * ms)
    near = _recorded(study, real, accuracy=floor - 0.002, latency_ms=ms)
    _recorded(study, real, accuracy=floor - 0.02, latency_ms=ms / 2)  # too far under the floor
    _recorded(study, real, accuracy=floor - 0.001, latency_ms=3 * ms)  # under it, and slower than the chosen one
    ctx = _context(out, space, floor=floor)
    assert [t.number for t in promotion_candidates(ctx, study, study.trials[chosen.number])] == [near.number]
    assert promotion_candidates(_context(out, space, floor=floor, candidates=0), study, chosen) == []

    study.set_user_attr("chosen_trial", chosen.number)
    study.set_user_attr("chosen_rule", "fastest trial")
    steps_seen = []
    record = final_finetune(ctx, study, chosen, on_step=lambda step, steps, trial: steps_seen.append((trial, step, steps)))
    assert record["promoted"] and record["trial"] == near.number and record["chosen_before"] == chosen.number
    assert record["accuracy"] >= floor and record["trial_accuracy"] == near.values[0] and record["steps"] == STEPS
    assert {trial for trial, _, _ in steps_seen} == {near.number} and steps_seen[-1][1:] == (STEPS, STEPS)  # the chosen one was not tuned
    study = open_study(out)
    assert study.user_attrs["chosen_trial"] == near.number and StudyRecord.of(study).final == record
    assert f"trial {near.number} was faster" in study.user_attrs["chosen_rule"] and f"replaces trial {chosen.number}" in study.user_attrs["chosen_rule"]
    # the same choice again reuses the record, promotion included, without fine-tuning
    study.set_user_attr("chosen_trial", chosen.number)
    again = final_finetune(ctx, study, study.trials[chosen.number], on_step=lambda *a: pytest.fail("fine-tuned again"))
    assert again == record and open_study(out).user_attrs["chosen_trial"] == near.number

    # the report's run facts say it
    from autocomp.report.data import run_facts

    facts = dict(run_facts(study, run_dir=out).rows)
    assert f"trial {near.number}: " in facts["final fine-tune"] and "promoted over the chosen trial" in facts["final fine-tune"]
    # export ships the promoted trial's final model, scored again on its ONNX file
    code, _, stderr = cli("export", "--study", str(out), "--out", str(out.parent / "export"))
    assert code == 0, stderr
    metrics = json.loads((out.parent / "export" / "metrics.json").read_text())
    assert metrics["trial"] == near.number
    assert metrics["model"]["onnx_sha256"] == record["onnx_sha256"] and metrics["model"]["accuracy"] == record["accuracy"]


def test_a_promotion_that_stays_under_the_floor_leaves_the_chosen_trial(searched):
    out, space, real, ms = searched
    study = open_study(out)
    floor = 1.002  # above any accuracy: the promoted trial cannot reach it
    chosen = _recorded(study, real, accuracy=1.0, latency_ms=2 * ms)
    near = _recorded(study, real, accuracy=0.999, latency_ms=ms)
    StudyRecord.put(study, final=None)
    study.set_user_attr("chosen_trial", chosen.number)
    seen = set()
    record = final_finetune(_context(out, space, floor=floor), study, chosen, on_step=lambda step, steps, trial: seen.add(trial))
    assert seen == {near.number, chosen.number}
    assert record["trial"] == chosen.number and not record.get("promoted")
    assert [t["trial"] for t in record["tried"]] == [near.number] and record["tried"][0]["accuracy"] < floor
    assert record["tried"][0]["reason"] == "still under the floor"
    assert open_study(out).user_attrs["chosen_trial"] == chosen.number

    # nothing chosen: every trial near the floor and faster than the baseline is tried, fastest first; none
    # reaches it, so nothing ships, and the tries are on record
    StudyRecord.put(study, final=None)
    assert final_finetune(_context(out, space, floor=floor), study, None) is None
    assert [t["trial"] for t in StudyRecord.of(open_study(out)).final["tried"]] == [near.number, chosen.number]


def test_promotion_is_configured_in_the_space_and_checked(tmp_path):
    from autocomp.errors import ConfigError
    from autocomp.search_space import load_space

    path = tmp_path / "s.yaml"
    path.write_text(SPACE.replace("finetune: {steps: 8,", "finetune: {promote: {candidates: 3, within: 0.01}, steps: 8,"))
    spec = load_space(str(path)).finetune
    assert (spec.promote_candidates, spec.promote_within) == (3, 0.01)
    for bad, message in (("{candidates: -1}", "promote.candidates: -1 must be an integer"), ("{count: 2}", "unknown key 'count'"), ("2", "must be a mapping")):
        path.write_text(SPACE.replace("finetune: {steps: 8,", f"finetune: {{promote: {bad}, steps: 8,"))
        with pytest.raises(ConfigError, match=message):
            load_space(str(path))


class _ByNodes:
    """A measuring backend that prices a file by its node count: the same plan costs the same, however tuned."""

    name = "by-nodes"

    def measure(self, onnx_path, profile):
        import onnx

        from autocomp.latency.base import LatencyResult

        ms = 0.01 * len(onnx.load(str(onnx_path)).graph.node)
        return LatencyResult(median_ms=ms, p90_ms=ms, runs=1, source=self.name)


def test_with_a_measuring_backend_a_promotion_must_be_faster_side_by_side(searched):
    """The trials' own timings said faster; timed beside the chosen trial's file the promoted model is not
    (the same plan here), so the chosen trial keeps its place."""
    from dataclasses import replace

    out, space, real, ms = searched
    study = open_study(out)
    floor = 0.20  # its own window: the first test left trials under 0.10
    chosen = _recorded(study, real, accuracy=0.50, latency_ms=2 * ms)
    near = _recorded(study, real, accuracy=floor - 0.002, latency_ms=ms)
    StudyRecord.put(study, final=None)
    study.set_user_attr("chosen_trial", chosen.number)
    ctx = replace(_context(out, space, floor=floor, candidates=1), backend=_ByNodes())
    assert ctx.measures
    record = final_finetune(ctx, study, chosen)
    assert record["trial"] == chosen.number and not record.get("promoted")
    (tried,) = record["tried"]
    assert tried["trial"] == near.number and tried["accuracy"] >= floor
    assert tried["side_by_side_ms"][str(near.number)] == tried["side_by_side_ms"][str(chosen.number)]
    assert tried["reason"] == "no faster side by side"


def test_the_report_says_what_the_final_fine_tune_tried_and_what_ships():
    from autocomp.report.data import final_text

    promoted = {"trial": 7, "steps": 800, "trial_accuracy": 0.9885, "accuracy": 0.9912, "shipped": "final", "promoted": True,
                "tried": [{"trial": 9, "trial_accuracy": 0.987, "accuracy": 0.989, "reason": "still under the floor"}]}
    assert final_text(promoted) == (
        "tried trial 9 first (faster; 98.70% after its trial, 98.90% after the final fine-tune: still under the floor); "
        "trial 7: 98.85% after its trial, 99.12% after 800 more steps, promoted over the chosen trial: its final score "
        "reached the floor; the final model ships"
    )
    assert final_text({"trial": None, "steps": 800, "tried": []}) is None and final_text(None) is None
