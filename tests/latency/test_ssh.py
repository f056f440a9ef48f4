"""The SSH latency backend against a real OpenSSH server on loopback (this machine is the board).

The ``sshd`` fixture (tests/sshd.py) gives the sessions a TMPDIR whose name has spaces and shell
metacharacters, so every test here also exercises the quoting of remote paths.
"""

from __future__ import annotations

import ast
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from autocomp.errors import ConfigError, DeviceError, LatencyError
from autocomp.latency import ssh as ssh_mod
from autocomp.latency.ssh import SshBackend, check_board, fingerprint
from autocomp.profiles import DeviceProfile, PrecisionSpec, RuntimeSettings
from sshd import find_processes, process_ancestors

BENCH = Path(ssh_mod.__file__).with_name("bench_onnx.py")
DATA = Path(__file__).resolve().parents[1] / "data"


def make_profile(target, **runtime) -> DeviceProfile:
    precisions = {"fp32": PrecisionSpec(10.0, True, "test"), "fp16": PrecisionSpec(20.0, True, "test")}
    return DeviceProfile(
        name="loopback",
        description="this machine over ssh",
        precisions=precisions,
        memory_bandwidth_gbps=10.0,
        memory_bandwidth_source="test",
        unstructured_sparsity_speedup=False,
        structured_2to4_sparsity=False,
        channel_multiple=1,
        runtime=RuntimeSettings(**{"warmup": 5, "runs": 50, "threads": 1, **runtime}),
        ssh=target,
    )


@pytest.fixture
def board(sshd):
    """The server, checked after the test for per-run directories and stray benchmark processes."""
    yield sshd
    deadline = time.monotonic() + 10
    while find_processes(str(sshd.board_tmp)) and time.monotonic() < deadline:
        time.sleep(0.05)  # a killed session's runner needs a moment to notice and clean up
    assert find_processes(str(sshd.board_tmp)) == [], "a benchmark outlived its session"
    assert sshd.leftovers() == [], "a per-run directory was left on the board"


def local_bench(model: Path, runtime: RuntimeSettings) -> dict:
    args = [sys.executable, str(BENCH), str(model), "--warmup", str(runtime.warmup), "--runs", str(runtime.runs)]
    args += ["--threads", str(runtime.threads), "--provider", runtime.execution_provider]
    return json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)


# ---------------------------------------------------------------------------------------- timing


def test_measurement_agrees_with_local_bench(board, tiny_onnx):
    """Same script, interpreter, CPU and settings as the local subprocess: only noise may differ.

    This box has 2 cores shared with other jobs, so single medians can be inflated by load. Each
    side is measured twice, interleaved so both see the same load, and the minimum of the
    medians is compared (the least-disturbed run of each). A factor of 2 still catches real
    mistakes (wrong model, thread count or statistic, or averaging that hides the p90) while
    tolerating a shared machine.
    """
    profile = make_profile(board.target(), warmup=20, runs=200)
    backend = SshBackend()
    local, remote = [], []
    for _ in range(2):
        local.append(local_bench(tiny_onnx, profile.runtime))
        remote.append(backend.measure(tiny_onnx, profile))
    result = remote[0]
    assert result.source == f"ssh:root@127.0.0.1:{board.port}"
    assert result.runs == 200
    assert 0 < result.median_ms <= result.p90_ms
    local_median = min(r["median_ms"] for r in local)
    remote_median = min(r.median_ms for r in remote)
    assert 0.5 < remote_median / local_median < 2.0, (local, remote)
    local_p90 = min(r["p90_ms"] for r in local)
    remote_p90 = min(r.p90_ms for r in remote)
    assert 0.33 < remote_p90 / local_p90 < 3.0, (local, remote)  # a tail statistic: noisier


