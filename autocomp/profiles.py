"""Device profiles: ``device_profiles/*.yaml`` -> frozen ``DeviceProfile``.

A profile says what a device rewards (which precisions run faster, whether
sparsity pays, the channel multiple pruning should round to), how to time a
model on it, and the coefficients of the latency cost model, with a source for
every number.

The dataclasses below are the contract other modules code against.

Where profiles are found (first match wins for a name):

1. ``config_dir()/calibrations/<name>.yaml`` -- a calibration written by
   ``autocomp calibrate`` takes precedence over the shipped file;
2. each folder in ``AUTOCOMP_PROFILE_DIR`` (``os.pathsep``-separated);
3. ``device_profiles/`` at the repository root (editable install / checkout);
4. ``<sys.prefix>/share/autocomp/device_profiles`` (a wheel that ships the
   files as ``data-files``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from autocomp import host
from autocomp.cost_model import validate_cost_model  # a leaf: the schema the estimator computes
from autocomp.errors import ConfigError
from autocomp.precision import DYNAMIC_INT8
from autocomp.yamlio import check_keys, load_yaml

PRECISION_BITS = {"fp32": 32, "fp16": 16, "int8": 8}


@dataclass(frozen=True)
class Int8Recipe:
    """How int8 is applied to the ONNX graph on this device (the recipe decides whether int8 pays)."""

    activation_type: str = "u8"  # "u8" | "s8"
    weight_type: str = "s8"  # "u8" | "s8"
    per_channel: bool = True
    reduce_range: bool = True  # 7-bit weights: avoids u8s8 saturation on x86 without VNNI
    op_types: tuple[str, ...] = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class PrecisionSpec:
    peak_gops: float  # peak throughput at this precision, giga-operations (1 MAC = 2 ops) per second
    accelerated: bool  # does this precision run faster than fp32 on this device's runtime
    source: str  # datasheet reference, or "calibration <date> <backend>"
    runs_as: str | None = None  # when not accelerated: the precision the runtime really computes in


@dataclass(frozen=True)
class RuntimeSettings:
    tool: str = "onnxruntime"  # "onnxruntime" | "trtexec"
    execution_provider: str = "CPUExecutionProvider"
    threads: int = 0  # intra-op threads; 0 lets onnxruntime choose
    threads_auto: bool = False  # the profile said ``threads: auto``: ``threads`` is this machine's CPU count
    batch_size: int = 1
    warmup: int = 20
    runs: int = 100
    calibration_batch_sizes: tuple[int, ...] = (1,)  # batch sizes `autocomp calibrate` measures
    # onnxruntime on x86: MLAS runs aligned fp32 convs in the blocked NCHWc layout with this channel
    # block (8 with AVX2, 16 with AVX-512) and reorders tensors at its borders; 0: no NCHWc (ARM, GPUs)
    nchwc_block: int = 0
    source: str = ""  # why these settings (e.g. "board default: 4 cores")


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str
    port: int = 22
    key: str | None = None  # path to a private key file; never its contents
    python: str = "python3"
    known_hosts: str | None = None  # defaults to ~/.ssh/known_hosts

    @property
    def label(self) -> str:
        """``user@host:port``: how a board is named in results, leases and messages (never its key)."""
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    precisions: Mapping[str, PrecisionSpec]  # keys among "fp32", "fp16", "int8"
    memory_bandwidth_gbps: float
    memory_bandwidth_source: str
    unstructured_sparsity_speedup: bool
    structured_2to4_sparsity: bool
    channel_multiple: int
    runtime: RuntimeSettings = RuntimeSettings()
    int8_recipe: Int8Recipe = Int8Recipe()
    cost_model: Mapping[str, Any] = field(default_factory=dict)  # cost-model coefficients (latency work defines)
    calibration: Mapping[str, Any] | None = None  # date, backend, fit quality; None for datasheet-only
    ssh: SshTarget | None = None  # the board (the first of ``pool`` when there is one)
    pool: tuple[SshTarget, ...] = ()  # ``ssh:`` listed several boards of this kind (``latency.pool``)
    path: Path | None = None  # the file it was loaded from
    sparsity_source: str = ""  # where the sparsity claims come from
    weight_sharing_source: str = ""  # why shared weights (the cluster knob) buy size and not speed here
    channel_multiple_source: str = ""  # why pruning rounds to this multiple
    schema_version: int = 1

    @property
    def is_calibrated(self) -> bool:
        """True when the cost-model coefficients come from a calibration run, not a datasheet."""
        return self.calibration is not None

    def require_bits(self, bits: Iterable[int | str], *, where: str = "search space") -> None:
        """Raise ConfigError if ``bits`` asks for a precision this device cannot run."""
        supported = self.supported_bits
        for value in bits:
            if value not in supported:
                raise ConfigError(
                    f"{where}: bits {value} is not supported by device {self.name!r} "
                    f"(it runs {', '.join(map(str, supported))}); remove {value} from the bits choices"
                )

    def fingerprint(self) -> str:
        """A short hash of everything that changes a latency figure (coefficients and calibration included)."""
        data = asdict(self)
        data.pop("path", None)
        data["runtime"].pop("threads_auto")  # how the count was given does not change a latency
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def supported_bits(self) -> tuple[int | str, ...]:
        """``bits/`` values this device can run, widest first, dynamic int8 (``"dyn8"``) last.

        Dynamic int8 is onnxruntime's (DynamicQuantizeLinear -> MatMulInteger), so it needs int8 and
        onnxruntime; TensorRT builds int8 engines from static scales (QDQ or its own calibration).
        """
        bits: list[int | str] = sorted((PRECISION_BITS[p] for p in self.precisions), reverse=True)
        if "int8" in self.precisions and self.runtime.tool == "onnxruntime":
            bits.append(DYNAMIC_INT8)
        return tuple(bits)

    @property
    def fast_bits(self) -> tuple[int | str, ...]:
        """The reduced precisions this device runs faster than fp32 (its strengths), in ``supported_bits`` order."""
        fast = {PRECISION_BITS[p] for p, spec in self.precisions.items() if spec.accelerated and p != "fp32"}
        if 8 in fast:
            fast.add(DYNAMIC_INT8)
        return tuple(b for b in self.supported_bits if b in fast)


# --------------------------------------------------------------------------- loading

SCHEMA_VERSION = 1
PRECISIONS = tuple(PRECISION_BITS)
PROFILE_DIR_ENV = "AUTOCOMP_PROFILE_DIR"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

_TOP_KEYS = {
    "schema_version": True,
    "name": True,
    "description": True,
    "precisions": True,
    "memory_bandwidth_gbps": True,
    "memory_bandwidth_source": True,
    "unstructured_sparsity_speedup": True,
    "structured_2to4_sparsity": True,
    "sparsity_source": True,
    "weight_sharing_source": False,
    "channel_multiple": True,
    "channel_multiple_source": True,
    "runtime": True,
    "int8_recipe": False,
    "cost_model": True,
    "calibration": False,
    "ssh": False,
}
_PRECISION_KEYS = ("peak_gops", "accelerated", "source", "runs_as")
_RUNTIME_KEYS = (
    "tool", "execution_provider", "threads", "batch_size", "warmup", "runs", "calibration_batch_sizes", "nchwc_block", "source",
)
_RECIPE_KEYS = ("activation_type", "weight_type", "per_channel", "reduce_range", "op_types")
_SSH_KEYS = ("host", "user", "port", "key", "python", "known_hosts")
_CALIBRATION_KEYS = (
    "date", "backend", "base_profile", "samples", "held_out", "fit", "variants", "onnxruntime", "threads", "cpu", "coverage",
    "error_by_class",
)


def builtin_profile_dirs() -> list[Path]:
    """Folders searched for shipped profiles, in order (see the module docstring)."""
    from autocomp.paths import data_dirs

    return data_dirs("device_profiles", env=PROFILE_DIR_ENV)


def calibration_dir() -> Path:
    """Where ``autocomp calibrate`` writes calibrated profiles (they take precedence)."""
    from autocomp.paths import config_dir

    return config_dir() / "calibrations"


def _shipped_files() -> dict[str, Path]:
    from autocomp.paths import yaml_files

    return yaml_files(builtin_profile_dirs())


def _calibrated_files() -> dict[str, Path]:
    folder = calibration_dir()
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def list_profiles() -> list[str]:
    """Names of every known device (shipped or calibrated), sorted."""
    return sorted(set(_shipped_files()) | set(_calibrated_files()))


def profile_path(name: str, *, calibrated: bool = True) -> Path:
    """The file that is in force for ``name`` (a calibration first unless ``calibrated=False``)."""
    if calibrated and name in _calibrated_files():
        return _calibrated_files()[name]
    shipped = _shipped_files()
    if name not in shipped:
        known = ", ".join(list_profiles()) or "none (set AUTOCOMP_PROFILE_DIR to a folder of profiles)"
        raise ConfigError(f"unknown device {name!r}; known devices: {known}")
    return shipped[name]


def load_profile(name_or_path: str | Path, *, calibrated: bool = True) -> DeviceProfile:
    """Load and validate a device profile by name (or from a ``.yaml`` path).

    A calibration in ``config_dir()/calibrations/<name>.yaml`` takes precedence
    over the shipped file unless ``calibrated=False``.
    """
    from autocomp.paths import given_file

    text = str(name_or_path)
    path = given_file(text, what="device profile") or profile_path(text, calibrated=calibrated)
    return parse_profile(load_yaml(path, what="device profile"), path=path)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping (key: value lines), got {value!r}")
    return value


def _str(value: Any, where: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def _number(value: Any, where: str, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{where}: expected a positive number, got {value!r}")
    if not positive and value < 0:
        raise ConfigError(f"{where}: expected a number >= 0, got {value!r}")
    return float(value)


def _int(value: Any, where: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


AUTO_THREADS = "auto"


def _threads(value: Any, where: str) -> int:
    """``runtime.threads``: a count, 0 (onnxruntime chooses), or ``auto`` (every CPU this process may use)."""
    if value == AUTO_THREADS:
        return host.available_cpus()
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: expected an integer >= 0 or 'auto' (the CPUs this machine gives the process), got {value!r}")
    return value


def _choice(value: Any, choices: Iterable[Any], where: str) -> Any:
    choices = tuple(choices)
    if isinstance(value, bool) or value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
    return value


def parse_profile(data: Mapping[str, Any], *, path: Path | None = None) -> DeviceProfile:
    """Validate one profile mapping (as read from YAML) and build the frozen ``DeviceProfile``."""
    where = f"device profile {path}" if path else "device profile"
    check_keys(data, allowed=_TOP_KEYS, where=where, required=[k for k, req in _TOP_KEYS.items() if req])
    version = data["schema_version"]
    if version != SCHEMA_VERSION:
        raise ConfigError(f"{where}: schema_version {version!r} is not supported; this autocomp reads {SCHEMA_VERSION}")
    name = _str(data["name"], f"{where}: name")
    if not _NAME_RE.match(name):
        raise ConfigError(f"{where}: name {name!r} must be lower-case letters, digits, '.', '_' or '-'")

    raw_precisions = _mapping(data["precisions"], f"{where}: precisions")
    precisions: dict[str, PrecisionSpec] = {}
    for precision, spec in raw_precisions.items():
        at = f"{where}: precisions.{precision}"
        if precision not in PRECISIONS:
            raise ConfigError(f"{where}: unknown precision {precision!r}; allowed keys: {', '.join(PRECISIONS)}")
        spec = _mapping(spec, at)
        check_keys(spec, allowed=_PRECISION_KEYS, where=at, required=("peak_gops", "accelerated", "source"))
        runs_as = spec.get("runs_as")
        if runs_as is not None:
            _choice(runs_as, PRECISIONS, f"{at}.runs_as")
        precisions[precision] = PrecisionSpec(
            peak_gops=_number(spec["peak_gops"], f"{at}.peak_gops"),
            accelerated=_bool(spec["accelerated"], f"{at}.accelerated"),
            source=_str(spec["source"], f"{at}.source"),
            runs_as=runs_as,
        )
    if "fp32" not in precisions:
        raise ConfigError(f"{where}: precisions must include fp32 (the reference every speedup is measured against)")
    for precision, spec in precisions.items():
        if spec.runs_as is not None and spec.runs_as not in precisions:
            raise ConfigError(f"{where}: precisions.{precision}.runs_as {spec.runs_as!r} is not a precision of this profile")

    raw_runtime = _mapping(data["runtime"], f"{where}: runtime")
    check_keys(raw_runtime, allowed=_RUNTIME_KEYS, where=f"{where}: runtime")
    default = RuntimeSettings()
    batches = raw_runtime.get("calibration_batch_sizes", list(default.calibration_batch_sizes))
    if not isinstance(batches, list) or not batches:
        raise ConfigError(f"{where}: runtime.calibration_batch_sizes: expected a list of batch sizes, got {batches!r}")
    runtime = RuntimeSettings(
        tool=_choice(raw_runtime.get("tool", default.tool), ("onnxruntime", "trtexec"), f"{where}: runtime.tool"),
        execution_provider=_str(raw_runtime.get("execution_provider", default.execution_provider), f"{where}: runtime.execution_provider"),
        threads=_threads(raw_runtime.get("threads", default.threads), f"{where}: runtime.threads"),
        threads_auto=raw_runtime.get("threads") == AUTO_THREADS,
        batch_size=_int(raw_runtime.get("batch_size", default.batch_size), f"{where}: runtime.batch_size", minimum=1),
        warmup=_int(raw_runtime.get("warmup", default.warmup), f"{where}: runtime.warmup"),
        runs=_int(raw_runtime.get("runs", default.runs), f"{where}: runtime.runs", minimum=1),
        calibration_batch_sizes=tuple(_int(b, f"{where}: runtime.calibration_batch_sizes", minimum=1) for b in batches),
        nchwc_block=_choice(raw_runtime.get("nchwc_block", default.nchwc_block), (0, 8, 16), f"{where}: runtime.nchwc_block"),
        source=_str(raw_runtime.get("source", ""), f"{where}: runtime.source", empty=True),
    )

    recipe = Int8Recipe()
    if data.get("int8_recipe") is not None:
        raw = _mapping(data["int8_recipe"], f"{where}: int8_recipe")
        check_keys(raw, allowed=_RECIPE_KEYS, where=f"{where}: int8_recipe")
        op_types = raw.get("op_types", list(recipe.op_types))
        if not isinstance(op_types, list) or not all(isinstance(o, str) for o in op_types):
            raise ConfigError(f"{where}: int8_recipe.op_types: expected a list of ONNX op types, got {op_types!r}")
        recipe = Int8Recipe(
            activation_type=_choice(raw.get("activation_type", recipe.activation_type), ("u8", "s8"), f"{where}: int8_recipe.activation_type"),
            weight_type=_choice(raw.get("weight_type", recipe.weight_type), ("u8", "s8"), f"{where}: int8_recipe.weight_type"),
            per_channel=_bool(raw.get("per_channel", recipe.per_channel), f"{where}: int8_recipe.per_channel"),
            reduce_range=_bool(raw.get("reduce_range", recipe.reduce_range), f"{where}: int8_recipe.reduce_range"),
            op_types=tuple(op_types),
        )

    # ``ssh:`` one board, or a list of boards of this kind: a pool, each measurement on a free one
    raw_ssh = data.get("ssh")
    ssh, pool = None, ()
    if isinstance(raw_ssh, list):
        if not raw_ssh:
            raise ConfigError(f"{where}: ssh: an empty list; give one board (a mapping) or a list of boards")
        pool = tuple(_ssh_target(b, f"{where}: ssh[{i}]") for i, b in enumerate(raw_ssh))
        labels = [b.label for b in pool]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ConfigError(f"{where}: ssh: a board is listed twice ({', '.join(twice)})")
        ssh = pool[0]
    elif raw_ssh is not None:
        ssh = _ssh_target(raw_ssh, f"{where}: ssh")

    calibration = None
    if data.get("calibration") is not None:
        raw = _mapping(data["calibration"], f"{where}: calibration")
        check_keys(raw, allowed=_CALIBRATION_KEYS, where=f"{where}: calibration", required=("date", "backend"))
        calibration = dict(raw)
        if "threads" in raw:
            _int(raw["threads"], f"{where}: calibration.threads")

    cost_model = validate_cost_model(_mapping(data["cost_model"], f"{where}: cost_model"), where=f"{where}: cost_model")

    return DeviceProfile(
        name=name,
        description=_str(data["description"], f"{where}: description"),
        precisions=precisions,
        memory_bandwidth_gbps=_number(data["memory_bandwidth_gbps"], f"{where}: memory_bandwidth_gbps"),
        memory_bandwidth_source=_str(data["memory_bandwidth_source"], f"{where}: memory_bandwidth_source"),
        unstructured_sparsity_speedup=_bool(data["unstructured_sparsity_speedup"], f"{where}: unstructured_sparsity_speedup"),
        structured_2to4_sparsity=_bool(data["structured_2to4_sparsity"], f"{where}: structured_2to4_sparsity"),
        channel_multiple=_int(data["channel_multiple"], f"{where}: channel_multiple", minimum=1),
        runtime=runtime,
        int8_recipe=recipe,
        cost_model=cost_model,
        calibration=calibration,
        ssh=ssh,
        pool=pool,
        path=path,
        sparsity_source=_str(data["sparsity_source"], f"{where}: sparsity_source"),
        weight_sharing_source=_str(data.get("weight_sharing_source", ""), f"{where}: weight_sharing_source", empty=True),
        channel_multiple_source=_str(data["channel_multiple_source"], f"{where}: channel_multiple_source"),
        schema_version=version,
    )


def profile_to_dict(profile: DeviceProfile, *, as_run: bool = False) -> dict[str, Any]:
    """The YAML mapping of a profile (inverse of ``parse_profile``); used to write calibrations.

    ``as_run``: the thread count this process resolved ``threads: auto`` to, with ``threads_auto: true``
    (what a study records: its latencies were timed with that count, whatever machine reads it later).
    """
    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "name": profile.name,
        "description": profile.description,
        "precisions": {
            p: {k: v for k, v in asdict(s).items() if v is not None} for p, s in profile.precisions.items()
        },
        "memory_bandwidth_gbps": profile.memory_bandwidth_gbps,
        "memory_bandwidth_source": profile.memory_bandwidth_source,
        "unstructured_sparsity_speedup": profile.unstructured_sparsity_speedup,
        "structured_2to4_sparsity": profile.structured_2to4_sparsity,
        "sparsity_source": profile.sparsity_source,
        "weight_sharing_source": profile.weight_sharing_source,
        "channel_multiple": profile.channel_multiple,
        "channel_multiple_source": profile.channel_multiple_source,
        "runtime": _runtime_to_dict(profile.runtime, as_run=as_run),
        "int8_recipe": {**asdict(profile.int8_recipe), "op_types": list(profile.int8_recipe.op_types)},
        "cost_model": json.loads(json.dumps(dict(profile.cost_model))),
    }
    if profile.calibration is not None:
        data["calibration"] = json.loads(json.dumps(dict(profile.calibration), default=str))
    if profile.pool:
        data["ssh"] = [_target_dict(b) for b in profile.pool]
    elif profile.ssh is not None:
        data["ssh"] = _target_dict(profile.ssh)
    return data


def _target_dict(target: SshTarget) -> dict[str, Any]:
    return {k: v for k, v in asdict(target).items() if v is not None}


def _ssh_target(value: Any, where: str) -> SshTarget:
    raw = _mapping(value, where)
    check_keys(raw, allowed=_SSH_KEYS, where=where, required=("host", "user"))
    return SshTarget(
        host=_str(raw["host"], f"{where}.host"),
        user=_str(raw["user"], f"{where}.user"),
        port=_port(raw.get("port", 22), f"{where}.port"),
        key=_str(raw["key"], f"{where}.key") if raw.get("key") is not None else None,
        python=_str(raw.get("python", "python3"), f"{where}.python"),
        known_hosts=_str(raw["known_hosts"], f"{where}.known_hosts") if raw.get("known_hosts") is not None else None,
    )


def _runtime_to_dict(runtime: RuntimeSettings, *, as_run: bool) -> dict[str, Any]:
    data = {**asdict(runtime), "calibration_batch_sizes": list(runtime.calibration_batch_sizes)}
    if not as_run and data.pop("threads_auto"):
        data["threads"] = AUTO_THREADS  # a calibration written here still follows the machine it runs on
    return data


def with_overrides(profile: DeviceProfile, **runtime: Any) -> DeviceProfile:
    """A copy of ``profile`` with some runtime settings replaced (e.g. ``batch_size=8``)."""
    if "threads" in runtime:
        runtime.setdefault("threads_auto", False)
    return replace(profile, runtime=replace(profile.runtime, **runtime))


def with_threads(profile: DeviceProfile, threads: int | None) -> DeviceProfile:
    """``profile`` timed and deployed with ``threads`` intra-op threads (``--threads``); None keeps the profile's."""
    return profile if threads is None else with_overrides(profile, threads=threads)


