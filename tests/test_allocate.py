"""Sensitivity profile and latency-aware allocation: what each change costs alone, and the plans proposed from it."""

from __future__ import annotations

import math

import optuna.distributions as od
import pytest
from optuna.trial import TrialState

from autocomp.allocate import Option, Proposal, candidate_values, greedy_path, identity_value, propose, refine
from autocomp.record import StudyRecord, TrialRecord
from test_search import SPACE, cli, open_study, search_args

DISTS = {
    "distill/width": od.CategoricalDistribution([0.5, 1.0]),
    "prune/a": od.FloatDistribution(0.0, 0.75, step=0.125),
    "prune/b": od.FloatDistribution(0.0, 0.75, step=0.125),
    "bits/a": od.CategoricalDistribution([32, 8, "dyn8"]),
    "bits/b": od.CategoricalDistribution([32, 8, "dyn8"]),
}


def test_each_parameter_is_profiled_at_its_values_and_left_at_its_identity_otherwise():
    assert [identity_value(n, d) for n, d in DISTS.items()] == [1.0, 0.0, 0.0, 32, 32]
    assert candidate_values("distill/width", DISTS["distill/width"]) == [0.5]
    assert candidate_values("bits/a", DISTS["bits/a"]) == [8, "dyn8"]
    # a 6-step grid thinned to 4 ratios, the highest kept
    assert candidate_values("prune/a", DISTS["prune/a"]) == [0.25, 0.375, 0.5, 0.75]


def _options(*, int8_together: float) -> list[Option]:
    """Baseline 1.0 accuracy, 10 ms. Pruning a saves much and costs little; b costs more; each layer at static
    int8 alone costs nothing, but all of them together cost ``int8_together``; dyn8 costs nothing."""
    rows = [("distill/width", 0.5, 0.2, 7.0)]
    for layer, cost in (("a", 0.01), ("b", 0.04)):
        rows += [(f"prune/{layer}", r, 1.0 - cost * r / 0.25, 10.0 - 0.8 * r / 0.25) for r in (0.25, 0.375, 0.5, 0.75)]
        rows += [(f"bits/{layer}", 8, 1.0, 9.5), (f"bits/{layer}", "dyn8", 1.0, 9.6)]
    rows += [("bits/*", 8, 1.0 - int8_together, 9.0), ("bits/*", "dyn8", 1.0, 9.2)]
    return [Option(param, value, accuracy, latency) for param, value, accuracy, latency in rows]


def path(options, **kwargs):
    return greedy_path(options, DISTS, baseline_accuracy=1.0, baseline_latency_ms=10.0, **kwargs)


def test_proposals_follow_the_cheapest_milliseconds_and_count_compounding_int8_errors():
    proposals = propose(path(_options(int8_together=0.3)), count=3)
    assert len(proposals) == 3
    latencies = [p.predicted_latency_ms for p in proposals]
    assert latencies == sorted(latencies)  # the fastest target first, then slower ones
    # int8 costs 0.3 points when every layer takes it, so dynamic int8 (free) is preferred, whatever each layer alone said
    for proposal in proposals:
        assert {proposal.params["bits/a"], proposal.params["bits/b"]} <= {32, "dyn8"}
    # the cheap pruning goes before the expensive one and the destructive narrow student
    gentlest = proposals[-1].params
    assert gentlest["prune/a"] >= gentlest["prune/b"] and gentlest["distill/width"] == 1.0
    for proposal in proposals:  # predictions are what the additive model says
        assert 0.0 < proposal.predicted_accuracy <= 1.0 and 0.0 < proposal.predicted_latency_ms < 10.0
    # when int8 costs nothing together either, it is taken for the extra milliseconds it saves
    free = propose(path(_options(int8_together=0.0)), count=3)
    assert free[0].params["bits/a"] == 8


def test_once_a_block_is_removed_its_own_layers_are_moot():
    # two blocks; removing block 1 saves 4 ms for 0.02 points; pruning its FFN alone saves 1 ms for nothing
    dists = {
        "depth/blocks": od.FloatDistribution(0.0, 0.5, step=0.5),
        "prune/blocks.0.fc1": od.FloatDistribution(0.0, 0.5, step=0.5),
        "prune/blocks.1.fc1": od.FloatDistribution(0.0, 0.5, step=0.5),
    }
    options = [
        Option("depth/blocks", 0.5, 0.98, 6.0),
        Option("prune/blocks.0.fc1", 0.5, 0.99, 9.0),
        Option("prune/blocks.1.fc1", 0.5, 1.0, 9.0),
    ]
    removes = {("depth/blocks", 0.5): ["blocks.1"]}
    steps = greedy_path(options, dists, baseline_accuracy=1.0, baseline_latency_ms=10.0, removes=removes).steps
    last, drop, saved = steps[-1]
    # the free FFN cut in block 1 is taken first, then the removal of that block makes it moot: its
    # millisecond is not counted twice, and the path never spends a move on it again
    assert last["depth/blocks"] == 0.5 and last["prune/blocks.0.fc1"] == 0.5
    assert saved == pytest.approx(4.0 + 1.0) and drop == pytest.approx(0.02 + 0.01)
    unaware = greedy_path(options, dists, baseline_accuracy=1.0, baseline_latency_ms=10.0).steps[-1]
    assert unaware[2] == pytest.approx(6.0)  # without the removal map, the moot cut's saving is double-counted


