"""The main job end to end on a tiny task: search, resume, failures, constraints, export, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from autocomp.cli import main
from autocomp.runtime import onnx_predictor
from autocomp.record import StudyRecord
from autocomp.study import default_storage, load_existing_study

TESTS = Path(__file__).parent
SPACE = """
schema_version: 1
finetune: {steps: 8, lr: 0.003, early_stop: {after_steps: 0}}
exclude: ["<first>", "<last>"]
distill:
  width: {type: categorical, choices: [0.5, 1.0]}
prune:
  - layers: ["block1_conv1", "block2_conv1"]
    ratio: {type: float, low: 0.0, high: 0.5, step: 0.25}
bits:
  - layers: ["*"]
    choices: [32, 8]
"""


def cli(*args: str) -> tuple[int, str, str]:
    """Run the CLI in-process the way the console script does; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE)
    return path


def search_args(out: Path, space: Path, *, trials: int, task: str = "shapes", extra: tuple[str, ...] = ()) -> list[str]:
    return [
        "search", "--device", "local", "--task", f"{TESTS / 'search_tasks.py'}:{task}", "--space", str(space),
        "--trials", str(trials), "--backend", "estimate", "--out", str(out), "--study-name", "t", "--seed", "1", *extra,
    ]


def open_study(out: Path) -> optuna.Study:
    return load_existing_study(default_storage(out), "t")


def test_search_resume_and_export_round_trip(tmp_path, space_file):
    out = tmp_path / "run"
    code, stdout, stderr = cli(*search_args(out, space_file, trials=3))
    assert code == 0, stderr
    assert "Pareto front" in stdout and "chosen: trial" in stdout
    assert (out / "report.html").is_file()
    study = open_study(out)
    first = {t.number: (t.params, t.values) for t in study.trials}
    assert len(first) == 3
    # the search starts from the hand-made baseline: narrowest student, no pruning, every layer int8
    anchor = study.trials[0].params
    assert anchor["distill/width"] == 0.5
    assert {v for k, v in anchor.items() if k.startswith("prune/")} == {0.0}
    assert {v for k, v in anchor.items() if k.startswith("bits/")} == {8}
    baseline = study.user_attrs["baseline"]
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        for key in ("plan", "latency_source", "size_bytes", "params", "onnx_sha256", "artifact", "layers"):
            assert key in trial.user_attrs, key
        assert trial.user_attrs["latency_source"] == "estimate:local"
        assert set(trial.user_attrs["timings_s"]) == {"finetune", "export", "evaluate", "latency"}

    # the same command with a larger budget resumes: finished trials kept, numbering continues
    code, _, stderr = cli(*search_args(out, space_file, trials=5))
    assert code == 0, stderr
    study = open_study(out)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3, 4]
    assert {n: (t.params, t.values) for n, t in ((t.number, t) for t in study.trials) if n < 3} == first
    assert study.user_attrs["baseline"] == baseline  # evaluated once

    chosen = study.user_attrs["chosen_trial"]
    assert chosen is not None
    export_dir = tmp_path / "export"
    code, _, stderr = cli("export", "--study", str(out), "--out", str(export_dir))
    assert code == 0, stderr
    metrics = json.loads((export_dir / "metrics.json").read_text())
    assert metrics["trial"] == chosen
    assert metrics["baseline"]["accuracy"] == baseline["accuracy"]
    assert json.loads((export_dir / "plan.json").read_text()) == study.trials[chosen].params
    # the exported ONNX scores what the search recorded, and the PyTorch artifact reloads on its own
    from search_tasks import shapes

    task = shapes()
    assert task.evaluate(onnx_predictor(export_dir / "model.onnx")) == study.trials[chosen].values[0]
    program = torch.export.load(export_dir / "model.pt2").module()
    x = task.x_val[:16]
    torch_out = program(x).detach().numpy()
    assert torch_out.shape == (16, 4)
    if all(v == 32 for k, v in study.trials[chosen].params.items() if k.startswith("bits/")):
        np.testing.assert_allclose(onnx_predictor(export_dir / "model.onnx")(x.numpy()), torch_out, atol=1e-4)

    code, _, stderr = cli("export", "--study", str(out), "--out", str(tmp_path / "base"), "--trial", "baseline")
    assert code == 0, stderr
    assert json.loads((tmp_path / "base" / "metrics.json").read_text())["speedup"] == 1.0


