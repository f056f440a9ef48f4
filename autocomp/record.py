"""What a study keeps about itself and each trial: the one list of its record's keys, typed.

Optuna stores user attributes as a JSON dict per study and per trial. The search writes them (objective,
study, final, allocate, fidelity, storage, bench) and the report, ``export``, the CLI and the benchmark
read them; before this module each side spelled some forty string keys itself, so a misspelt key was
silent on both (a missing key reads as None). Here each key is a field of a frozen dataclass:

- ``Record.put(trial_or_study, name=value, ...)`` writes, and refuses a name that is not a field or a
  value of the wrong kind (a programming error, raised at once rather than read back as "not recorded");
- ``Record.attrs(...)`` is the same check, returning the dict (``enqueue_trial(user_attrs=...)``, a baseline);
- ``Record.read(attrs)`` (and ``TrialRecord.of(trial)``, ``StudyRecord.of(study)``) reads: each field
  holds its kind or None, never raises, so a study written before a field existed, or one a user
  edited by hand, reads as "not recorded" where it says nothing.

Field names are the stored keys, unchanged since the first release, so old studies read as they are.
Two things stay outside: the staleness notes ``storage`` writes under one key per trial number (a
family of keys, not one field), and the inside of the ``final`` record, which only ``final.py`` writes
and ``final_text`` reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Sequence, TypeVar

R = TypeVar("R", bound="Record")


def number(value: Any) -> float | None:
    """A finite float, or None (a bool is not a number here)."""
    if isinstance(value, bool):
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(result) else result


def whole(value: Any) -> int | None:
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def mapping(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def listing(value: Any) -> list[Any] | None:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else None


def rows(value: Any) -> list[dict[str, Any]] | None:
    """A list of dict rows (the per-layer rows, the sensitivity options); rows that are not dicts are dropped."""
    items = listing(value)
    return None if items is None else [dict(r) for r in items if isinstance(r, Mapping)]


def kept(read: Callable[[Any], Any], doc: str = "") -> Any:
    """A record field: None when not recorded, ``read`` turning a stored value into its kind (or None)."""
    return field(default=None, metadata={"read": read, "doc": doc})


@dataclass(frozen=True)
class Record:
    """A typed view of one user-attribute dict; subclasses list their keys as ``kept`` fields."""

    @classmethod
    def read(cls: type[R], attrs: Mapping[str, Any] | None) -> R:
        attrs = attrs if isinstance(attrs, Mapping) else {}
        return cls(**{f.name: f.metadata["read"](attrs.get(f.name)) for f in fields(cls)})

    @classmethod
    def attrs(cls, **values: Any) -> dict[str, Any]:
        """``values`` checked against the fields: known names, each value of its field's kind (None allowed)."""
        known = {f.name: f for f in fields(cls)}
        for name, value in values.items():
            if name not in known:
                raise TypeError(f"{cls.__name__} has no field {name!r} (known: {', '.join(known)})")
            if value is not None and known[name].metadata["read"](value) is None:
                raise TypeError(f"{cls.__name__}.{name} cannot hold {value!r}")
        return dict(values)

    @classmethod
    def put(cls, target: Any, **values: Any) -> None:
        """Write checked ``values`` as user attributes of ``target`` (an Optuna trial or study)."""
        for name, value in cls.attrs(**values).items():
            target.set_user_attr(name, value)


@dataclass(frozen=True)
class Measured(Record):
    """What measuring one exported model records (``PlanResult.summary`` and the latency backend)."""

    accuracy: float | None = kept(number, "the ONNX file's accuracy on the task's validation set")
    torch_accuracy: float | None = kept(number, "the PyTorch model's accuracy before export")
    size_bytes: int | None = kept(whole, "the ONNX file's bytes")
    zip_bytes: int | None = kept(whole, "the ONNX file deflated (where shared weights and zeros save)")
    params: int | None = kept(whole)
    onnx_sha256: str | None = kept(text)
    artifact: str | None = kept(text, "the ONNX file's path when it was written (``paths.in_run`` finds it after a move)")
    latency_source: str | None = kept(text, "which backend priced it: estimate:<device>, onnxruntime, ssh:<host>")
    latency_sure: str | None = kept(text, "how sure an estimate is, in words")
    latency_p90_ms: float | None = kept(number)
    layers: list[dict[str, Any]] | None = kept(rows, "one row per layer (``objective.layer_rows``)")


