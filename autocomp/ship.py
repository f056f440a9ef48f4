"""Write a finished trial (or the baseline) as files a user ships: ONNX, PyTorch, plan, metrics.

The PyTorch artifact is a ``torch.export`` program (``model.pt2``): it holds the
pruned student's architecture and weights, and reloads with
``torch.export.load(path).module()`` without autocomp, the task or the search,
and without unpickling arbitrary code.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from autocomp.compress.distill import DistillConfig
from autocomp.errors import ConfigError
from autocomp.paths import in_run
from autocomp.pipeline import compress_model
from autocomp.plan import CompressionPlan
from autocomp.record import StudyRecord, TrialRecord
from autocomp.runtime import evaluate_onnx
from autocomp.tasks import score, torch_predictor

ACCURACY_TOLERANCE = 1e-6


def _pick_trial(study: optuna.Study, trial: str | None) -> FrozenTrial | None:
    """None means the baseline."""
    if trial == "baseline":
        return None
    if trial is None:
        number = StudyRecord.of(study).chosen_trial
        if number is None:
            raise ConfigError("the search chose no trial (none met the constraints); pass --trial N or --trial baseline")
    else:
        try:
            number = int(trial)
        except ValueError:
            raise ConfigError(f"--trial {trial!r} is neither a trial number nor 'baseline'") from None
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise ConfigError(f"the study has no trial {number}; it has trials 0..{max(trials, default=-1)}")
    chosen = trials[number]
    if chosen.state != TrialState.COMPLETE:
        reason = TrialRecord.of(chosen).fail_reason or ""
        raise ConfigError(f"trial {number} is {chosen.state.name.lower()} ({reason}); only complete trials can be exported")
    return chosen


def export_trial(study: optuna.Study, run_dir: Path, out_dir: Path, *, trial: str | None = None) -> list[Path]:
    """Write model.onnx, model.pt2, plan.json and metrics.json for a trial (default: the chosen one)."""
    from autocomp.profiles import load_profile
    from autocomp.search_space import load_space
    from autocomp.tasks import load_task

    from autocomp.study import study_objectives
    from autocomp.tasks import model_fingerprint

    _check_out_dir(run_dir, out_dir)
    stored = StudyRecord.of(study)
    settings = stored.settings
    if not settings or not stored.baseline:
        raise ConfigError("this study has no recorded settings or baseline; was it written by 'autocomp search'?")
    picked = _pick_trial(study, trial)
    size_key = study_objectives(study)[2]
    task = load_task(settings["task"])
    teacher = task.build_model()
    baseline = asdict(stored.baseline)
    recorded = stored.baseline.teacher_sha256
    now = model_fingerprint(teacher)
    if recorded is not None and recorded != now:
        raise ConfigError(
            f"the task {settings['task']!r} now builds another trained model than the study used (weights "
            f"{recorded[:12]}, now {now[:12]}: retrained or edited since); restore the model the study was searched "
            "on, or run a new search"
        )
    if picked is None:
        plan, record, model = CompressionPlan(), baseline, teacher
        onnx_src = run_dir / "baseline" / "model.onnx"
    else:
        plan = CompressionPlan.from_params(picked.params)
        trial_record = TrialRecord.of(picked)
        record = {**asdict(trial_record), "accuracy": picked.values[0], "latency_ms": picked.values[1], size_key: picked.values[2]}
        onnx_src = in_run(trial_record.artifact, run_dir)
        final = stored.final
        if final is not None and final.get("trial") == picked.number and final.get("shipped") == "final":
            trial_record = {k: record.get(k) for k in METRIC_KEYS}
            record = {**final, "trial_model": trial_record}  # the longer fine-tune of this plan ships
            onnx_src = in_run(final["artifact"], run_dir)
        profile = load_profile(settings["device"])
        space = load_space(settings["space"])
        model = compress_model(
            task, teacher, plan, finetune=DistillConfig(steps=0), round_to=profile.channel_multiple,
            pipeline=space.pipeline, student=space.student, recipe=profile.int8_recipe,
        )
        state_path = onnx_src.parent / "model_state.pt"  # the trial's, or the final fine-tune's
        if not state_path.is_file():
            raise ConfigError(f"trial {picked.number}'s weights {state_path} are missing; was the run folder moved or cleaned?")
        model.load_state_dict(torch.load(state_path, weights_only=True))
    if not onnx_src.is_file():
        raise ConfigError(f"{onnx_src} is missing; was the run folder moved or cleaned?")
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "model.onnx"
    shutil.copyfile(onnx_src, onnx_path)
    accuracy_now = evaluate_onnx(task, onnx_path)
    if abs(accuracy_now - record["accuracy"]) > ACCURACY_TOLERANCE:
        raise ConfigError(
            f"{onnx_src} scores {accuracy_now:.4f} now but {record['accuracy']:.4f} was recorded; the run folder was modified"
        )
    pt2_path = out_dir / "model.pt2"
    # batch stays dynamic so the reloaded program takes any batch size, like the ONNX file;
    # tracing at batch 2 because torch specializes a size-1 dimension to a constant
    example = tuple(torch.cat([x, x]) for x in task.example_inputs())
    batch = tuple({0: torch.export.Dim.AUTO} for _ in example)
    torch.export.save(torch.export.export(model.eval(), example, dynamic_shapes=batch), pt2_path)
    pt2_accuracy = score(task, torch_predictor(torch.export.load(pt2_path).module(), set_eval=False), what=f"the exported {pt2_path.name}")
    expected = record.get("torch_accuracy")  # studies from before it was recorded cannot check model.pt2
    if expected is not None and abs(pt2_accuracy - expected) > ACCURACY_TOLERANCE:
        raise ConfigError(
            f"{pt2_path} scores {pt2_accuracy:.4f} but the PyTorch model of this trial scored {expected:.4f} in the "
            "search; the rebuilt model is not the one that was scored (run folder or task changed)"
        )
    record = {**record, "pt2_accuracy": pt2_accuracy}
    plan_path = out_dir / "plan.json"
    plan_path.write_text(plan.to_json() + "\n")
    metrics_path = out_dir / "metrics.json"
    metrics_path.write_text(json.dumps(_metrics(study, picked, record, baseline, size_key=size_key), indent=2) + "\n")
    return [onnx_path, pt2_path, plan_path, metrics_path, *_split_files(onnx_path, out_dir)]


def _split_files(onnx_path: Path, out_dir: Path) -> list[Path]:
    """A plan cut between the device and a server (``knobs.split``): ``edge.onnx``, ``server.onnx`` and ``split.json``
    beside ``model.onnx`` (which computes what the two do); the ``server`` end only says so in ``split.json``."""
    from autocomp.split import ON_SERVER, halves, marked

    mark = marked(onnx_path)
    if mark is None:
        return []
    if mark.after == ON_SERVER:
        manifest = out_dir / "split.json"
        manifest.write_text(json.dumps({**asdict(mark), "server": onnx_path.name}, indent=2) + "\n")
        return [manifest]
    files = halves(onnx_path, out_dir)
    return [files.edge, files.server, files.manifest]


def _check_out_dir(run_dir: Path, out_dir: Path) -> None:
    """Refuse an output folder that is the run folder or lies among its artifacts (export would overwrite them)."""
    run, out = run_dir.resolve(), out_dir.resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder; give a folder to write the model files into")
    artifacts = (run / "baseline", run / "trials", run / "final")
    if out == run or any(out == a or a in out.parents for a in artifacts):
        raise ConfigError(
            f"--out {out_dir} is the run folder or inside its own artifacts (baseline/, trials/, final/); "
            f"export to a folder of its own, e.g. --out {run / 'export'}"
        )


METRIC_KEYS = (
    "accuracy", "torch_accuracy", "pt2_accuracy", "latency_ms", "latency_p90_ms", "latency_source", "size_bytes", "zip_bytes",
    "params", "onnx_sha256",
)


def _metrics(
    study: optuna.Study, picked: FrozenTrial | None, record: dict[str, Any], baseline: dict[str, Any], *, size_key: str
) -> dict[str, Any]:
    final = {"final_finetune": {"steps": record["steps"], "trial_model": record["trial_model"]}} if "trial_model" in record else {}
    return {
        "device": StudyRecord.of(study).device,
        "runtime": _runtime(study),
        "trial": "baseline" if picked is None else picked.number,
        "model": {k: record.get(k) for k in METRIC_KEYS},
        **final,
        "baseline": {k: baseline.get(k) for k in METRIC_KEYS},
        "speedup": baseline["latency_ms"] / record["latency_ms"],
        "size_ratio": baseline[size_key] / record[size_key] if record[size_key] else None,  # None: nothing on the device
        "size_ratio_of": size_key,  # zip_bytes: the files deflated (shared weights gain there); size_bytes: raw
    }


def _runtime(study: optuna.Study) -> dict[str, Any] | None:
    """How the latencies were timed and the model is meant to run (threads decide which plan wins)."""
    runtime = (StudyRecord.of(study).profile or {}).get("runtime")
    if not runtime:
        return None
    return {k: runtime.get(k) for k in ("tool", "execution_provider", "threads", "batch_size")}
