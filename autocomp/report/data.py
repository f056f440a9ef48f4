"""Pure data for the report: an Optuna study -> tables and dicts, one per figure or section.

Nothing here draws or writes; every function takes a study (or the output of another
function here) and returns pandas DataFrames or plain dicts, so the numbers in the report
can be tested without a browser. The functions read the study's record as the search writes it
(``autocomp.record``: every field may be None) and so tolerate what is missing:
older studies, interrupted ones, and studies with no complete trial at all.
"""

from __future__ import annotations

import math
import shlex
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autocomp.knobs import KNOBS, summaries
from autocomp.precision import DYNAMIC_INT8, PRECISION_NAMES, precision
from autocomp.profiles import runtime_text
from autocomp.record import Baseline, StudyRecord, TrialRecord, number, whole
from autocomp.storage import stale_reason

OBJECTIVES = ("accuracy", "latency_ms", "size_bytes")
"""Objective names in the order the search stores them in ``trial.values``."""

OBJECTIVE_LABELS = {"accuracy": "accuracy (%)", "latency_ms": "latency (ms)", "size_bytes": "size", "zip_bytes": "size (deflated)"}
"""A study's size objective is its ONNX file deflated (``zip_bytes``; shared weights and zeros only save
there) or, for studies begun before weight sharing, its raw bytes (``size_bytes``)."""

NOT_RECORDED = "not recorded"
"""What the report shows for a fact an older study does not record."""