def test_no_key_material_in_logs(board, tiny_onnx, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="paramiko")  # paramiko's own debug logging included
    run = SshBackend().run(tiny_onnx, make_profile(board.target(), runs=20))
    assert run.attempts == 1
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert any(r.name.startswith("paramiko") for r in caplog.records)  # the capture did see paramiko
    assert any(r.name == "autocomp.latency.ssh" for r in caplog.records)
    private = board.client_key.read_text()
    body = [line for line in private.splitlines() if line and "PRIVATE KEY" not in line]
    assert "PRIVATE KEY" not in text
    for line in body:
        assert line not in text
    host_private = [line for line in board.host_key.read_text().splitlines() if "PRIVATE KEY" not in line]
    for line in host_private:
        assert line not in text


def test_file_name_with_shell_metacharacters(board, tiny_onnx, tmp_path):
    marker = f"PWNED-{os.getpid()}"  # created in the remote or local working directory if anything ran
    model = tmp_path / f"m o$(touch {marker});`touch {marker}` 'x\" *&|<>.onnx"
    model.write_bytes(tiny_onnx.read_bytes())
    result = SshBackend().measure(model, make_profile(board.target(), runs=20))
    assert result.runs == 20
    for where in (Path.home(), Path.cwd(), tmp_path, board.board_tmp, Path("/")):
        assert not (where / marker).exists(), where


def test_two_measurements_at_once_are_serialized(board, tiny_onnx):
    profile = make_profile(board.target(), runs=500)
    runs: list = [None, None]
    errors: list = []

    def measure(i):
        try:
            runs[i] = SshBackend().run(tiny_onnx, profile)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=measure, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    a, b = sorted(runs, key=lambda r: r.started)
    assert a.ended <= b.started, f"timed intervals overlap: {a.started}-{a.ended} and {b.started}-{b.ended}"


def test_board_lock_held_elsewhere_delays_the_timing(board, tiny_onnx):
    """Any holder of the board lock (here: this process, as another client would be) is waited for."""
    lock = os.open(board.board_tmp / ssh_mod.LOCK_NAME, os.O_RDONLY | os.O_CREAT, 0o666)
    released: list[float] = []

    def release_once_the_runner_waits():
        deadline = time.monotonic() + 60
        while not _runner_pids(board) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.0)
        released.append(time.time())
        fcntl.flock(lock, fcntl.LOCK_UN)

    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        releaser = threading.Thread(target=release_once_the_runner_waits, daemon=True)
        releaser.start()
        run = SshBackend().run(tiny_onnx, make_profile(board.target(), runs=20))
        releaser.join(5)
    finally:
        os.close(lock)
    assert run.started >= released[0]
    assert run.lock_wait_s > 0.3


