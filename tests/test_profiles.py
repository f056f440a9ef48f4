"""Device profiles: shipped files load, validation names file/key/value, lookup order, boards."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from autocomp.errors import ConfigError
from autocomp.profiles import (
    DeviceProfile,
    SshTarget,
    list_profiles,
    load_profile,
    parse_board,
    profile_to_dict,
)

REQUIRED = {"jetson-nano", "jetson-orin-nano", "raspberry-pi-4", "raspberry-pi-5", "local"}


def test_shipped_profiles_load_and_state_sources():
    assert REQUIRED <= set(list_profiles())
    for name in REQUIRED:
        profile = load_profile(name)
        assert isinstance(profile, DeviceProfile) and profile.name == name
        assert profile.path is not None and profile.path.name == f"{name}.yaml"
        assert set(profile.precisions) == {"fp32", "fp16", "int8"}
        assert all(spec.source.strip() for spec in profile.precisions.values())
        assert profile.memory_bandwidth_source and profile.sparsity_source and profile.channel_multiple_source
        assert profile.cost_model["source"]
        assert not profile.unstructured_sparsity_speedup  # normally no, on every shipped device


def test_hardware_facts_in_profiles():
    nano, orin, pi4 = load_profile("jetson-nano"), load_profile("jetson-orin-nano"), load_profile("raspberry-pi-4")
    assert not nano.precisions["int8"].accelerated and nano.precisions["int8"].runs_as == "fp16"
    assert orin.precisions["int8"].accelerated and orin.structured_2to4_sparsity
    assert not pi4.precisions["fp16"].accelerated and pi4.precisions["int8"].accelerated


def _write(folder: Path, name: str, **changes) -> Path:
    data = profile_to_dict(load_profile("raspberry-pi-4"))
    data["name"] = name
    data.update(changes)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_key_names_file_key_and_allowed(tmp_path):
    path = _write(tmp_path, "pi-typo", memory_bandwith_gbps=3.0)
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    message = str(err.value)
    assert str(path) in message and "'memory_bandwith_gbps'" in message and "memory_bandwidth_gbps" in message


def test_bad_value_is_named(tmp_path):
    with pytest.raises(ConfigError, match="-4"):
        load_profile(_write(tmp_path, "pi-bad", memory_bandwidth_gbps=-4))
    data = profile_to_dict(load_profile("raspberry-pi-4"))
    data["precisions"]["fp16"]["accelerated"] = "maybe"
    path = tmp_path / "pi-bad2.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="precisions.fp16.accelerated.*'maybe'"):
        load_profile(path)
    data = profile_to_dict(load_profile("local", calibrated=False))
    assert data["runtime"]["nchwc_block"] in (8, 16)  # the shipped profile: an x86 CPU with AVX2 or AVX-512
    data["runtime"]["nchwc_block"] = 12
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="runtime.nchwc_block: 12 is not one of 0, 8, 16"):
        load_profile(path)


def test_unknown_precision_and_schema_version(tmp_path):
    data = profile_to_dict(load_profile("raspberry-pi-4"))
    data["precisions"]["int4"] = data["precisions"]["int8"]
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="unknown precision 'int4'"):
        load_profile(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="schema_version 9"):
        load_profile(_write(tmp_path, "pi-v9", schema_version=9))


def test_unknown_device_lists_known_ones():
    with pytest.raises(ConfigError) as err:
        load_profile("jetson-nanoo")
    assert "jetson-nano" in str(err.value) and "raspberry-pi-4" in str(err.value)


def test_profile_dir_env_and_calibration_precedence(tmp_path, monkeypatch):
    extra = tmp_path / "extra"
    extra.mkdir()
    _write(extra, "my-board")
    monkeypatch.setenv("AUTOCOMP_PROFILE_DIR", str(extra))
    assert "my-board" in list_profiles()
    assert load_profile("my-board").path == extra / "my-board.yaml"

    from autocomp.profiles import calibration_dir

    calibration_dir().mkdir(parents=True, exist_ok=True)
    _write(calibration_dir(), "my-board", description="calibrated copy",
           calibration={"date": "2026-11-23", "backend": "local"})
    assert load_profile("my-board").description == "calibrated copy"
    assert load_profile("my-board").is_calibrated
    assert not load_profile("my-board", calibrated=False).is_calibrated


def test_precision_the_device_cannot_run_is_rejected(tmp_path):
    data = profile_to_dict(load_profile("raspberry-pi-4"))
    del data["precisions"]["fp16"]
    (tmp_path / "no16.yaml").write_text(yaml.safe_dump(data))
    profile = load_profile(tmp_path / "no16.yaml")
    assert profile.supported_bits == (32, 8, "dyn8")
    profile.require_bits([32, 8, "dyn8"])
    with pytest.raises(ConfigError, match="bits 16 is not supported"):
        profile.require_bits([32, 16, 8])


def test_dynamic_int8_needs_onnxruntime_and_int8():
    """dyn8 is onnxruntime's DynamicQuantizeLinear -> MatMulInteger: a TensorRT board never gets it."""
    assert "dyn8" in load_profile("raspberry-pi-4").supported_bits
    assert "dyn8" not in load_profile("jetson-nano").supported_bits  # trtexec
    assert load_profile("jetson-nano").supported_bits == (32, 16, 8)