SIZE_UNITS = (("B", 1.0), ("kB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12))
"""SI units for byte counts, smallest first (1 kB = 1000 B, as ``size_mb`` is 10^6 bytes)."""

MIN_TRIALS_FOR_IMPORTANCE = 8
"""Below this many complete trials, importances are noise; the report says so instead."""

TRIAL_COLUMNS = [
    "trial",
    "state",
    "accuracy_pct",
    "latency_ms",
    "latency_p90_ms",
    "size_mb",
    "size_bytes",
    "params",
    "feasible",
    "pareto",
    "chosen",
    "violations",
    "latency_source",
    "latency_sure",
    "seconds",
    "fail_reason",
    *KNOBS,
]
"""The last columns are one per knob (``knobs.summaries``): what the trial's plan does with it in a few words,
None where the study does not search it; the report shows those some trial uses, under the knob's name."""


@dataclass(frozen=True)
class StudyMeta:
    """Who and what the study was about: the header and device section of the report."""

    study_name: str
    task: str | None
    device: str | None
    space: str | None
    backend: str | None
    profile: Mapping[str, Any] | None
    baseline: Baseline | None
    chosen_trial: int | None
    chosen_rule: str | None
    accuracy_floor: float | None
    latency_budget_ms: float | None
    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    state_counts: Mapping[str, int]
    accuracy_scale: float
    """100 when accuracies are stored as fractions in [0, 1] (shown as percent), else 1."""
    confirmed_ms: Mapping[str, float] = field(default_factory=dict)
    """The fastest trials and the baseline timed again side by side (``StudyRecord.confirmed_ms``), when the search did."""

    @property
    def size_key(self) -> str:
        """Which size the third objective is: ``zip_bytes`` (deflated) or ``size_bytes`` (raw)."""
        return self.objectives[2] if len(self.objectives) > 2 else "size_bytes"

    @property
    def size_label(self) -> str:
        return OBJECTIVE_LABELS.get(self.size_key, "size")


@dataclass(frozen=True)
class Importances:
    """Parameter importances per objective, or notes on why some could not be computed."""

    table: pd.DataFrame  # columns: param, objective, importance (normalised per objective)
    notes: list[str] = field(default_factory=list)




def _nan_if_none(value: float | None) -> float:
    return np.nan if value is None else value


def format_bytes(size_bytes: float | None) -> str:
    """A byte count in SI units at 3 significant figures: ``512 B``, ``4.58 kB``, ``219 kB``, ``1.2 MB``.

    Every size the report shows goes through here, so a small model never reads ``0.00458 MB``.
    The unit is picked after rounding, so 999,999 bytes reads ``1 MB``, not ``1e+03 kB``. A
    missing size reads "–", as every missing number in the report's tables does.
    """
    value = number(size_bytes)
    if value is None:
        return "–"
    if abs(value) < 999.5:
        return f"{value:.0f} B"
    for unit, scale in SIZE_UNITS[1:-1]:
        shown = f"{value / scale:.3g}"
        if abs(float(shown)) < 1000:
            return f"{shown} {unit}"
    unit, scale = SIZE_UNITS[-1]
    return f"{value / scale:.3g} {unit}" if abs(value / scale) < 999.5 else f"{value / scale:,.0f} {unit}"


def format_duration(seconds: float | None) -> str:
    """Minutes and seconds, ``12 min 05 s``; "not recorded" when the study does not say."""
    if seconds is None:
        return NOT_RECORDED
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"


def accuracy_scale(values: Sequence[float | None]) -> float:
    """100 if every known accuracy lies in [0, 1] (a fraction, shown as percent), else 1."""
    known = [v for v in values if v is not None and not math.isnan(v)]
    return 100.0 if all(0.0 <= v <= 1.0 for v in known) else 1.0


def study_meta(study: optuna.Study) -> StudyMeta:
    """Header facts of a study, from its record; what it does not record is None."""
    record = StudyRecord.of(study)
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    accuracies = [t.values[0] for t in trials if t.state == TrialState.COMPLETE and t.values]
    if record.baseline is not None:
        accuracies.append(record.baseline.accuracy)
    recorded = ("task", "space", "backend", "profile", "baseline", "chosen_trial", "chosen_rule", "accuracy_floor", "latency_budget_ms")
    return StudyMeta(
        study_name=study.study_name,
        **{name: getattr(record, name) for name in recorded},  # as the study records them
        device=record.device or (record.profile or {}).get("name"),
        objectives=tuple(record.objectives or OBJECTIVES),
        directions=tuple(d.name.lower() for d in study.directions),
        state_counts=counts,
        accuracy_scale=accuracy_scale(accuracies),
        confirmed_ms={str(k): float(v) for k, v in (record.confirmed_ms or {}).items() if number(v)},
    )


RUN_DIR_PLACEHOLDER = "RUN_DIR"
"""Stands for the run folder in the export command when the report is rendered without one."""


@dataclass(frozen=True)
class RunFacts:
    """How the search ran: the command that exports its result, and what a rerun needs to know."""

    export_command: str
    export_trial: int | None
    """The chosen trial the command exports, or None: no trial was chosen, so it exports the baseline."""
    seed: int | None
    sampler: str | None
    run_seconds: float | None
    """Earliest finished trial's start to the latest one's end; None without finished trials."""
    n_finished: int
    versions: Mapping[str, str]
    """Package -> version from the study's ``versions`` attr; empty when the study predates it."""
    rows: list[tuple[str, str]]
    """(label, text) of the search's arguments and run time, "not recorded" where the study does not say."""
    version_rows: list[tuple[str, str]]
    """(package, version), or one ("versions", "not recorded") row."""


def export_command(run_dir: Path | str | None, *, chosen_trial: int | None) -> str:
    """The ``autocomp export`` line for a run folder, quoted for a POSIX shell.

    With a chosen trial it relies on export's default (the chosen trial); with none it names
    ``--trial baseline``, the only model such a run can export. ``run_dir`` None (a report
    rendered without knowing its folder) gives the ``RUN_DIR`` placeholder.
    """
    study_dir = RUN_DIR_PLACEHOLDER if run_dir is None else str(run_dir)
    out_dir = f"{RUN_DIR_PLACEHOLDER}/export" if run_dir is None else str(Path(run_dir) / "export")
    parts = ["autocomp", "export", "--study", study_dir, "--out", out_dir]
    if chosen_trial is None:
        parts += ["--trial", "baseline"]
    return shlex.join(parts)


def run_span(study: optuna.Study) -> tuple[float | None, int]:
    """Seconds from the earliest finished trial's start to the latest one's end, and how many
    finished trials (complete, pruned or failed) have both times. (None, 0) when none do.

    Wall time, not summed trial time: parallel trials (``--jobs``) are counted once, and a
    search interrupted and resumed later includes the pause.
    """
    finished = [
        t for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and t.datetime_start is not None and t.datetime_complete is not None
    ]  # fmt: skip
    if not finished:
        return None, 0
    start = min(t.datetime_start for t in finished)
    end = max(t.datetime_complete for t in finished)
    return max(0.0, (end - start).total_seconds()), len(finished)


def _text_or_none(value: Any) -> str | None:
    return None if value is None or (isinstance(value, str) and not value.strip()) else str(value)


def run_facts(study: optuna.Study, *, run_dir: Path | str | None, meta: StudyMeta | None = None) -> RunFacts:
    """The "how this search ran" section: export command, seed, sampler, run time, versions.

    Reads the study attrs ``settings`` (task, device, space, backend, and in newer studies
    seed and sampler) and ``versions`` (package -> version); older studies lack some of them,
    which then read "not recorded" (task, device, space and backend fall back to the study's
    own attrs of those names first). ``run_dir`` is the folder holding the run's ``study.db``.
    """
    meta = meta or study_meta(study)
    record = StudyRecord.of(study)
    settings = record.settings or {}
    versions = {str(k): _text_or_none(v) or NOT_RECORDED for k, v in (record.versions or {}).items()}
    seed = whole(settings.get("seed"))
    sampler = _text_or_none(settings.get("sampler"))
    seconds, n_finished = run_span(study)
    run_time = NOT_RECORDED
    if seconds is not None:
        run_time = f"{format_duration(seconds)} (first trial start to last trial end, {n_finished} finished trial(s))"
    rows = [
        ("sampler", sampler or NOT_RECORDED),
        ("seed", NOT_RECORDED if seed is None else str(seed)),
        ("run time", run_time),
    ]
    # the arguments as given to the search; a study without them still has the header's names
    for key, label, fallback in (("task", "task", meta.task), ("device", "device", meta.device),
                                 ("space", "search space", meta.space), ("backend", "latency backend", meta.backend)):
        rows.append((label, _text_or_none(settings.get(key)) or _text_or_none(fallback) or NOT_RECORDED))
    screens = [s for s in (TrialRecord.of(t).screen for t in study.get_trials(deepcopy=False)) if s is not None]
    if screens:
        out = sum(1 for r in screens if not r.get("promoted"))
        rows.append((
            "multi-fidelity",
            f"{len(screens)} plans screened after {screens[0].get('steps')} of {screens[0].get('of_steps')} fine-tuning steps: "
            f"{out} screened out (pruned, with the reason), {len(screens) - out} fine-tuned in full",
        ))
    final = final_text(record.final)
    if final:
        rows.append(("final fine-tune", final))
    return RunFacts(
        export_command=export_command(run_dir, chosen_trial=meta.chosen_trial),
        export_trial=meta.chosen_trial,
        seed=seed,
        sampler=sampler,
        run_seconds=seconds,
        n_finished=n_finished,
        versions=versions,
        rows=rows,
        version_rows=list(versions.items()) or [("versions", NOT_RECORDED)],
    )


def final_text(record: Any) -> str | None:
    """The final fine-tune's record (``final.py``) in a line: what it tried, what it scored, which model ships."""
    if not isinstance(record, Mapping):
        return None
    tried = [t for t in record.get("tried") or () if isinstance(t, Mapping)]
    parts = [
        f"tried trial {t.get('trial')} first (faster; {_pct(t.get('trial_accuracy'))} after its trial, "
        f"{_pct(t.get('accuracy'))} after the final fine-tune: {t.get('reason', 'not promoted')})"
        for t in tried
    ]
    if record.get("trial") is not None:
        kept = {"final": "the final model ships", "trial": "it scored lower, so the trial's model ships"}.get(record.get("shipped"), "")
        promoted = ", promoted over the chosen trial: its final score reached the floor" if record.get("promoted") else ""
        parts.append(
            f"trial {record['trial']}: {_pct(record.get('trial_accuracy'))} after its trial, {_pct(record.get('accuracy'))} after "
            f"{record.get('steps')} more steps{promoted}; {kept}"
        )
    return "; ".join(parts) or None


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "?"


def is_feasible(trial: FrozenTrial) -> bool:
    """Optuna's rule: feasible when every constraint value is <= 0 (no constraints: feasible)."""
    return all(value <= 0.0 for value in trial.constraints.values())


def pareto_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (n_points x n_objectives).

    ``directions`` holds "maximize"/"minimize" per column. Duplicated points are all kept.
    """
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    costs = values * signs  # everything minimised
    mask = np.ones(len(costs), dtype=bool)
    for i, point in enumerate(costs):
        others = np.delete(costs, i, axis=0)
        dominated = np.any(np.all(others <= point, axis=1) & np.any(others < point, axis=1))
        mask[i] = not dominated
    return mask


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial (every state), with objectives, feasibility, Pareto and chosen flags.

    Pareto membership is computed among complete feasible trials with the study's directions,
    so it matches what the search chose from. Accuracy is shown in percent when stored as a
    fraction; size in MB (10^6 bytes) beside the exact byte count (the page shows sizes with
    ``format_bytes``).
    """
    meta = study_meta(study)
    study_attrs = study.user_attrs  # the stale-trial notes (``storage.stale_reason``)
    rows = []
    for trial in study.get_trials(deepcopy=False):
        record = TrialRecord.of(trial)
        values = trial.values if trial.state == TrialState.COMPLETE and trial.values else None
        acc, lat, size = (list(values[:3]) + [None] * 3)[:3] if values else (None, None, None)
        violations = {k: v for k, v in trial.constraints.items() if v > 0}
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name,
                "accuracy_pct": acc * meta.accuracy_scale if acc is not None else np.nan,
                "latency_ms": number(lat) if lat is not None else np.nan,
                "latency_p90_ms": _nan_if_none(record.latency_p90_ms),
                "size_mb": size / 1e6 if size is not None else np.nan,
                "size_bytes": whole(size),
                "params": record.params,
                "feasible": is_feasible(trial) if values else None,
                "pareto": False,
                "chosen": trial.number == meta.chosen_trial,
                "violations": ", ".join(f"{k} +{v:.3g}" for k, v in violations.items()),
                "latency_source": record.latency_source or "",
                "latency_sure": record.latency_sure or "",
                "seconds": _nan_if_none(record.seconds),
                "fail_reason": record.fail_reason or stale_reason(study_attrs, trial.number) or "",
                **summaries(trial.params),
            }
        )
    table = pd.DataFrame(rows, columns=TRIAL_COLUMNS)
    table["size_bytes"] = table["size_bytes"].astype("Int64")
    table["params"] = table["params"].astype("Int64")
    candidates = table.index[(table["state"] == "COMPLETE") & (table["feasible"] == True)]  # noqa: E712
    if len(candidates):
        points = table.loc[candidates, ["accuracy_pct", "latency_ms", "size_mb"]].to_numpy(dtype=float)
        directions = list(meta.directions[:3]) if len(meta.directions) >= 3 else ["maximize", "minimize", "minimize"]
        table.loc[candidates, "pareto"] = pareto_mask(points, directions)
    return table