@dataclass(frozen=True)
class Baseline(Measured):
    """The uncompressed model, measured once per study (the study's ``baseline``)."""

    latency_ms: float | None = kept(number)
    teacher_sha256: str | None = kept(text, "the trained model's fingerprint, checked by resume, workers and export")


@dataclass(frozen=True)
class TrialRecord(Measured):
    """One trial's record; its objective values are Optuna's ``trial.values`` (accuracy, latency, size)."""

    plan: dict[str, Any] | None = kept(mapping, "the plan's parameters as stored")
    phase: str | None = kept(text, "the step the trial was in last (``objective.phase_name``)")
    precheck_latency_ms: float | None = kept(number, "the estimate a latency budget checked before fine-tuning")
    latency_outside: list[Any] | None = kept(listing, "what in the file lies outside the estimator's calibration")
    latency_runs: int | None = kept(whole)
    seconds: float | None = kept(number)
    timings_s: dict[str, Any] | None = kept(mapping, "phase -> seconds (the benchmark's overhead profile)")
    fail_reason: str | None = kept(text)
    interrupted: bool | None = kept(flag, "stopped by the user or the trial budget, not by its plan: rerun on resume")
    worker: str | None = kept(text, "which process ran it (host:pid)")
    requeued_from: int | None = kept(whole, "the stale trial this one reruns")
    screen: dict[str, Any] | None = kept(mapping, "the multi-fidelity screen's decision (``fidelity``)")
    proposal: dict[str, Any] | None = kept(mapping, "the allocator's prediction for a plan it queued (``allocate``)")
    bytes_sent: int | None = kept(whole, "a split plan: the bytes sent over the link per inference")
    split_ms: dict[str, Any] | None = kept(mapping, "a split plan: its latency's parts, edge, transfer and server")

    @classmethod
    def of(cls, trial: Any) -> TrialRecord:
        return cls.read(trial.user_attrs)


def baseline_of(value: Any) -> Baseline | None:
    return Baseline.read(value) if isinstance(value, Mapping) else None


@dataclass(frozen=True)
class StudyRecord(Record):
    """The study's own record: how it was run, its baseline, its choice."""

    settings: dict[str, Any] | None = kept(mapping, "the search's arguments (task, device, space, backend, seed, sampler, ...)")
    versions: dict[str, Any] | None = kept(mapping, "package -> version")
    device: str | None = kept(text)
    profile: dict[str, Any] | None = kept(mapping, "the device profile as run (without its SSH settings)")
    backend: str | None = kept(text)
    task: str | None = kept(text)
    space: str | None = kept(text)
    objectives: list[Any] | None = kept(listing, "objective names in ``trial.values`` order")
    accuracy_floor: float | None = kept(number)
    latency_budget_ms: float | None = kept(number)
    baseline: Baseline | None = kept(baseline_of)
    chosen_trial: int | None = kept(whole)
    chosen_rule: str | None = kept(text)
    confirmed_ms: dict[str, Any] | None = kept(mapping, "the fastest trials and the baseline timed again side by side")
    final: dict[str, Any] | None = kept(mapping, "the final fine-tune's record (``final.py``)")
    sensitivity: list[dict[str, Any]] | None = kept(rows, "the allocator's per-layer options (``allocate.Option``)")
    sensitivity_s: float | None = kept(number)
    sensitivity_baseline_ms: float | None = kept(number)
    proposals_queued: int | None = kept(whole)
    proposal_refined: bool | None = kept(flag)
    bench_wall_s: float | None = kept(number, "the benchmark's search time so far (its budget spans resumes)")
    link: dict[str, Any] | None = kept(mapping, "a split search's link to the server (``links.Link``'s numbers)")
    cuts: list[dict[str, Any]] | None = kept(rows, "a split search's ways to split the teacher: name, bytes_fp32, edge_ms, server_ms")

    @classmethod
    def of(cls, study: Any) -> StudyRecord:
        return cls.read(study.user_attrs)

    @classmethod
    def attrs(cls, **values: Any) -> dict[str, Any]:
        if isinstance(values.get("baseline"), Baseline):
            raise TypeError("StudyRecord.baseline is written as Baseline.attrs(...), a dict")
        if isinstance(values.get("baseline"), Mapping):
            Baseline.attrs(**values["baseline"])
        return super().attrs(**values)