def test_fingerprint_changes_with_coefficients():
    pi4 = load_profile("raspberry-pi-4")
    from dataclasses import replace

    other = replace(pi4, cost_model={**pi4.cost_model, "node_overhead_us": 99.0})
    assert pi4.fingerprint() == load_profile("raspberry-pi-4").fingerprint()
    assert pi4.fingerprint() != other.fingerprint()


@pytest.mark.parametrize(
    "text,expected",
    [
        ("pi@raspberrypi.local", SshTarget(host="raspberrypi.local", user="pi")),
        ("jetson@10.0.0.5:2222", SshTarget(host="10.0.0.5", user="jetson", port=2222)),
        ("me@[::1]:22", SshTarget(host="::1", user="me", port=22)),
    ],
)
def test_parse_board(text, expected):
    assert parse_board(text) == expected


@pytest.mark.parametrize("text", ["raspberrypi.local", "pi@", "pi@host:port", "pi@host:70000", "a b@host", ""])
def test_parse_board_rejects(text):
    with pytest.raises(ConfigError, match="user@host"):
        parse_board(text)


def test_threads_auto_is_every_cpu_this_process_may_use_and_is_written_back_as_auto(tmp_path, monkeypatch):
    import autocomp.profiles as profiles

    import autocomp.host

    monkeypatch.setattr(autocomp.host, "available_cpus", lambda: 3)
    local = load_profile("local", calibrated=False)
    assert (local.runtime.threads, local.runtime.threads_auto) == (3, True)
    assert profile_to_dict(local)["runtime"]["threads"] == "auto"  # a calibration file follows the machine that reads it
    assert profile_to_dict(local, as_run=True)["runtime"]["threads"] == 3  # a study records what it was timed with
    assert profiles.threads_text(local.runtime) == "3 intra-op threads (auto: the CPUs this machine gives the process)"
    pinned = profiles.with_threads(local, 1)
    assert (pinned.runtime.threads, pinned.runtime.threads_auto) == (1, False)
    assert pinned.fingerprint() != local.fingerprint()  # cached latencies at another thread count are not reused
    data = profile_to_dict(local)
    data["runtime"]["threads"] = "many"
    path = tmp_path / "bad-threads.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="runtime.threads: expected an integer >= 0 or 'auto'.*'many'"):
        load_profile(path)


def test_a_cost_model_used_at_another_thread_count_than_it_was_fitted_at_says_so():
    from autocomp.profiles import calibration_mismatch, with_threads

    local = load_profile("local")
    fitted = local.calibration["threads"]
    assert calibration_mismatch(with_threads(local, fitted)) is None
    other = calibration_mismatch(with_threads(local, fitted + 1))
    assert other and f"calibrated at {fitted}" in other and f"--threads {fitted + 1}" in other and "--backend local" in other
    assert calibration_mismatch(load_profile("jetson-nano")) is None  # datasheet numbers: no thread count to compare


def test_a_local_cost_model_fitted_on_another_kind_of_cpu_says_so(monkeypatch):
    import dataclasses

    import autocomp.host
    from autocomp.profiles import calibration_mismatch

    local = load_profile("local")
    fitted = dataclasses.replace(local, calibration={**local.calibration, "cpu": "AMD EPYC 7B13 (x86_64: avx2)"})
    monkeypatch.setattr(autocomp.host, "host_cpu", lambda: "AMD EPYC 7B13 (x86_64: avx2)")
    assert calibration_mismatch(fitted) is None
    monkeypatch.setattr(autocomp.host, "host_cpu", lambda: "Intel Xeon (x86_64: avx512f)")
    message = calibration_mismatch(fitted)
    assert "calibrated on AMD EPYC 7B13 (x86_64: avx2), and this machine is Intel Xeon (x86_64: avx512f)" in message
    assert "autocomp calibrate --device local" in message


def test_ssh_may_list_a_pool_of_boards_and_round_trips():
    from autocomp.cli.board_cmd import with_board
    from autocomp.profiles import parse_profile

    data = profile_to_dict(load_profile("jetson-nano"))
    data["ssh"] = [{"host": "nano-1.local", "user": "me"}, {"host": "nano-2.local", "user": "me", "port": 2222}]
    pool = parse_profile(data)
    assert [(b.host, b.port) for b in pool.pool] == [("nano-1.local", 22), ("nano-2.local", 2222)]
    assert pool.ssh == pool.pool[0]  # what one-board commands (board check) reach
    assert parse_profile(profile_to_dict(pool)) == pool
    # --key/--python reach every board; --board means that one board and no pool
    keyed = with_board(pool, board=None, key=Path("/k"), known_hosts=None, python="python3.8")
    assert {(b.key, b.python) for b in keyed.pool} == {("/k", "python3.8")}
    one = with_board(pool, board="me@other.local", key=None, known_hosts=None, python=None)
    assert one.pool == () and one.ssh.host == "other.local"


@pytest.mark.parametrize("boards, message", [
    ([], "ssh: an empty list"),
    ([{"host": "a", "user": "me"}, {"host": "a", "user": "me", "port": 22}], "a board is listed twice (me@a:22)"),
    ([{"host": "a"}], "ssh[0]"),
])
def test_a_bad_pool_is_named(boards, message):
    from autocomp.profiles import parse_profile

    data = profile_to_dict(load_profile("jetson-nano"))
    data["ssh"] = boards
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_profile(data)