def history_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Complete trials in order with each objective and its running best among feasible trials.

    Input is ``trials_table``'s output. The running best is NaN until the first feasible trial.
    """
    done = trials[trials["state"] == "COMPLETE"].sort_values("trial").reset_index(drop=True)
    out = done[["trial", "accuracy_pct", "latency_ms", "size_mb", "size_bytes", "feasible"]].copy()
    out["size_bytes"] = out["size_bytes"].astype(float)  # NaN-able like the other columns
    feasible = out["feasible"] == True  # noqa: E712
    out["best_accuracy_pct"] = out["accuracy_pct"].where(feasible).cummax().ffill()
    out["best_latency_ms"] = out["latency_ms"].where(feasible).cummin().ffill()
    out["best_size_mb"] = out["size_mb"].where(feasible).cummin().ffill()
    out["best_size_bytes"] = out["size_bytes"].where(feasible).cummin().ffill()
    return out


def baseline_point(meta: StudyMeta) -> dict[str, float] | None:
    """The uncompressed model as a point on the same axes as the trials, or None if unknown."""
    baseline = meta.baseline or Baseline()
    acc, lat, size = baseline.accuracy, baseline.latency_ms, number(getattr(baseline, meta.size_key, None))
    if acc is None and lat is None and size is None:
        return None
    return {
        "accuracy_pct": acc * meta.accuracy_scale if acc is not None else np.nan,
        "latency_ms": lat if lat is not None else np.nan,
        "size_mb": size / 1e6 if size is not None else np.nan,
        "size_bytes": size if size is not None else np.nan,
    }


def _layer_rows(rows: list[dict[str, Any]] | None) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(columns=["layer"])
    frame = pd.DataFrame([r for r in rows if "layer" in r])
    return frame if "layer" in frame else pd.DataFrame(columns=["layer"])


def _layers_from_params(params: Mapping[str, Any]) -> pd.DataFrame:
    """Fallback for trials without a ``layers`` attr: what the plan itself says per layer."""
    layers: dict[str, dict[str, Any]] = {}
    for name, value in params.items():
        for prefix, column in (("prune/", "prune_ratio"), ("sparsity/", "sparsity_ratio"), ("bits/", "bits")):
            if name.startswith(prefix):
                layers.setdefault(name[len(prefix) :], {})[column] = value
    return pd.DataFrame([{"layer": k, **v} for k, v in layers.items()], columns=["layer", "prune_ratio", "sparsity_ratio", "bits"])


LAYER_COLUMNS = [
    "layer",
    "baseline_channels",
    "channels",
    "baseline_heads",
    "heads",
    "prune_ratio",
    "sparsity_ratio",
    "baseline_bits",
    "bits",
    "baseline_latency_ms",
    "est_latency_ms",
    "speedup",
    "removed_block",
]


def chosen_layers(study: optuna.Study, meta: StudyMeta | None = None) -> pd.DataFrame:
    """The chosen plan layer by layer against the baseline (empty when no trial was chosen).

    Columns: ``LAYER_COLUMNS``, then any a knob added (``knob_columns``). Channels and estimated latency come from the trial's and the
    baseline's ``layers`` rows; a trial without them falls back to its plan parameters, with
    NaN where only a measurement could say. Layers are in the chosen trial's (model) order.
    """
    meta = meta or study_meta(study)
    if meta.chosen_trial is None:
        return pd.DataFrame(columns=LAYER_COLUMNS)
    try:
        trial = study.trials[meta.chosen_trial]
    except IndexError:
        return pd.DataFrame(columns=LAYER_COLUMNS)
    chosen = _layer_rows(TrialRecord.of(trial).layers)
    if chosen.empty:
        chosen = _layers_from_params(trial.params)
    base = _layer_rows(meta.baseline and meta.baseline.layers)
    base = base.rename(columns={"est_latency_ms": "baseline_latency_ms", "bits": "baseline_bits", "channels": "_base_ch"})
    keep = [c for c in ("layer", "baseline_latency_ms", "baseline_bits", "_base_ch") if c in base]
    merged = chosen.merge(base[keep], on="layer", how="left") if len(keep) > 1 else chosen
    if "baseline_channels" not in merged and "_base_ch" in merged:
        merged["baseline_channels"] = merged["_base_ch"]
    elif "_base_ch" in merged:
        merged["baseline_channels"] = merged["baseline_channels"].fillna(merged["_base_ch"])
    for column in LAYER_COLUMNS:
        if column not in merged:
            merged[column] = np.nan
    merged["baseline_bits"] = merged["baseline_bits"].fillna(32)
    for column in ("prune_ratio", "sparsity_ratio"):
        merged[column] = pd.to_numeric(merged[column], errors="coerce").fillna(0.0)
    lat = pd.to_numeric(merged["est_latency_ms"], errors="coerce")
    base_lat = pd.to_numeric(merged["baseline_latency_ms"], errors="coerce")
    merged["speedup"] = (base_lat / lat).where(lat > 0)
    return merged[LAYER_COLUMNS + knob_columns(chosen)].reset_index(drop=True)


def knob_cells(trials: pd.DataFrame) -> list[str]:
    """The knob columns of ``trials_table`` that some trial says something in, in ``KNOBS`` order."""
    return [name for name in KNOBS if trials[name].fillna("").astype(bool).any()]


def knob_columns(rows: pd.DataFrame) -> list[str]:
    """Columns a knob adds to the layer rows (``Knob.columns``) beyond ``LAYER_COLUMNS``, in their order, that
    say something for some layer: a new technique's cells reach the report without the report naming them."""
    return [c for c in rows.columns if c not in LAYER_COLUMNS and not str(c).startswith("_") and rows[c].notna().any()]