@pytest.mark.parametrize("sampler, jobs", [("nsga2", 2), ("gp", 1)])
def test_other_samplers_and_parallel_trials_complete(tmp_path, space_file, sampler, jobs):
    out = tmp_path / "run"
    code, stdout, stderr = cli(*search_args(out, space_file, trials=4, extra=("--sampler", sampler, "--jobs", str(jobs))))
    assert code == 0, stderr
    study = open_study(out)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in study.trials), [t.user_attrs.get("fail_reason") for t in study.trials]
    # each trial wrote its own artifact, even when two ran at once
    assert len({t.user_attrs["artifact"] for t in study.trials}) == 4
    assert "chosen: trial" in stdout


def test_hopeless_trials_are_stopped_early_with_the_reason(tmp_path):
    """Our rule (Optuna cannot prune multi-objective trials): a learning rate that wrecks the student
    leaves it far below the floor after 2 steps, and the trial stops there instead of finishing."""
    space = tmp_path / "wreck.yaml"
    space.write_text(
        "schema_version: 1\n"
        "finetune: {steps: 40, lr: 1.0, early_stop: {after_steps: 2, max_drop: 0.3}}\n"
        "distill: {width: {type: categorical, choices: [0.5]}}\n"
    )
    out = tmp_path / "run"
    code, stdout, stderr = cli(*search_args(out, space, trials=2))
    assert code == 0, stderr
    study = open_study(out)
    for trial in study.trials:
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs["fail_reason"].startswith("stopped after 2 fine-tuning steps: accuracy")
        assert trial.user_attrs["timings_s"]["finetune"] > 0  # its time is fine-tuning, not the tool's overhead
    assert "pruned: stopped after 2 fine-tuning steps" in stdout.replace("\n", " ")


def test_failed_trials_are_recorded_and_the_search_goes_on(tmp_path, space_file):
    out = tmp_path / "run"
    code, stdout, stderr = cli(*search_args(out, space_file, trials=4, task="flaky"))
    assert code == 0, stderr
    study = open_study(out)
    states = [t.state for t in study.trials]
    assert len(states) == 4
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and TrialState.COMPLETE in states
    assert all("evaluate() raised RuntimeError: metric crashed on purpose" in t.user_attrs["fail_reason"] for t in failed)
    assert "metric crashed on purpose" in stdout


def test_impossible_latency_budget_rejects_plans_before_fine_tuning(tmp_path, space_file):
    out = tmp_path / "run"
    code, stdout, stderr = cli(*search_args(out, space_file, trials=2, extra=("--latency-budget-ms", "0.000001")))
    assert code == 0, stderr
    study = open_study(out)
    assert all(t.state == TrialState.PRUNED for t in study.trials)
    assert all("rejected before fine-tuning" in t.user_attrs["fail_reason"] for t in study.trials)
    assert study.user_attrs["chosen_trial"] is None and study.best_trials == []
    assert "no trial meets the constraints" in stdout


def test_accuracy_floor_keeps_infeasible_trials_off_the_front(tmp_path, space_file):
    out = tmp_path / "run"
    code, _, stderr = cli(*search_args(out, space_file, trials=3, extra=("--min-accuracy", "0.999")))
    assert code == 0, stderr
    study = open_study(out)
    front = {t.number for t in study.best_trials}
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        infeasible = trial.constraints["accuracy_floor"] > 0
        assert infeasible == (trial.values[0] < 0.999)
        if infeasible:
            assert trial.number not in front


def _wait_for(predicate, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError("condition not reached in time")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_search_keeps_finished_trials_and_resumes(tmp_path, space_file, sig):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "autocomp", *search_args(out, space_file, trials=50)]
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        def finished() -> int:
            # read-only: opening the storage through Optuna while the child creates it would
            # race it to the schema migration
            import sqlite3

            try:
                with sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True) as db:
                    return db.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED', 'FAIL')").fetchone()[0]
            except sqlite3.Error:
                return 0

        def progressed() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"search exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
            return finished() >= 2

        _wait_for(progressed, timeout_s=300)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    kept = [t for t in open_study(out).trials if t.state == TrialState.COMPLETE]
    assert len(kept) >= 2
    if sig == signal.SIGINT:
        assert proc.returncode == 130  # a script can tell an interrupted search from a finished one
        assert "interrupted" in proc.stderr.read()
    code, _, stderr = cli(*search_args(out, space_file, trials=len(open_study(out).trials) + 1))
    assert code == 0, stderr
    study = open_study(out)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert {t.number for t in kept} <= {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}


