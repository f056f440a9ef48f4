"""The local backend (a child process), the result cache, and the measure / profiles CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from autocomp.cli import app
from autocomp.errors import LatencyError
from autocomp.latency import get_backend
from autocomp.latency.cache import CachedBackend
from autocomp.latency.local import LocalBackend
from autocomp.profiles import load_profile

from onnx_variants import encoder, resnet_precisions


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("local")
    return {**resnet_precisions(folder, width=2.0), "encoder": encoder(folder)}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMP_CACHE_DIR", str(tmp_path / "cache"))


def _quick(profile, **runtime):
    return replace(profile, runtime=replace(profile.runtime, warmup=3, runs=15, **runtime))


def test_local_backend_times_in_a_subprocess(files):
    profile = _quick(load_profile("local"))
    result = LocalBackend(timed_s=0.0).measure(files["fp32"], profile)
    assert result.source == "local" and result.runs == 15  # the profile's run count, no timing window
    assert 0.001 < result.median_ms <= result.p90_ms < 1000


def test_local_backend_two_inputs_and_batch(files):
    profile = _quick(load_profile("local"), batch_size=4)
    backend = LocalBackend(shapes={"ids": (4, 20), "mask": (4, 20)})
    assert "--shape" in backend.command(files["encoder"], profile)
    assert backend.measure(files["encoder"], profile).median_ms > 0
    assert LocalBackend().command(files["fp32"], profile)[-1] == "x=4x1x16x16"


def test_measure_set_times_files_interleaved_and_keeps_their_order(tmp_path, files):
    """Calibration times its whole set in one process; each result must belong to its own file and batch."""
    import onnx
    from onnx import TensorProto, helper

    def relu(name: str, channels: int, size: int):
        shape = ["batch", channels, size, size]
        x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "y"))
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / name)
        return tmp_path / name

    tiny, big = relu("tiny.onnx", 8, 4), relu("big.onnx", 128, 128)
    profile = load_profile("local", calibrated=False)
    at_4 = replace(profile, runtime=replace(profile.runtime, batch_size=4))
    rounds = []
    # the big file at batch 4 touches 65536 times the values of the tiny one at batch 1 (at 8192 times, an AMD
    # EPYC host's memory bandwidth left it only 9.2x slower than the tiny file's fixed cost of a run)
    items = [(tiny, profile), (big, at_4), (tiny, at_4)]
    results = LocalBackend(rounds=3).measure_set(items, progress=lambda done, total: rounds.append((done, total)))
    assert rounds == [(1, 3), (2, 3), (3, 3)]
    assert [r.source for r in results] == ["local"] * 3 and all(r.runs >= 3 * 5 for r in results)
    assert results[1].median_ms > 10 * max(results[0].median_ms, results[2].median_ms)
    assert all(0 < r.median_ms <= r.p90_ms for r in results)


def test_measure_set_errors_name_the_file(tmp_path, files):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx file")
    profile = load_profile("local", calibrated=False)
    with pytest.raises(LatencyError) as err:
        LocalBackend(rounds=1).measure_set([(files["fp32"], profile), (bad, profile)])
    assert "broken.onnx" in str(err.value) and "\n" not in str(err.value)
    two_threads = replace(profile, runtime=replace(profile.runtime, threads=profile.runtime.threads + 1))
    with pytest.raises(LatencyError, match="one thread count"):
        LocalBackend(rounds=1).measure_set([(files["fp32"], profile), (files["fp32"], two_threads)])


def test_a_timing_past_its_limit_is_stopped_with_one_line(files):
    """A file that takes too long: the child process is killed and the error names the file and the fix."""
    profile = load_profile("local")
    endless = replace(profile, runtime=replace(profile.runtime, warmup=3, runs=10_000_000))
    with pytest.raises(LatencyError) as err:
        LocalBackend(timeout_s=1.0, timed_s=0.0).measure(files["fp32"], endless)
    assert "resnet-fp32.onnx took longer than 1 s" in str(err.value) and "runtime.runs" in str(err.value)


def test_local_backend_errors_are_one_line(tmp_path, files):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(LatencyError) as err:
        LocalBackend().measure(bad, _quick(load_profile("local")))
    assert "broken.onnx" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(LatencyError, match="trtexec"):
        LocalBackend().measure(files["fp32"], load_profile("jetson-nano"))


class _Counting:
    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def measure(self, onnx_path, profile):
        from autocomp.latency.base import LatencyResult

        self.calls += 1
        return LatencyResult(median_ms=1.0 + self.calls, p90_ms=2.0, runs=5, source="counting")


def test_cache_hits_same_bytes_and_misses_other_profile(files, tmp_path):
    inner = _Counting()
    cached = CachedBackend(inner)
    pi4, pi5 = load_profile("raspberry-pi-4"), load_profile("raspberry-pi-5")
    first = cached.measure(files["fp32"], pi4)
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(files["fp32"].read_bytes())
    assert cached.measure(copy, pi4) == first and inner.calls == 1  # same bytes, other path: hit
    assert cached.measure(files["fp32"], pi5) != first and inner.calls == 2  # other profile: miss
    assert cached.measure(files["fp16"], pi4) != first and inner.calls == 3  # other bytes: miss
    recalibrated = replace(pi4, calibration={"date": "2026-11-23", "backend": "local"})
    cached.measure(files["fp32"], recalibrated)
    assert inner.calls == 4 and cached.hits == 1
    assert CachedBackend(_Counting()).measure(files["fp32"], pi4) == first  # persisted on disk


def test_get_backend_factory():
    profile = load_profile("local")
    assert isinstance(get_backend("local", profile=profile), CachedBackend)
    assert isinstance(get_backend("local", profile=profile, cache=False), LocalBackend)
    from autocomp.errors import ConfigError

    with pytest.raises(ConfigError, match="estimate, local, ssh"):
        get_backend("tpu", profile=profile)
    with pytest.raises(ConfigError, match="needs a board"):
        get_backend("ssh", profile=profile)


runner = CliRunner()


def test_measure_cli_json_estimate_and_local(files):
    out = runner.invoke(app, ["measure", str(files["int8"]), "--device", "raspberry-pi-4", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["median_ms"] > 0 and data["source"] == "estimate:raspberry-pi-4" and data["unpriced_ops"] == {}
    out = runner.invoke(app, ["measure", str(files["encoder"]), "-d", "local", "-b", "local", "--runs", "10",
                              "--shape", "ids=1x8", "--shape", "mask=1x8", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert {"median_ms", "p90_ms", "runs", "source"} <= set(data) and data["runs"] >= 10 and data["source"] == "local"


def test_measure_times_with_the_thread_count_asked_for_and_says_when_the_estimate_was_fitted_at_another(files):
    fitted = load_profile("local").calibration["threads"]
    out = runner.invoke(app, ["measure", str(files["fp32"]), "-d", "local", "-b", "local", "--runs", "5", "--threads", "1", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["threads"] == 1
    out = runner.invoke(app, ["measure", str(files["fp32"]), "-d", "local", "--threads", str(fitted + 1)])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert f"{fitted + 1} intra-op threads" in text and f"calibrated at {fitted} intra-op thread" in text


def test_measure_cli_errors_name_the_problem(files):
    from autocomp.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["measure", str(files["fp32"]), "--device", "no-such-board"])
    assert exit_info.value.code == 2
    out = runner.invoke(app, ["measure", str(files["fp32"]), "-d", "local", "--shape", "x=1xq"])
    assert "NAME=DxDxD" in str(out.exception)


def test_profiles_list_and_show():
    out = runner.invoke(app, ["profiles", "list", "--json"])
    assert out.exit_code == 0, out.output
    names = {row["name"] for row in json.loads(out.output)}
    assert {"jetson-nano", "jetson-orin-nano", "raspberry-pi-4", "raspberry-pi-5", "local"} <= names
    out = runner.invoke(app, ["profiles", "show", "jetson-nano"])
    assert out.exit_code == 0 and "shipped profile" in out.output and "runs as fp16" in out.output