def chosen_summary(trials: pd.DataFrame, meta: StudyMeta) -> dict[str, Any] | None:
    """Chosen trial's objectives against the baseline's, with the ratios a reader wants."""
    if meta.chosen_trial is None:
        return None
    row = trials[trials["trial"] == meta.chosen_trial]
    if row.empty:
        return None
    row = row.iloc[0]
    base = baseline_point(meta) or {}
    out: dict[str, Any] = {
        "trial": int(row["trial"]),
        "state": row["state"],
        "accuracy_pct": row["accuracy_pct"],
        "latency_ms": row["latency_ms"],
        "size_mb": row["size_mb"],
        "size_bytes": np.nan if pd.isna(row["size_bytes"]) else float(row["size_bytes"]),
        "latency_source": row["latency_source"],
        "baseline_accuracy_pct": base.get("accuracy_pct", np.nan),
        "baseline_latency_ms": base.get("latency_ms", np.nan),
        "baseline_size_mb": base.get("size_mb", np.nan),
        "baseline_size_bytes": base.get("size_bytes", np.nan),
    }
    out["accuracy_delta_pts"] = out["accuracy_pct"] - out["baseline_accuracy_pct"]
    out["speedup"] = out["baseline_latency_ms"] / out["latency_ms"] if out["latency_ms"] else np.nan
    out["size_ratio"] = out["baseline_size_mb"] / out["size_mb"] if out["size_mb"] else np.nan
    side = meta.confirmed_ms
    out["side_by_side"] = (side[str(out["trial"])], side["baseline"]) if str(out["trial"]) in side and "baseline" in side else None
    return out