def test_a_knob_timed_beside_the_baseline_is_rescaled_by_that_timing():
    # the estimator says removing a block saves 1 ms of 10; timed side by side with the baseline it saved half
    dists = {"depth/blocks": od.FloatDistribution(0.0, 0.5, step=0.5), "prune/a": od.FloatDistribution(0.0, 0.5, step=0.5)}
    depth = Option("depth/blocks", 0.5, 0.99, 9.0, measured_ms=3.0, baseline_measured_ms=6.0)
    prune = Option("prune/a", 0.5, 0.99, 8.0)
    steps = greedy_path([depth, prune], dists, baseline_accuracy=1.0, baseline_latency_ms=10.0, baseline_measured_ms=20.0).steps
    # the removal's saving is 50% of the estimate's 10 ms (not 1 ms, and not 85% against the baseline timed at another moment)
    assert steps[1][0]["depth/blocks"] == 0.5 and steps[1][2] == pytest.approx(5.0)
    assert steps[-1][2] == pytest.approx(5.0 + 2.0)


def test_proposals_stop_where_the_predicted_accuracy_leaves_reach():
    """Plans predicted far below the floor before fine-tuning are the ones early stopping ends: not proposed."""
    full = path(_options(int8_together=0.3))
    everything = propose(full, count=3)
    assert min(p.predicted_accuracy for p in everything) < 0.85
    reachable = propose(full, count=3, min_accuracy=0.9)
    assert reachable and all(p.predicted_accuracy >= 0.9 for p in reachable)
    assert max(p.predicted_latency_ms for p in reachable) < 10.0  # still faster than the baseline
    assert propose(full, count=3, min_accuracy=1.01) == []  # nothing within reach: nothing proposed


def test_measured_savings_rescale_the_estimate():
    """Static int8 that the estimator prices fast but the device times slower than the baseline saves nothing."""
    options = _options(int8_together=0.0) + []
    options = [o if o.param != "bits/*" or o.value != 8 else Option("bits/*", 8, 1.0, 9.0, measured_ms=21.0) for o in options]
    options = [o if o.param != "bits/*" or o.value != "dyn8" else Option("bits/*", "dyn8", 1.0, 9.2, measured_ms=16.0) for o in options]
    timed = path(options, baseline_measured_ms=20.0)
    assert timed.unit == 2.0  # predictions come in the measured unit
    for proposal in propose(timed, count=3):
        assert 8 not in (proposal.params["bits/a"], proposal.params["bits/b"])


def test_refit_on_finished_trials_proposes_the_fastest_plan_predicted_to_meet_the_floor():
    p = path(_options(int8_together=0.3))
    first = propose(p, count=2)
    # fine-tuning recovered 90% of every predicted drop: the re-fitted predictor allows a faster plan
    finished = [(q, 1.0 - 0.1 * (1.0 - q.predicted_accuracy)) for q in first]
    refined = refine(p, finished, floor=0.985, taken=[q.params for q in first])
    assert refined is not None and refined.predicted_accuracy >= 0.985
    gentler = max(first, key=lambda q: q.predicted_latency_ms)  # the other one is predicted far below the floor
    assert refined.predicted_latency_ms < gentler.predicted_latency_ms
    # with no recovery the floor allows only a gentler plan
    unrefined = refine(p, [(q, q.predicted_accuracy) for q in first], floor=0.985, taken=[q.params for q in first])
    assert unrefined is not None and unrefined.predicted_latency_ms > refined.predicted_latency_ms
    # the plan ran already, as itself or as its fp32 twin (price_proposals): the next fastest meeting the floor instead
    twin = {name: 32 if name.startswith("bits/") else value for name, value in refined.params.items()}
    assert twin != refined.params
    for ran in (refined.params, twin):
        again = refine(p, finished, floor=0.985, taken=[*(q.params for q in first), ran])
        assert again is not None and again.params not in (refined.params, twin)
        assert refined.predicted_latency_ms <= again.predicted_latency_ms and again.predicted_accuracy >= 0.985


