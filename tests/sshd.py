"""A real OpenSSH server on 127.0.0.1 for the SSH backend tests: this machine plays the board.

Keys (host and client, ed25519, made with ssh-keygen), config, pid and log live in one
temp directory. sshd runs in the foreground (-D) as our child, so it is stopped by its
own PID even when a test fails. The sessions get TMPDIR set to a directory whose name
has spaces and shell metacharacters, so every test also checks the backend's quoting.

Run as a script it measures the SSH backend's overhead against bench_onnx.py run
locally in a subprocess (same model, same settings):

    python tests/sshd.py overhead [--repeats 5]
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
# The board's TMPDIR: spaces, $, quotes, ; and a glob, none of which may do anything.
BOARD_TMP_NAME = "board tmp $HOME;'q' *"


def sshd_available() -> str | None:
    """None when a test sshd can run here, else the reason it cannot."""
    if not os.path.exists(SSHD):
        return f"{SSHD} not installed (apt-get install openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen not installed"
    if os.geteuid() != 0:
        return "the sshd fixture logs in as the current user and needs root to run sshd"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "autocomp-test", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


class SshdServer:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.user = "root"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.host_key = self.root / "host_ed25519"
        self.client_key = self.root / "client_ed25519"
        self.known_hosts = self.root / "known_hosts"
        self.board_tmp = self.root / BOARD_TMP_NAME
        self.log_path = self.root / "sshd.log"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "SshdServer":
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation directory
        _keygen(self.host_key)
        _keygen(self.client_key)
        shutil.copy(self.client_key.with_suffix(".pub"), self.root / "authorized_keys")
        self.board_tmp.mkdir(exist_ok=True)
        last_error = ""
        for _ in range(3):  # another process may grab the free port between probe and bind
            self.port = _free_port()
            config = self.root / "sshd_config"
            config.write_text(
                "\n".join(
                    [
                        f"Port {self.port}",
                        f"ListenAddress {self.host}",
                        f"HostKey {self.host_key}",
                        f"PidFile {self.root / 'sshd.pid'}",
                        f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
                        "PubkeyAuthentication yes",
                        "PasswordAuthentication no",
                        "KbdInteractiveAuthentication no",
                        "UsePAM no",
                        "StrictModes no",
                        "PermitRootLogin prohibit-password",
                        "Subsystem sftp internal-sftp",
                        "MaxStartups 64",
                        "MaxSessions 64",
                        "LogLevel ERROR",
                        f'SetEnv "TMPDIR={self.board_tmp}"',
                    ]
                )
                + "\n"
            )
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
            log.close()
            if self._wait_ready(timeout_s=10):
                self.known_hosts.write_text(f"[{self.host}]:{self.port} {self.host_pub()}\n")
                return self
            last_error = self.log_path.read_text(errors="replace")[-2000:]
            self.stop()
        raise RuntimeError(f"sshd did not start: {last_error}")

    def _wait_ready(self, *, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Stop the listener by PID, then any session processes it forked that are still alive."""
        if self.proc is None:
            return
        sessions = self.session_pids()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for pid in sessions:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.proc = None

    def __enter__(self) -> "SshdServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for tests
    def host_pub(self) -> str:
        return self.host_key.with_suffix(".pub").read_text().strip()

    def target(self, **overrides):
        from autocomp.profiles import SshTarget

        values = dict(
            host=self.host,
            port=self.port,
            user=self.user,
            key=str(self.client_key),
            python=sys.executable,
            known_hosts=str(self.known_hosts),
        )
        values.update(overrides)
        return SshTarget(**values)

    def session_pids(self) -> list[int]:
        """PIDs of the sshd processes serving sessions (children of the listener)."""
        if self.proc is None:
            return []
        return [pid for pid in _children(self.proc.pid)]

    def leftovers(self) -> list[str]:
        """Per-run directories left in the board's temp directory."""
        return sorted(p.name for p in self.board_tmp.glob("autocomp-run.*"))


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry))
    return found


def process_ancestors(pid: int) -> list[tuple[int, str]]:
    """(pid, comm) from ``pid``'s parent up to init."""
    chain = []
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                stat = fh.read()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            comm = "?"
        chain.append((pid, comm))
    return chain


def find_processes(needle: str) -> list[int]:
    """PIDs whose command line contains ``needle``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            pids.append(int(entry))
    return pids


# ---------------------------------------------------------------------- overhead measurement
def _overhead(repeats: int) -> None:
    import json
    import statistics
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    import torch

    from tiny_models import TinyResNet

    from autocomp.latency.ssh import SshBackend
    from autocomp.profiles import DeviceProfile, PrecisionSpec, RuntimeSettings

    bench = Path(__file__).resolve().parents[1] / "autocomp" / "latency" / "bench_onnx.py"
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny_resnet.onnx"
        torch.manual_seed(0)
        torch.onnx.export(TinyResNet().eval(), (torch.rand(1, 1, 16, 16),), str(model), dynamo=False)
        runtime = RuntimeSettings(warmup=20, runs=100, threads=1)
        with SshdServer(Path(tmp) / "sshd") as server:
            profile = DeviceProfile(
                name="loopback", description="this machine over ssh",
                precisions={"fp32": PrecisionSpec(1.0, True, "test")}, memory_bandwidth_gbps=1.0,
                memory_bandwidth_source="test", unstructured_sparsity_speedup=False,
                structured_2to4_sparsity=False, channel_multiple=1, runtime=runtime,
                ssh=server.target(),
            )  # fmt: skip
            backend = SshBackend()
            local_cmd = [sys.executable, str(bench), str(model), "--warmup", "20", "--runs", "100", "--threads", "1"]
            rows = []
            for _ in range(repeats):  # interleaved, so both see the same machine load
                t0 = time.perf_counter()
                out = subprocess.run(local_cmd, capture_output=True, text=True, check=True).stdout
                local_s = time.perf_counter() - t0
                local = json.loads(out)
                t0 = time.perf_counter()
                remote = backend.run(model, profile)
                ssh_s = time.perf_counter() - t0
                rows.append((local_s, ssh_s, local["median_ms"], remote.result.median_ms))
        print(f"model {model.name} ({model.stat().st_size} B), warmup 20, runs 100, threads 1, {repeats} repeats")
        print(f"{'':>4} {'local wall s':>12} {'ssh wall s':>10} {'overhead s':>10} {'local med ms':>12} {'ssh med ms':>10}")
        for i, (a, b, c, d) in enumerate(rows):
            print(f"{i:>4} {a:>12.3f} {b:>10.3f} {b - a:>10.3f} {c:>12.3f} {d:>10.3f}")
        med = statistics.median
        print(
            f"median: local {med(r[0] for r in rows):.3f} s, ssh {med(r[1] for r in rows):.3f} s, "
            f"overhead {med(r[1] - r[0] for r in rows):.3f} s per measurement"
        )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["overhead"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    reason = sshd_available()
    if reason:
        sys.exit(reason)
    _overhead(args.repeats)