def latency_provenance(trials: pd.DataFrame, meta: StudyMeta) -> dict[str, Any]:
    """Were latencies estimated (cost model) or measured (a real run)? Counts per source."""
    sources = trials.loc[trials["state"] == "COMPLETE", "latency_source"]
    counts = {str(k) if k else "unknown": int(v) for k, v in sources.value_counts().items()}
    estimated = sum(v for k, v in counts.items() if k.startswith("estimate"))
    measured = sum(v for k, v in counts.items() if k != "unknown" and not k.startswith("estimate"))
    if measured and not estimated:
        kind = "measured"
    elif estimated and not measured:
        kind = "estimated"
    elif estimated and measured:
        kind = "mixed"
    else:
        kind = {"estimate": "estimated", "local": "measured", "ssh": "measured"}.get(meta.backend or "", "unknown")
    baseline_source = meta.baseline and meta.baseline.latency_source
    chosen = trials.loc[trials["chosen"] == True, "latency_sure"]  # noqa: E712
    return {"kind": kind, "sources": counts, "backend": meta.backend, "baseline_source": baseline_source,
            "chosen_sure": str(chosen.iloc[0]) if len(chosen) and chosen.iloc[0] else ""}


def device_facts(meta: StudyMeta) -> list[tuple[str, str]]:
    """The profile's facts that decide a plan, as (label, value) rows; empty without a profile."""
    profile = meta.profile
    if not profile:
        return []
    rows: list[tuple[str, str]] = []
    if profile.get("description"):
        rows.append(("description", str(profile["description"])))
    precisions = profile.get("precisions") or {}
    for name in ("fp32", "fp16", "int8"):
        spec = precisions.get(name)
        if not isinstance(spec, Mapping):
            rows.append((name, "not supported"))
            continue
        gops = number(spec.get("peak_gops"))
        if name == "fp32":
            accel = "reference precision"
        else:
            accel = "accelerated (faster than fp32)" if spec.get("accelerated") else "not accelerated (no faster than fp32)"
        text = f"{accel}" + (f", peak {gops:g} GOPS" if gops is not None else "")
        if spec.get("source"):
            text += f" (source: {spec['source']})"
        rows.append((name, text))
    bandwidth = number(profile.get("memory_bandwidth_gbps"))
    if bandwidth is not None:
        rows.append(("memory bandwidth", f"{bandwidth:g} GB/s"))
    if "unstructured_sparsity_speedup" in profile:
        rows.append(("unstructured sparsity", "speeds up" if profile["unstructured_sparsity_speedup"] else "no speedup (zeros still computed)"))
    if "structured_2to4_sparsity" in profile:
        rows.append(("2:4 structured sparsity", "supported" if profile["structured_2to4_sparsity"] else "not supported"))
    if profile.get("weight_sharing_source"):
        rows.append(("weight sharing", f"size only, no speedup ({profile['weight_sharing_source']})"))
    runtime = profile.get("runtime")
    if isinstance(runtime, Mapping) and runtime:
        rows.append((
            "timed and deployed with",
            f"{runtime_text(runtime)} (the plans are chosen for this setting; another can favour another plan)",
        ))
    if profile.get("channel_multiple"):
        rows.append(("channel multiple", f"channels rounded to multiples of {profile['channel_multiple']}"))
    calibration = profile.get("calibration")
    if isinstance(calibration, Mapping) and calibration:
        rows.append(("calibration", ", ".join(f"{k} {v}" for k, v in calibration.items())))
    elif "calibration" in profile:
        rows.append(("calibration", "none: datasheet numbers only"))
    return rows