def test_a_change_that_failed_is_never_proposed():
    options = [Option("prune/a", 0.75, error="torch-pruning could not prune it"), *[o for o in _options(int8_together=0.3) if o.param != "prune/a"]]
    for proposal in propose(path(options), count=3):
        assert proposal.params["prune/a"] == 0.0


def test_nothing_to_gain_proposes_nothing():
    slower = [Option("bits/a", 8, 1.0, 11.0), Option("bits/b", 8, 1.0, 10.5)]
    assert propose(path(slower), count=4) == []
    assert propose(path(_options(int8_together=0.0)), count=0) == []


def test_a_search_profiles_once_queues_its_proposals_after_the_anchors_and_records_their_predictions(tmp_path):
    space = tmp_path / "prop.yaml"
    # max_drop 1.0: the whole path is within reach, so this tiny space yields both proposals
    space.write_text(SPACE.replace("early_stop: {after_steps: 0}", "early_stop: {after_steps: 0, max_drop: 1.0}") + "proposals: 2\n")
    out = tmp_path / "run"
    code, stdout, stderr = cli(*search_args(out, space, trials=4))
    assert code == 0, stderr
    study = open_study(out)
    options = StudyRecord.of(study).sensitivity
    # width 0.5; two prune groups at 0.25/0.5; every layer at 8; the uniform changes of each knob
    params = {o["param"] for o in options}
    assert {"distill/width", "prune/block1_conv1", "prune/block2_conv1", "prune/*", "bits/*"} <= params
    assert all(math.isfinite(o["accuracy"]) and o["latency_ms"] > 0 for o in options if not o["error"])
    assert StudyRecord.of(study).proposals_queued == 2
    trials = sorted(study.trials, key=lambda t: t.number)
    proposed = [t for t in trials if TrialRecord.of(t).proposal is not None]
    first = [t.number for t in proposed if TrialRecord.of(t).proposal["round"] == 1]
    assert first == [1, 2]  # right after the one anchor this space has
    # once both finished, the predictor was re-fitted on them: at most one more, right after them
    assert StudyRecord.of(study).proposal_refined in (True, False)
    assert [t.number for t in proposed if TrialRecord.of(t).proposal["round"] == 2] == ([3] if StudyRecord.of(study).proposal_refined else [])
    for trial in proposed:
        assert trial.state == TrialState.COMPLETE
        assert {"accuracy", "latency_ms", "latency_unit"} <= set(TrialRecord.of(trial).proposal)
    page = (out / "report.html").read_text()
    assert 'id="sensitivity"' in page and 'id="fig-sensitivity"' in page and 'id="proposals"' in page
    # a resumed search neither profiles nor proposes again
    code, _, stderr = cli(*search_args(out, space, trials=6))
    assert code == 0, stderr
    study = open_study(out)
    assert StudyRecord.of(study).sensitivity == options
    assert len([t for t in study.trials if TrialRecord.of(t).proposal is not None]) == len(proposed)


@pytest.mark.parametrize("value", [-1, 1.5, "four"])
def test_proposals_must_be_a_count(tmp_path, value):
    from autocomp.errors import ConfigError
    from autocomp.search_space import parse_space

    with pytest.raises(ConfigError, match="proposals"):
        parse_space({"schema_version": 1, "proposals": value}, name="t")


def test_the_report_tables_the_profile_and_the_predictions_against_the_trials():
    import optuna

    from autocomp.report.data import proposals_table, sensitivity_table

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("baseline", {"accuracy": 0.9})
    study.set_user_attr("sensitivity_baseline_ms", 2.0)
    study.set_user_attr("sensitivity", [
        Option("prune/a", 0.5, 0.85, 1.5).to_dict(), Option("bits/*", "dyn8", 0.9, 1.0).to_dict(),
        Option("prune/b", 0.5, error="refused").to_dict(),
    ])
    frame = sensitivity_table(study)
    assert frame["param"].tolist() == ["prune/a", "bits/*", "prune/b"]
    assert frame["accuracy_drop"].tolist()[:2] == pytest.approx([0.05, 0.0])
    assert frame["latency_saved_pct"].tolist()[:2] == pytest.approx([25.0, 50.0])
    assert frame["error"].tolist() == ["", "", "refused"]
    study.enqueue_trial({"x": 1.0}, user_attrs={"proposal": {
        "accuracy": 0.88, "latency_ms": 1.2, "latency_unit": "local", "round": 2, "priced": "1.000 ms beside the baseline's 2.000 ms",
    }})
    study.optimize(lambda t: (t.suggest_float("x", 0, 2) * 0.0 + 0.87, 1.3, 10.0), n_trials=1)
    rows = proposals_table(study).to_dict("records")
    assert rows == [{"trial": 0, "round": 2, "predicted_accuracy": 0.88, "accuracy": 0.87, "predicted_latency_ms": 1.2,
                     "latency_ms": 1.3, "latency_unit": "local", "priced": "1.000 ms beside the baseline's 2.000 ms"}]