def threads_text(runtime: RuntimeSettings | Mapping[str, Any]) -> str:
    """How a profile's thread setting reads to a user ("2 intra-op threads (auto: this machine's CPUs)").

    ``runtime``: the settings, or their record in a study (``profile_to_dict(..., as_run=True)``).
    """
    fields = asdict(runtime) if isinstance(runtime, RuntimeSettings) else runtime
    threads = fields.get("threads")
    if not threads:
        return "intra-op threads chosen by onnxruntime"
    text = f"{threads} intra-op thread{'s' if threads != 1 else ''}"
    return text + (" (auto: the CPUs this machine gives the process)" if fields.get("threads_auto") else "")


def runtime_text(runtime: RuntimeSettings | Mapping[str, Any]) -> str:
    """The setting a profile is timed and deployed with, as one phrase (TensorRT has no intra-op threads)."""
    fields = asdict(runtime) if isinstance(runtime, RuntimeSettings) else runtime
    tool, batch = fields.get("tool", "onnxruntime"), fields.get("batch_size", 1)
    if tool == "trtexec":
        return f"trtexec (TensorRT), batch {batch}"
    return f"{tool} {fields.get('execution_provider', '')}, {threads_text(fields)}, batch {batch}"


def calibration_mismatch(profile: DeviceProfile) -> str | None:
    """Why this profile's cost model may not hold for its runtime settings, or None when it does.

    A cost model is fitted at one thread count: a profile run with another (``--threads``, or
    ``threads: auto`` on a machine with other CPUs) is priced outside its calibration. A profile of
    this machine (``local``, timed here) is also priced outside it on another kind of CPU.
    """
    calibration = profile.calibration or {}
    fitted = calibration.get("threads")
    fix = f"run `autocomp calibrate --device {profile.name}` here, or time with --backend local"
    if isinstance(fitted, int) and not isinstance(fitted, bool) and fitted != profile.runtime.threads:
        return (
            f"{profile.name}'s cost model was calibrated at {fitted} intra-op thread{'s' if fitted != 1 else ''} and this run "
            f"uses {profile.runtime.threads}: estimates are outside the calibrated range; run `autocomp calibrate --device "
            f"{profile.name} --threads {profile.runtime.threads}`, or time with --backend local"
        )
    cpu, here = calibration.get("cpu"), host.host_cpu()
    if profile.name == "local" and isinstance(cpu, str) and cpu != here:
        return f"{profile.name}'s cost model was calibrated on {cpu}, and this machine is {here}: estimates are outside the calibrated range; {fix}"
    return None


# --------------------------------------------------------------------------- boards

_BOARD_RE = re.compile(r"^(?P<user>[A-Za-z0-9._-]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[^:]*))?$")


def _port(value: Any, where: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: port {value!r} is not a number; use e.g. 22") from None
    if isinstance(value, bool) or not 1 <= port <= 65535:
        raise ConfigError(f"{where}: port {value!r} is outside 1-65535")
    return port


def parse_board(text: str, *, key: str | None = None, python: str = "python3") -> SshTarget:
    """Parse ``user@host[:port]`` (IPv6 as ``user@[::1]:2222``) into an ``SshTarget``."""
    match = _BOARD_RE.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f"board {text!r} is not user@host[:port]; e.g. pi@raspberrypi.local or jetson@10.0.0.5:2222")
    port = 22 if match.group("port") is None else _port(match.group("port"), f"board {text!r} (user@host[:port])")
    host = match.group("host").strip("[]")
    return SshTarget(host=host, user=match.group("user"), port=port, key=key, python=python)