def technique_notes(trials: pd.DataFrame, layers: pd.DataFrame) -> list[str]:
    """What PTQ against QAT and weight sharing did in this study, in a line each (none when not searched).

    PTQ against QAT compares the most accurate complete trials with int8 layers of each kind; weight
    sharing says what the chosen plan's shared layers bought: size once deflated, never speed."""
    notes = []
    done = trials[(trials["state"] == "COMPLETE") & trials["bits"].astype(str).str.contains("int8")]
    if done["qat"].notna().any():  # the study searches PTQ ("") against QAT ("on")
        qat = done["qat"].fillna("").astype(bool)
        best = {kind: done[qat == kind]["accuracy_pct"].max() for kind in (False, True)}
        counts = {kind: int((qat == kind).sum()) for kind in (False, True)}
        if counts[False] and counts[True]:
            gain = best[True] - best[False]
            verdict = f"QAT recovered {gain:.2f} points PTQ lost" if gain > 0 else "QAT recovered nothing here"
            notes.append(
                f"int8 by post-training quantization (PTQ): best {best[False]:.2f}% over {counts[False]} trials; "
                f"fine-tuned through fake quantization (QAT): best {best[True]:.2f}% over {counts[True]} → {verdict}"
            )
    if "shared_values" in layers and layers["shared_values"].notna().any():
        shared = layers[layers["shared_values"].notna()]
        values = ", ".join(sorted({f"{int(v)}" for v in shared["shared_values"]}, key=int))
        notes.append(
            f"weights shared in {len(shared)} layers ({values} values each): the file deflates smaller, it does not "
            "run faster (every runtime we target still computes one float per weight)"
        )
    return notes


def device_reasons(meta: StudyMeta, layers: pd.DataFrame) -> list[str]:
    """Short "why this plan on this device" lines: profile facts tied to the chosen plan.

    E.g. "int8 not accelerated on jetson-nano → fp16 chosen for 6 of 9 layers". These are
    the cost model's incentives stated next to what the search picked, not a causal proof.
    """
    profile = meta.profile or {}
    device = meta.device or profile.get("name") or "this device"
    if layers.empty:
        return []
    precisions = profile.get("precisions") or {}
    bits = [b for b in map(precision, layers["bits"]) if b is not None]
    n = len(bits)
    counts = {b: bits.count(b) for b in set(bits)}
    accelerated = {p for p, s in precisions.items() if isinstance(s, Mapping) and s.get("accelerated")}
    reasons: list[str] = []
    if precisions:
        for name, b in (("int8", 8), ("fp16", 16)):
            spec = precisions.get(name)
            used = counts.get(b, 0)
            if spec is None:
                reasons.append(f"{name} not supported on {device} → never chosen")
            elif name in accelerated:
                reasons.append(f"{name} accelerated on {device} → {name} chosen for {used} of {n} layers")
            else:
                other = next((p for p in ("int8", "fp16") if p != name and p in accelerated), None)
                tail = f"{other} preferred" if other else "kept only where it shrinks the file"
                reasons.append(f"{name} not accelerated on {device} → {tail}; {name} used for {used} of {n} layers")
        dynamic = PRECISION_NAMES[DYNAMIC_INT8]
        tool = (profile.get("runtime") or {}).get("tool", "onnxruntime")
        if "int8" in precisions and tool != "onnxruntime":
            reasons.append(f"dynamic int8 is onnxruntime's; {device} runs {tool} → never offered")
        elif counts.get(DYNAMIC_INT8):
            reasons.append(
                f"{dynamic} (int8 weights, activations quantized per input: no calibrated ranges to break "
                f"around LayerNorm/Softmax/GELU) → chosen for {counts[DYNAMIC_INT8]} of {n} layers"
            )
    sparsity = pd.to_numeric(layers["sparsity_ratio"], errors="coerce").fillna(0.0)
    if "unstructured_sparsity_speedup" in profile:
        if profile["unstructured_sparsity_speedup"]:
            reasons.append(f"unstructured sparsity speeds up {device} → {int((sparsity > 0).sum())} layers sparse")
        else:
            pruned = int((pd.to_numeric(layers["prune_ratio"], errors="coerce").fillna(0.0) > 0).sum())
            reasons.append(
                f"unstructured sparsity gives no speedup on {device} → channel pruning instead ({pruned} of {n} layers pruned)"
            )
    shared = int(layers["shared_values"].notna().sum()) if "shared_values" in layers else 0
    if shared:
        reasons.append(f"weights shared in {shared} of {len(layers)} layers → a smaller file to store and send; {device} runs them as fast as before")
    gone = layers["removed_block"].dropna().astype(str) if "removed_block" in layers else pd.Series(dtype=str)
    if len(gone):
        blocks = sorted(set(gone))
        reasons.append(
            f"depth pruned: {len(blocks)} whole block(s) removed ({', '.join(blocks)}), with their {len(gone)} layers and "
            "the per-block glue (LayerNorm, head reshapes, Softmax) that width pruning cannot remove"
        )
    heads = pd.to_numeric(layers["heads"], errors="coerce") if "heads" in layers else pd.Series(dtype=float)
    if heads.notna().any():
        query = layers[layers["layer"].astype(str).str.endswith(".query")]
        kept = pd.to_numeric(query["heads"], errors="coerce")
        total = pd.to_numeric(query["baseline_heads"], errors="coerce")
        ffn = [layer for layer, ratio in zip(layers["layer"], layers["prune_ratio"]) if ratio and "intermediate" in str(layer)]
        reasons.append(
            f"attention pruned as whole heads: {int((total - kept).sum())} of {int(total.sum())} heads removed over "
            f"{len(query)} attention modules; feed-forward widths pruned in {len(ffn)} layers"
        )
    if profile.get("channel_multiple"):
        reasons.append(f"{device} runs channel counts in multiples of {profile['channel_multiple']} best → pruned widths rounded to them")
    return reasons