@pytest.mark.parametrize(
    "args, message",
    [
        (["search", "--device", "jetson-nanoo"], "unknown device"),
        (["search", "--device", "local", "--space", "nope"], "unknown search space 'nope'"),
        (["search", "--device", "local", "--task", "nope"], "unknown task 'nope'"),
        (["search", "--device", "local", "--sampler", "cmaes"], "unknown sampler 'cmaes'"),
        (["search", "--device", "local", "--backend", "magic"], "magic"),
        (["compress", "--plan", "/nonexistent/plan.json"], "cannot read plan"),
        (["export", "--study", "/nonexistent", "--out", "/tmp/x"], "holds no study.db"),
    ],
)
def test_bad_input_fails_with_one_line_and_exit_2(args, message):
    code, stdout, stderr = cli(*args)
    assert code == 2
    assert message in stderr
    assert "Traceback" not in stderr + stdout
    assert len(stderr.strip().splitlines()) == 1


def test_malformed_space_yaml_fails_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nbits: [\n")
    code, _, stderr = cli("search", "--device", "local", "--space", str(bad))
    assert code == 2 and "not valid YAML" in stderr and len(stderr.strip().splitlines()) == 1


def test_every_trial_failing_exits_1_with_one_line(tmp_path, space_file):
    out = tmp_path / "run"
    code, _, stderr = cli(*search_args(out, space_file, trials=2, task="always_failing"))
    assert code == 1
    assert "failed: all 2 trials of this run failed" in stderr
    assert [t.state for t in open_study(out).trials] == [TrialState.FAIL, TrialState.FAIL]


def test_resume_and_export_refuse_a_changed_teacher(tmp_path, space_file, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("SHAPES_EPOCHS", "4")
    code, _, stderr = cli(*search_args(out, space_file, trials=1, task="shapes_from_env"))
    assert code == 0, stderr
    monkeypatch.setenv("SHAPES_EPOCHS", "2")  # the same task spec now builds another trained model
    code, _, stderr = cli(*search_args(out, space_file, trials=2, task="shapes_from_env"))
    assert code == 2
    assert "study 't' was searched on another trained model" in stderr and len(stderr.strip().splitlines()) == 1
    assert len(open_study(out).trials) == 1  # nothing ran on the wrong baseline
    code, _, stderr = cli("export", "--study", str(out), "--out", str(tmp_path / "export"), "--trial", "baseline")
    assert code == 2
    assert "now builds another trained model than the study used" in stderr
    monkeypatch.setenv("SHAPES_EPOCHS", "4")  # the model the study used: export works, both files checked
    code, _, stderr = cli("export", "--study", str(out), "--out", str(tmp_path / "export"), "--trial", "baseline")
    assert code == 0, stderr
    metrics = json.loads((tmp_path / "export" / "metrics.json").read_text())
    assert metrics["model"]["pt2_accuracy"] == metrics["model"]["torch_accuracy"] == metrics["baseline"]["accuracy"]


def test_a_second_search_on_the_same_run_is_refused_and_the_first_goes_on(tmp_path, space_file):
    import sqlite3

    out = tmp_path / "run"
    args = [sys.executable, "-m", "autocomp", *search_args(out, space_file, trials=50)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(TESTS)}, text=True)
    try:
        def running() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"search exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
            try:
                with sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True) as db:
                    return bool(db.execute("SELECT 1 FROM trials WHERE state = 'RUNNING'").fetchall())
            except sqlite3.Error:
                return False

        _wait_for(running, timeout_s=300)
        code, _, stderr = cli(*search_args(out, space_file, trials=50))
        assert code == 2
        assert f"another autocomp search (pid {proc.pid}) is running on the run folder {out}" in stderr
        assert len(stderr.strip().splitlines()) == 1
        # a separate --out with the same storage and study name is the same study: refused too
        storage = default_storage(out)
        code, _, stderr = cli(*search_args(tmp_path / "other", space_file, trials=50, extra=("--storage", storage)))
        assert code == 2 and "is running on the study 't'" in stderr
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    failed = [t for t in open_study(out).trials if t.state == TrialState.FAIL]
    # the only trial closed is the one Ctrl-C cut short: the refused processes touched nothing
    assert len(failed) <= 1 and all(t.user_attrs["fail_reason"].startswith("interrupted by the user") for t in failed)
    assert not (tmp_path / "other").exists()


def test_progress_shows_the_time_left_from_this_runs_trials():
    from rich.progress import Progress

    from autocomp.cli.progress import TrialsLeftColumn

    column = TrialsLeftColumn()
    with Progress(disable=True) as progress:
        bar = progress.add_task("", total=10, completed=3, done_here=0, started_s=time.monotonic() - 60)
        assert column.render(progress.tasks[bar]).plain == "left: after the first one"
        # 2 trials in this run took 60 s (3 were done before it): the 5 left take about 150 s
        progress.update(bar, completed=5, done_here=2)
        assert column.render(progress.tasks[bar]).plain in {"0:02:30 left", "0:02:29 left"}