def test_busy_board_gives_up_after_lock_timeout(board, tiny_onnx):
    lock = os.open(board.board_tmp / ssh_mod.LOCK_NAME, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(DeviceError, match="board busy"):
            SshBackend(lock_timeout_s=0.5).measure(tiny_onnx, make_profile(board.target()))
    finally:
        os.close(lock)


# ---------------------------------------------------------------------------------------- trust


def test_unknown_host_key_is_refused_with_how_to_trust(board, tiny_onnx, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    target = board.target(known_hosts=str(empty))
    with pytest.raises(DeviceError) as info:
        SshBackend().measure(tiny_onnx, make_profile(target))
    message = str(info.value)
    expected = subprocess.run(
        ["ssh-keygen", "-lf", str(board.host_key.with_suffix(".pub"))], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert expected in message  # the fingerprint to compare, as ssh-keygen prints it
    assert f"ssh-keyscan -p {board.port} 127.0.0.1 >> {empty}" in message
    assert "\n" not in message
    assert empty.read_text() == ""  # nothing was trusted on the user's behalf


def test_changed_host_key_is_refused(board, tiny_onnx, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{board.port} {(tmp_path / 'other.pub').read_text()}")
    with pytest.raises(DeviceError, match="CHANGED") as info:
        check_board(board.target(known_hosts=str(known)))
    assert f"ssh-keygen -R '[127.0.0.1]:{board.port}'" in str(info.value)


def test_wrong_key_is_an_authentication_error(board, tiny_onnx, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    with pytest.raises(DeviceError, match="key authentication .* failed"):
        SshBackend(retries=0).measure(tiny_onnx, make_profile(board.target(key=str(tmp_path / "stranger"))))


# ---------------------------------------------------------------------------------------- failures


@pytest.fixture(scope="module")
def python_without_onnxruntime(tmp_path_factory) -> str:
    """A real interpreter that cannot import onnxruntime: a venv without system site packages."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    probe = subprocess.run([python, "-c", "import onnxruntime"], capture_output=True)
    assert probe.returncode != 0
    return python


def test_board_without_onnxruntime(board, tiny_onnx, python_without_onnxruntime):
    target = board.target(python=python_without_onnxruntime)
    with pytest.raises(DeviceError, match="No module named") as info:
        SshBackend().measure(tiny_onnx, make_profile(target))
    assert "install onnxruntime" in str(info.value)
    report = check_board(target)
    assert report.onnxruntime_version is None
    assert any(p.startswith("onnxruntime is missing") for p in report.problems)


def test_board_without_that_python(board, tiny_onnx):
    with pytest.raises(DeviceError, match="not found on root@127.0.0.1"):
        SshBackend().measure(tiny_onnx, make_profile(board.target(python="/opt/no such/python3")))


def test_a_file_that_is_not_onnx_fails_cleanly_before_anything_is_sent(board, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(LatencyError, match="junk.onnx is not an ONNX model .* it may be truncated"):
        SshBackend().measure(junk, make_profile(board.target()))


def test_run_timeout_kills_the_benchmark(board, tiny_onnx):
    with pytest.raises(LatencyError, match="run timeout"):
        SshBackend(run_timeout_s=1.5).measure(tiny_onnx, make_profile(board.target(), runs=10_000_000))


def _runner_pids(board) -> list[int]:
    """Runner processes of this board (their command line holds the board's temp directory)."""
    pids = []
    for pid in find_processes("runner.py"):
        try:
            if str(board.board_tmp) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                pids.append(pid)
        except OSError:
            pass
    return pids


def _kill_session_when_running(board, *, times: int) -> threading.Thread:
    """Kill -9 the sshd process serving the session once the runner is up, ``times`` times."""

    def killer():
        killed: set[int] = set()
        deadline = time.monotonic() + 60
        while len(killed) < times and time.monotonic() < deadline:
            for pid in _runner_pids(board):
                if pid in killed:
                    continue
                sshd_pid = next((p for p, comm in process_ancestors(pid) if comm.startswith("sshd")), None)
                if sshd_pid is not None:
                    os.kill(sshd_pid, signal.SIGKILL)
                    killed.add(pid)
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread


def test_connection_killed_mid_run_fails_cleanly(board, tiny_onnx):
    killer = _kill_session_when_running(board, times=1)
    with pytest.raises(DeviceError, match="gave up after 1 attempt: .*(dropped|lost|ended)") as info:
        SshBackend(retries=0).measure(tiny_onnx, make_profile(board.target(), runs=2000))
    killer.join(5)
    assert "\n" not in str(info.value)


def test_connection_killed_mid_run_is_retried(board, tiny_onnx, caplog):
    killer = _kill_session_when_running(board, times=1)
    run = SshBackend(retries=2, backoff_s=0.2).run(tiny_onnx, make_profile(board.target(), runs=2000))
    killer.join(5)
    assert run.attempts == 2
    assert run.result.runs == 2000
    assert "retrying" in caplog.text


def test_unreachable_board_retries_then_fails(tmp_path, tiny_onnx):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from autocomp.profiles import SshTarget

    target = SshTarget(host="127.0.0.1", port=port, user="root", known_hosts=str(tmp_path / "kh"))
    started = time.monotonic()
    with pytest.raises(DeviceError, match="gave up after 3 attempts: cannot connect"):
        SshBackend(retries=2, backoff_s=0.1).measure(tiny_onnx, make_profile(target))
    assert time.monotonic() - started >= 0.3  # backoff 0.1 + 0.2


# ---------------------------------------------------------------------------------------- trtexec


def test_trtexec_profile_runs_trtexec_and_parses_its_report(board, tiny_onnx, tmp_path):
    record = tmp_path / "args.txt"
    fake = tmp_path / "fake trtexec"  # a path with a space, run by the runner without a shell
    sample = DATA / "trtexec_8.2_jetson_nano_fp16.txt"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > '{record}'\ncat '{sample}'\n")
    fake.chmod(0o755)
    profile = make_profile(board.target(), tool="trtexec", runs=100)
    run = SshBackend(trtexec=str(fake)).run(tiny_onnx, profile)
    assert run.result.median_ms == pytest.approx(0.381836)
    assert run.result.p90_ms == pytest.approx(0.40918)
    assert run.result.runs == 100
    assert run.details["tensorrt"] == "8.2.1"
    args = record.read_text().splitlines()
    assert args[0].startswith(f"--onnx={board.board_tmp}/autocomp-run.") and args[0].endswith("/model.onnx")
    assert "--fp16" in args and "--int8" not in args and "--iterations=100" in args


def test_trtexec_missing_on_board(board, tiny_onnx):
    profile = make_profile(board.target(), tool="trtexec")
    with pytest.raises(DeviceError, match="no-such-trtexec not found on the board"):
        SshBackend(trtexec="no-such-trtexec").measure(tiny_onnx, profile)


# ---------------------------------------------------------------------------------------- board check


def test_check_board_reports_what_a_measurement_needs(board):
    import onnxruntime

    info = check_board(board.target())
    assert info.ok, info.problems
    assert info.python == sys.executable
    assert info.python_version == ".".join(map(str, sys.version_info[:3]))
    assert info.onnxruntime_version == onnxruntime.__version__
    assert "CPUExecutionProvider" in info.providers
    assert info.cpu_count == os.cpu_count()
    assert info.free_disk_bytes > 0 and info.tmpdir == str(board.board_tmp)
    assert info.host_key.startswith("ssh-ed25519 SHA256:")
    assert board.leftovers() == []


def test_check_board_flags_a_missing_provider(board):
    info = check_board(board.target(), runtime=RuntimeSettings(execution_provider="TensorrtExecutionProvider"))
    assert [p for p in info.problems if "TensorrtExecutionProvider is not available" in p]


def test_board_check_cli(board, python_without_onnxruntime):
    from autocomp import profiles

    if not hasattr(profiles, "parse_board"):
        pytest.skip("autocomp.profiles.parse_board is not there yet (latency work)")
    from typer.testing import CliRunner

    from autocomp.cli import app

    base = ["board", "check", "--board", f"root@127.0.0.1:{board.port}", "--key", str(board.client_key),
            "--known-hosts", str(board.known_hosts)]  # fmt: skip
    ok = CliRunner().invoke(app, base + ["--python", sys.executable])
    assert ok.exit_code == 0, ok.output
    assert "onnxruntime" in ok.output and "ready" in ok.output
    missing = CliRunner().invoke(app, base + ["--python", python_without_onnxruntime])
    assert missing.exit_code == 1
    assert "missing: onnxruntime is missing" in " ".join(missing.output.split())


# ---------------------------------------------------------------------------------------- contract


def test_missing_paramiko_is_a_config_error_with_the_install_hint(monkeypatch, sshd, tiny_onnx):
    monkeypatch.setitem(sys.modules, "paramiko", None)
    with pytest.raises(ConfigError, match=r"pip install 'autocomp\[ssh\]'"):
        SshBackend().measure(tiny_onnx, make_profile(sshd.target()))


def test_profile_without_a_board_is_a_config_error(tiny_onnx):
    with pytest.raises(ConfigError, match="no ssh: section"):
        SshBackend().measure(tiny_onnx, make_profile(None))


def test_remote_scripts_stay_python_3_6_compatible():
    for name, source in [
        ("runner", ssh_mod.RUNNER_SCRIPT),
        ("probe", ssh_mod._PROBE_SCRIPT),
        ("bench_onnx.py", BENCH.read_text()),
    ]:
        ast.parse(source, filename=name, feature_version=(3, 6))
        for newer in ("capture_output", "text=True", "dataclasses", ":=", "asyncio.run"):
            assert newer not in source, (name, newer)


def test_fingerprint_matches_openssh(sshd):
    import paramiko

    key = paramiko.Ed25519Key.from_private_key_file(str(sshd.host_key))
    expected = subprocess.run(
        ["ssh-keygen", "-lf", str(sshd.host_key.with_suffix(".pub"))], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert fingerprint(key) == expected


# ---------------------------------------------------------------------------------------- search


def test_search_times_every_trial_on_the_board(board, tmp_path):
    """`autocomp search --backend ssh`: each trial is timed on the board, the report says so.

    The profile names a board that does not exist; --board/--key/--known-hosts point the
    search at the loopback one, as a user overrides a profile's board for one run."""
    import yaml
    from optuna.trial import TrialState

    from autocomp.profiles import load_profile, profile_to_dict
    from test_search import SPACE, cli, open_study

    data = profile_to_dict(load_profile("local"))
    data.update(name="loopback-board", ssh={"host": "board.invalid", "user": "nobody", "python": sys.executable})
    data["runtime"].update(warmup=3, runs=20)
    profile_file = tmp_path / "loopback-board.yaml"
    profile_file.write_text(yaml.safe_dump(data))
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    out = tmp_path / "run"
    tests = Path(__file__).resolve().parents[1]
    code, stdout, stderr = cli(
        "search", "--device", str(profile_file), "--backend", "ssh", "--board", f"{board.user}@127.0.0.1:{board.port}",
        "--key", str(board.client_key), "--known-hosts", str(board.known_hosts),
        "--task", f"{tests / 'search_tasks.py'}:shapes", "--space", str(space), "--trials", "2",
        "--out", str(out), "--study-name", "t", "--seed", "1",
    )  # fmt: skip
    assert code == 0, stderr
    study = open_study(out)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert done, [t.user_attrs.get("fail_reason") for t in study.trials]
    sources = {t.user_attrs["latency_source"] for t in done} | {study.user_attrs["baseline"]["latency_source"]}
    label = f"ssh:{board.user}@127.0.0.1:{board.port}"  # which board timed it is part of the provenance
    assert sources == {label}, sources
    assert all(t.user_attrs["latency_runs"] == 20 for t in done)
    report = (out / "report.html").read_text()
    assert label in report and "latencies were measured by running the exported ONNX file" in report
    # the board's address and key path stay out of the study storage
    stored = json.dumps({**study.user_attrs, **{str(t.number): t.user_attrs for t in study.trials}})
    assert str(board.client_key) not in stored and "board.invalid" not in stored


def test_measure_cli_over_ssh_with_board_options(board, tiny_onnx):
    """`autocomp measure --backend ssh` on a shipped profile, the board given on the command line."""
    from test_search import cli

    code, stdout, stderr = cli(
        "measure", str(tiny_onnx), "--device", "raspberry-pi-4", "--backend", "ssh", "--no-cache", "--json",
        "--board", f"{board.user}@127.0.0.1:{board.port}", "--key", str(board.client_key),
        "--known-hosts", str(board.known_hosts), "--python", sys.executable,
    )  # fmt: skip
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["source"] == f"ssh:{board.user}@127.0.0.1:{board.port}" and data["median_ms"] > 0
    assert data["runs"] == 100  # the Pi profile's timing settings, applied on the board


def test_calibrate_over_ssh_puts_the_board_fit_in_force(board):
    from autocomp.calibration import calibrate_device
    from autocomp.profiles import load_profile

    report = calibrate_device(
        "raspberry-pi-4", backend="ssh", board=board.target(), variants=3, precisions=("fp32",), prune=False,
        passes=1, settle_pct=None, probes=False,
    )  # fmt: skip
    assert report.samples + report.held_out == 3  # 3 models, fp32 only
    profile = load_profile("raspberry-pi-4")
    assert profile.is_calibrated and profile.calibration["backend"] == "ssh:127.0.0.1"
    assert str(board.client_key) not in report.path.read_text()  # which board, yes; its key path, no