def importances(study: optuna.Study, *, min_trials: int = MIN_TRIALS_FOR_IMPORTANCE) -> Importances:
    """PED-ANOVA parameter importances for each objective, over complete trials.

    PED-ANOVA ranks parameters for reaching *low* target values, so maximised objectives
    are negated. Where importances cannot be computed (too few trials, every parameter
    fixed, a failing evaluator) the result carries a note instead, never an exception.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    objectives = list(StudyRecord.of(study).objectives or OBJECTIVES)[: len(study.directions)]
    empty = pd.DataFrame(columns=["param", "objective", "importance"])
    if len(complete) < min_trials:
        return Importances(empty, [f"only {len(complete)} complete trial(s): importances need at least {min_trials}"])
    varying = {
        name
        for name in {p for t in complete for p in t.params}
        if len({repr(t.params.get(name)) for t in complete}) > 1
    }
    if not varying:
        return Importances(empty, ["every parameter has a single value across trials: nothing to rank"])
    frames, notes = [], []
    for index, (objective, direction) in enumerate(zip(objectives, study.directions)):
        sign = -1.0 if direction == StudyDirection.MAXIMIZE else 1.0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = optuna.importance.get_param_importances(
                    study, params=sorted(varying), target=lambda t, i=index, s=sign: s * t.values[i]
                )
            except (ValueError, RuntimeError, ZeroDivisionError, FloatingPointError) as exc:
                notes.append(f"{objective}: importances could not be computed ({type(exc).__name__}: {exc})")
                continue
        for warning in caught:
            message = str(warning.message)
            if "low `target` values" not in message:  # we already negate maximised objectives
                notes.append(f"{objective}: {message}")
        frames.append(pd.DataFrame({"param": list(result), "objective": objective, "importance": list(result.values())}))
    table = pd.concat(frames, ignore_index=True) if frames else empty
    return Importances(table, notes)


SENSITIVITY_COLUMNS = ["param", "value", "accuracy_drop", "latency_saved_pct", "error"]
PROPOSAL_COLUMNS = ["trial", "round", "predicted_accuracy", "accuracy", "predicted_latency_ms", "latency_ms", "latency_unit", "priced"]


def sensitivity_table(study: optuna.Study) -> pd.DataFrame:
    """The study's sensitivity profile: each change alone, its accuracy drop (no fine-tuning) and the
    estimated latency it saves, in % of the baseline's estimate (``allocate.sensitivity_profile``)."""
    record = StudyRecord.of(study)
    rows = [o for o in record.sensitivity or () if "param" in o]
    if not rows:
        return pd.DataFrame(columns=SENSITIVITY_COLUMNS)
    accuracy = record.baseline and record.baseline.accuracy
    frame = pd.DataFrame(rows)
    base_ms = record.sensitivity_baseline_ms
    frame["accuracy_drop"] = (accuracy - pd.to_numeric(frame["accuracy"], errors="coerce")) if accuracy is not None else np.nan
    frame["latency_saved_pct"] = (
        100.0 * (1.0 - pd.to_numeric(frame["latency_ms"], errors="coerce") / base_ms) if base_ms else np.nan
    )
    frame["value"] = frame["value"].astype(str)
    frame["error"] = frame["error"].fillna("") if "error" in frame else ""
    return frame[SENSITIVITY_COLUMNS]