def test_a_bug_is_one_line_exit_3_and_its_traceback_is_kept(monkeypatch, tmp_path):
    import autocomp.profiles

    monkeypatch.setenv("AUTOCOMP_CACHE_DIR", str(tmp_path / "cache"))

    def broken():
        raise RuntimeError("profile index corrupted on purpose")

    monkeypatch.setattr(autocomp.profiles, "list_profiles", broken)
    code, stdout, stderr = cli("profiles", "list")
    assert code == 3
    assert stderr.strip().splitlines() == [
        f"error: unexpected RuntimeError: profile index corrupted on purpose (a bug in autocomp, not your input; "
        f"the traceback is in {tmp_path / 'cache' / 'last-error.log'}: please attach it to a bug report)"
    ]
    assert "Traceback" not in stdout + stderr
    assert "in broken" in (tmp_path / "cache" / "last-error.log").read_text()


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://ac:s3cret@127.0.0.1:5432/autocomp", "postgresql://ac:***@127.0.0.1:5432/autocomp"),
        ("postgresql+psycopg://ac:p@ss:w0rd@db/autocomp", "postgresql+psycopg://ac:***@db/autocomp"),
        ("postgresql://ac@db/autocomp", "postgresql://ac@db/autocomp"),
        ("sqlite:////tmp/run/study.db", "sqlite:////tmp/run/study.db"),
    ],
)
def test_storage_passwords_are_masked(url, shown):
    from autocomp.study import masked_url

    assert masked_url(url) == shown


def test_a_fastest_plan_slower_than_the_baseline_is_not_chosen():
    """The rule optimizes latency: a trial no faster than the uncompressed model is no answer; the baseline is kept."""
    from autocomp.study import choose_trial

    def study_with(latencies):
        study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
        study.set_user_attr("baseline", {"latency_ms": 1.0})
        study.set_user_attr("accuracy_floor", 0.9)
        for latency in latencies:
            study.add_trial(optuna.trial.create_trial(values=[0.95, latency, 100.0], system_attrs={"constraints": [0.0]}))
        return study

    chosen, rule = choose_trial(study_with([1.2, 1.05]))
    assert chosen is None and "faster than the baseline (1.000 ms): none is, keep the baseline" in rule
    chosen, _ = choose_trial(study_with([1.2, 0.8]))
    assert chosen is not None and chosen.values[1] == 0.8


def test_the_fastest_trials_timed_again_beside_the_baseline_decide_the_choice(tmp_path):
    """A measured search times its fastest feasible trials again, interleaved with the baseline in one
    process: the trial that was only lucky in its own timing is not chosen, and the figures are stored."""
    from types import SimpleNamespace

    from autocomp.latency.local import LocalBackend
    from autocomp.profiles import load_profile
    from autocomp.study import choose_trial, confirm_fastest
    from tiny_models import TinyResNet
    from autocomp.export import export_onnx

    small, large = TinyResNet(width=0.5).eval(), TinyResNet(width=4.0).eval()
    example = (torch.randn(1, 1, 16, 16),)
    files = {name: export_onnx(model, example, tmp_path / f"{name}.onnx") for name, model in (("small", small), ("large", large))}
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("baseline", {"latency_ms": 1.0, "artifact": str(files["large"])})
    study.set_user_attr("accuracy_floor", 0.9)
    # trial 0 is the large network, lucky in its own timing (0.1 ms); trial 1 is the small one, timed at 0.5 ms
    for name, latency in (("large", 0.1), ("small", 0.5)):
        study.add_trial(optuna.trial.create_trial(
            values=[0.95, latency, 100.0], system_attrs={"constraints": [0.0]}, user_attrs={"artifact": str(files[name])}
        ))
    assert choose_trial(study)[0].number == 0  # each trial's own timing alone picks the lucky one
    backend = LocalBackend(rounds=10)
    ctx = SimpleNamespace(backend=backend, measures=True, profile=load_profile("local"))
    confirmed = confirm_fastest(ctx, study)
    assert set(confirmed) == {"baseline", "0", "1"} and StudyRecord.of(study).confirmed_ms == confirmed
    assert confirmed["1"] < confirmed["0"]  # an eighth of the channels runs faster, side by side
    chosen, rule = choose_trial(study)
    assert chosen.number == 1 and "timed again side by side with the baseline" in rule
    # the baseline is the large network too: trial 0 is no faster than it, so it could never be the answer alone
    StudyRecord.put(study, confirmed_ms={"baseline": 1.0, "0": 1.2})
    chosen, rule = choose_trial(study)
    assert chosen is None and "side by side with the baseline, faster than the baseline (1.000 ms): none is, keep the baseline" in rule