class _PerNode:
    """A latency backend for hosts where each op's fixed cost dominates, as on digits-vit at 2 threads:
    a file costs 0.01 ms per node plus its weight bytes at 10 MB/ms. Quantizing adds nodes (QDQ pairs)."""

    name = "per-node"

    def __init__(self, per_node_ms: float = 0.01) -> None:
        self.per_node_ms = per_node_ms

    def measure(self, onnx_path, profile):
        import onnx

        from autocomp.latency.base import LatencyResult

        model = onnx.load(str(onnx_path))
        ms = self.per_node_ms * len(model.graph.node) + onnx_path.stat().st_size / 1e7
        return LatencyResult(median_ms=ms, p90_ms=ms, runs=1, source=self.name)


def _settling_context(tmp_path, backend):
    from autocomp.objective import SearchContext
    from autocomp.profiles import load_profile
    from autocomp.search_space import parse_space
    from tiny_models import ShapesTask
    import yaml

    task = ShapesTask(train_epochs=1)
    space = parse_space(yaml.safe_load(SPACE), name="tiny")
    return SearchContext(
        task=task, teacher=task.build_model(), space=space, profile=load_profile("local"), backend=backend,
        estimator=backend, out_dir=tmp_path, accuracy_floor=None, latency_budget_ms=None,
    )


def test_proposals_are_priced_before_fine_tuning_and_keep_reduced_precisions_only_where_they_pay(tmp_path):
    """Each proposal's file is priced beside the baseline's, as proposed and all in fp32: the faster is queued
    with its own figure as the prediction, one no faster than the baseline is dropped, duplicates go once."""
    from autocomp.allocate import price_proposals
    from autocomp.export import export_onnx

    ctx = _settling_context(tmp_path, _PerNode(per_node_ms=0.01))  # nodes dominate: QDQ costs more than it saves
    baseline = export_onnx(ctx.teacher, ctx.task.example_inputs(), tmp_path / "baseline.onnx")
    distributions = ctx.space.distributions(ctx.teacher, supported_bits=ctx.profile.supported_bits, example_inputs=ctx.task.example_inputs())
    bits = sorted(name for name in distributions if name.startswith("bits/"))
    base = {name: (32 if name.startswith("bits/") else 1.0 if name == "distill/width" else 0.0) for name in distributions}
    pruned = {**base, "prune/block1_conv1": 0.5}
    int8 = Proposal({**pruned, **{name: 8 for name in bits}}, 0.9, 1.0)
    half = Proposal({**pruned, bits[0]: 8}, 0.9, 1.2)
    fp32 = Proposal(pruned, 0.9, 1.5)
    nothing = Proposal(base, 1.0, 0.5)  # the baseline itself: no faster than it
    priced = price_proposals(ctx, [int8, half, fp32, nothing], distributions, baseline_onnx=baseline, baseline_ms=2.0)
    assert [p.params for p in priced] == [pruned]  # all three are the fp32 plan once the int8 layers go
    assert "in fp32 (as profiled" in priced[0].priced
    base_ms = _PerNode(0.01).measure(baseline, ctx.profile).median_ms
    assert priced[0].predicted_latency_ms == pytest.approx(2.0 * float(priced[0].priced.split(" ms")[0]) / base_ms, rel=1e-2)
    assert 0 < priced[0].predicted_latency_ms < 2.0
    assert not (tmp_path / "proposal-pricing").exists()

    ctx = _settling_context(tmp_path, _PerNode(per_node_ms=0.0))  # bytes only: int8 weights are a quarter
    priced = price_proposals(ctx, [int8, fp32], distributions, baseline_onnx=baseline, baseline_ms=2.0)
    assert [p.params for p in priced] == [int8.params, fp32.params]
    assert "as profiled (fp32" in priced[0].priced and "(" not in priced[1].priced
    # a space that leaves fp32 out of a layer's choices has no fp32 twin to offer
    narrowed = {**distributions, bits[0]: od.CategoricalDistribution([16, 8])}
    assert [p.params for p in price_proposals(ctx, [int8], narrowed, baseline_onnx=baseline, baseline_ms=2.0)] == [int8.params]
    assert price_proposals(ctx, [], distributions, baseline_onnx=tmp_path / "absent.onnx", baseline_ms=2.0) == []  # nothing timed