def proposals_table(study: optuna.Study) -> pd.DataFrame:
    """Each proposed trial: what the allocation predicted and what the trial reached after fine-tuning."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        prediction = TrialRecord.of(trial).proposal
        if prediction is None:
            continue
        done = trial.state == TrialState.COMPLETE and trial.values
        rows.append({
            "trial": trial.number, "round": prediction.get("round", 1),
            "predicted_accuracy": number(prediction.get("accuracy")),
            "accuracy": trial.values[0] if done else np.nan,
            "predicted_latency_ms": number(prediction.get("latency_ms")),
            "latency_ms": trial.values[1] if done else np.nan,
            "latency_unit": str(prediction.get("latency_unit", "")),
            "priced": str(prediction.get("priced", "")),
        })
    return pd.DataFrame(rows, columns=PROPOSAL_COLUMNS)


SPLIT_COLUMNS = ["link", "bandwidth_mbps", "rtt_ms", "trial", "cut", "edge_ms", "transfer_ms", "server_ms", "total_ms", "reason"]


@dataclass(frozen=True)
class SplitView:
    """A split search's section: its link, the teacher's cuts, and the finished trials re-priced per link."""

    link: Mapping[str, Any]
    cuts: pd.DataFrame  # name, bytes_fp32, edge_ms, server_ms, total_ms (over the study's link): the teacher's, both ends first
    chosen_cut: str | None  # the chosen trial's ``split/after`` (None: nothing chosen, the model stays on the device)
    repriced: pd.DataFrame  # SPLIT_COLUMNS, one row per link: the fastest feasible trial (or the baseline) over it


def split_view(study: optuna.Study, meta: StudyMeta | None = None) -> SplitView | None:
    """None unless the study searched a split (it then records its link, ``StudyRecord.link``).

    Re-pricing needs no training: a trial's record holds its latency's parts (``split_ms``: edge, transfer,
    server) and its bytes sent, so over another link it costs edge + that link's transfer + server; a trial
    whose plan keeps the model on the device costs what it cost. Each link's row is the fastest feasible
    trial over it, or the baseline (all on the device) when none is faster."""
    from autocomp.links import Link, list_links, load_link

    meta = meta or study_meta(study)
    record = StudyRecord.of(study)
    if record.link is None:
        return None
    study_link = Link(**{k: v for k, v in record.link.items() if k in Link.__dataclass_fields__})
    links = [study_link, *(load_link(name) for name in list_links() if name != study_link.name)]
    device, server = meta.device or "the device", (record.settings or {}).get("server") or "the server"
    options = [("baseline", "device", number(meta.baseline and meta.baseline.latency_ms) or math.inf, 0.0, 0)]
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if not is_feasible(trial):
            continue
        parts = TrialRecord.of(trial)
        if parts.split_ms:
            options.append((trial.number, str(trial.params.get("split/after")), number(parts.split_ms.get("edge")) or 0.0,
                            number(parts.split_ms.get("server")) or 0.0, parts.bytes_sent or 0))
        else:
            options.append((trial.number, "device", trial.values[1], 0.0, 0))
    rows = []
    for link in links:
        priced = [(who, cut, edge, 0.0 if cut == "device" else link.transfer_ms(sent), server, sent) for who, cut, edge, server, sent in options]
        who, cut, edge, transfer, far, sent = min(priced, key=lambda p: p[2] + p[3] + p[4])
        on_device = min((p for p in priced if p[1] == "device"), key=lambda p: p[2])
        if cut == "device":
            split = [p for p in priced if p[1] != "device"]
            other = min(split, key=lambda p: p[2] + p[3] + p[4]) if split else None
            reason = f"all on {device}: {edge:.3f} ms" + (
                f"; the fastest split ({other[1]}) needs {sum(other[2:5]):.3f} ms, {other[3]:.3f} of them to send {other[5]:,} bytes"
                if other else "")
        else:
            reason = (f"{edge:.3f} ms on {device} + {transfer:.3f} ms to send {sent:,} bytes + {far:.3f} ms on {server}, "
                      f"against {on_device[2]:.3f} ms all on {device}")
        rows.append({"link": link.name, "bandwidth_mbps": link.bandwidth_mbps, "rtt_ms": link.rtt_ms, "trial": who, "cut": cut,
                     "edge_ms": edge, "transfer_ms": transfer, "server_ms": far, "total_ms": edge + transfer + far, "reason": reason})
    chosen = study.trials[meta.chosen_trial].params.get("split/after") if meta.chosen_trial is not None else None
    cuts = pd.DataFrame(record.cuts or [], columns=["name", "bytes_fp32", "edge_ms", "server_ms"])
    cuts["total_ms"] = [
        e + s + (0.0 if name == "device" else study_link.transfer_ms(b))
        for name, b, e, s in zip(cuts["name"], cuts["bytes_fp32"], pd.to_numeric(cuts["edge_ms"]), pd.to_numeric(cuts["server_ms"]))
    ]
    return SplitView(link=record.link, cuts=cuts, chosen_cut=chosen, repriced=pd.DataFrame(rows, columns=SPLIT_COLUMNS))