def test_the_chosen_plan_is_fine_tuned_longer_and_that_model_ships(tmp_path):
    """final_steps: the chosen trial's weights distil further, the ONNX file is scored again, and export ships it
    with both the trial's and the final figures in metrics.json."""
    space = tmp_path / "final.yaml"
    space.write_text(SPACE.replace("finetune: {steps: 8,", "finetune: {final_steps: 20, steps: 8,"))
    out = tmp_path / "run"
    code, stdout, stderr = cli(*search_args(out, space, trials=3))
    assert code == 0, stderr
    study = open_study(out)
    final = study.user_attrs["final"]
    chosen = study.user_attrs["chosen_trial"]
    assert final["trial"] == chosen and final["steps"] == 20
    assert final["trial_accuracy"] == study.trials[chosen].values[0]
    assert "final fine-tune (20 more steps)" in stdout
    assert (out / "final" / "model.onnx").is_file() and (out / "final" / "model_state.pt").is_file()
    code, _, stderr = cli("export", "--study", str(out), "--out", str(tmp_path / "export"))
    assert code == 0, stderr
    metrics = json.loads((tmp_path / "export" / "metrics.json").read_text())
    if final["shipped"] == "final":
        assert metrics["model"]["accuracy"] == final["accuracy"] and metrics["model"]["onnx_sha256"] == final["onnx_sha256"]
        assert metrics["final_finetune"]["trial_model"]["accuracy"] == study.trials[chosen].values[0]
        assert metrics["model"]["pt2_accuracy"] == pytest.approx(final["torch_accuracy"])
    else:  # the longer fine-tune scored lower on held-out data: the trial's model ships, and says why
        assert final["accuracy"] < final["trial_accuracy"] and metrics["model"]["accuracy"] == final["trial_accuracy"]
    # resumed with the same chosen trial, the record is reused, not fine-tuned again
    code, _, stderr = cli(*search_args(out, space, trials=3))
    assert code == 0, stderr
    assert open_study(out).user_attrs["final"] == final


def test_a_study_resumed_with_other_precision_choices_says_so(tmp_path, space_file):
    out = tmp_path / "run"
    code, _, stderr = cli(*search_args(out, space_file, trials=1))
    assert code == 0, stderr
    space_file.write_text(SPACE.replace("choices: [32, 8]", "choices: [32, 8, dyn8]"))  # the same space, edited
    code, _, stderr = cli(*search_args(out, space_file, trials=2))
    assert code == 2
    assert "searched bits/block1_conv1 over [32, 8], and the space now gives [32, 8, 'dyn8']" in stderr
    assert "start a new search with another --study-name or --out" in stderr


def test_the_thread_count_is_part_of_the_device_stated_everywhere_and_kept_on_resume(tmp_path, space_file):
    """--threads: the search optimizes for that runtime setting, says so, records it in the study, the report
    and metrics.json, and a resume with another count is refused (its latencies would not compare)."""
    out = tmp_path / "run"
    code, stdout, stderr = cli(*search_args(out, space_file, trials=2, extra=("--threads", "1")))
    assert code == 0, stderr
    assert "optimizing for local as it is deployed: onnxruntime CPUExecutionProvider, 1 intra-op thread, batch 1" in stdout
    study = open_study(out)
    assert study.user_attrs["settings"]["threads"] == 1 and study.user_attrs["profile"]["runtime"]["threads"] == 1
    assert "1 intra-op thread, batch 1 (the plans are chosen for this setting" in (out / "report.html").read_text()
    code, _, stderr = cli("export", "--study", str(out), "--out", str(tmp_path / "export"), "--trial", "baseline")
    assert code == 0, stderr
    runtime = json.loads((tmp_path / "export" / "metrics.json").read_text())["runtime"]
    assert runtime == {"tool": "onnxruntime", "execution_provider": "CPUExecutionProvider", "threads": 1, "batch_size": 1}
    code, _, stderr = cli(*search_args(out, space_file, trials=3, extra=("--threads", "2")))
    assert code == 2 and "was created with threads=1; resume it with --threads 1" in stderr and "Traceback" not in stderr
    code, _, stderr = cli(*search_args(out, space_file, trials=2, extra=("--threads", "0")))
    assert code == 2 and "--threads 0 is out of range" in stderr
