"""Time an ONNX file on a real board over SSH.

One measurement: connect (key authentication, host key checked against
known_hosts, never added) -> make a private run directory on the board with
the board's python (``tempfile.mkdtemp``: mode 0700, honours the board's
TMPDIR) -> copy the model (always as ``model.onnx``, so a local file name never
reaches a remote shell), ``bench_onnx.py`` and a small runner script over SFTP
-> run the runner with the board's own python -> read one JSON object back ->
remove the run directory, in every case.

The runner (Python 3.6, standard library only) is what makes a measurement
safe on a shared board:

* it takes an exclusive ``flock`` on ``autocomp-board.lock`` in the board's
  temp directory before timing, so measurements from any number of processes
  and hosts are serialized and never timed under self-inflicted load, and
  appends one line per measurement to ``autocomp-board.log`` beside it (the
  board's own record: start, end, lock wait, outcome);
* it watches its stdin, which only reaches EOF when the SSH session is gone, and
  then kills the benchmark, removes the run directory and releases the lock, so
  a dropped connection or a client-side timeout leaves nothing running or
  behind;
* it enforces the run timeout on the benchmark itself.

Where the profile says ``runtime.tool: trtexec`` the runner starts TensorRT's
``trtexec`` instead of ``bench_onnx.py`` and its report is parsed here
(``autocomp.latency.trtexec``).

Connection failures (refused, reset, dropped mid-run, banner timeouts) are
retried with exponential backoff a bounded number of times; host-key,
authentication and board problems are not. Every failure is one
``DeviceError`` (board unreachable, untrusted or lacking something) or
``LatencyError`` (the model could not be timed) line. Nothing secret is ever
logged: the key is passed to paramiko as a path, and no password is supported.

paramiko is an optional dependency (``pip install 'autocomp[ssh]'``) and is
imported only when a connection is made.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import select
import shlex
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from autocomp.errors import ConfigError, DeviceError, LatencyError
from autocomp.latency.base import LatencyResult, check_onnx_file
from autocomp.latency.trtexec import parse_trtexec_output, trtexec_args

if TYPE_CHECKING:
    from autocomp.profiles import DeviceProfile, RuntimeSettings, SshTarget

log = logging.getLogger(__name__)

_BENCH_SCRIPT = Path(__file__).with_name("bench_onnx.py")
_RUN_PREFIX = "autocomp-run."
LOCK_NAME = "autocomp-board.lock"
LOG_NAME = "autocomp-board.log"  # next to the lock: one JSON line per measurement (board clock)
MIN_FREE_DISK_BYTES = 200 * 1024 * 1024
_TRTEXEC_FALLBACK = "/usr/src/tensorrt/bin/trtexec"  # JetPack installs it outside PATH

# Runs on the board with its own python: Python 3.6+, standard library only.
# argv: RUNDIR LOCK_TIMEOUT_S RUN_TIMEOUT_S -- COMMAND...
# Prints one JSON object: {"rc", "stdout", "stderr", "lock_wait_s", "started", "ended"} or {"error"}.
RUNNER_SCRIPT = r'''
import errno, fcntl, json, os, shutil, signal, subprocess, sys, threading, time

FALLBACKS = {"trtexec": "%(trtexec_fallback)s"}


def emit(obj):
    try:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()
    except (IOError, OSError):
        pass  # the session is gone; nobody is listening


def find_exe(name):
    if os.sep in name:
        return name
    found = shutil.which(name)
    if found is None and name in FALLBACKS and os.access(FALLBACKS[name], os.X_OK):
        found = FALLBACKS[name]
    return found


def main():
    rundir, lock_timeout, run_timeout = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    if sys.argv[4] != "--":
        emit({"error": "runner: bad arguments"})
        return 2
    command = sys.argv[5:]
    lost = threading.Event()

    def watch_stdin():
        # The client never writes or closes stdin: EOF means the SSH session has gone.
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        lost.set()

    watcher = threading.Thread(target=watch_stdin)
    watcher.daemon = True
    watcher.start()
    lock_fd = None
    try:
        if not os.path.basename(rundir).startswith("%(prefix)s"):
            emit({"error": "runner: refusing to work in %%r" %% rundir})
            return 2
        exe = find_exe(command[0])
        if exe is None:
            emit({"error": "%%s not found on the board (PATH=%%s)" %% (command[0], os.environ.get("PATH", ""))})
            return 2
        command[0] = exe
        lock_path = os.path.join(os.path.dirname(rundir), "%(lock)s")
        lock_fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT, 0o666)
        waited_from = time.time()
        while True:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except (IOError, OSError) as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if lost.is_set():
                return 3
            if time.time() - waited_from > lock_timeout:
                emit({"error": "board busy: another measurement held %%s for more than %%.0f s" %% (lock_path, lock_timeout)})
                return 4
            time.sleep(0.05)
        started = time.time()
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=rundir, start_new_session=True,
        )
        reason = None
        while True:
            try:
                out, err = proc.communicate(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if lost.is_set():
                    reason = "connection lost"
                elif time.time() - started > run_timeout:
                    reason = "timeout"
                if reason is not None:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except OSError:
                        pass
                    out, err = proc.communicate()
                    break
        ended = time.time()
        try:  # the board's own record of what ran on it and when, written while the lock is held
            with open(os.path.join(os.path.dirname(rundir), "%(log)s"), "a") as log:
                log.write(json.dumps({"started": started, "ended": ended, "lock_wait_s": started - waited_from, "outcome": reason or "done"}) + "\n")
        except (IOError, OSError):
            pass
        if reason == "connection lost":
            return 3
        emit({
            "rc": proc.returncode,
            "timed_out": reason == "timeout",
            "stdout": out.decode("utf-8", "replace")[-1000000:],
            "stderr": err.decode("utf-8", "replace")[-4000:],
            "lock_wait_s": started - waited_from,
            "started": started,
            "ended": ended,
        })
        return 0
    finally:
        shutil.rmtree(rundir, ignore_errors=True)
        if lock_fd is not None:
            os.close(lock_fd)  # releases the flock


if __name__ == "__main__":
    sys.exit(main())
''' % {"trtexec_fallback": _TRTEXEC_FALLBACK, "prefix": _RUN_PREFIX, "lock": LOCK_NAME, "log": LOG_NAME}

# Sent on stdin to ``python -`` by check_board; must also run (and fail readably) on old pythons.
_PROBE_SCRIPT = r'''
import json, multiprocessing, os, platform, sys, tempfile
info = {"python": sys.executable, "python_version": platform.python_version(),
        "machine": platform.machine(), "system": platform.system()}
try:
    info["cpu_count"] = multiprocessing.cpu_count()
except Exception:
    info["cpu_count"] = None
info["tmpdir"] = tempfile.gettempdir()
try:
    st = os.statvfs(info["tmpdir"])
    info["free_disk_bytes"] = st.f_bavail * st.f_frsize
except Exception:
    info["free_disk_bytes"] = None
try:
    import numpy
    info["numpy"] = numpy.__version__
except Exception as exc:
    info["numpy_error"] = "%s: %s" % (type(exc).__name__, exc)
try:
    import onnxruntime
    info["onnxruntime"] = onnxruntime.__version__
    info["providers"] = list(onnxruntime.get_available_providers())
except Exception as exc:
    info["onnxruntime_error"] = "%s: %s" % (type(exc).__name__, exc)
trtexec = None
try:
    import shutil
    trtexec = shutil.which("trtexec")
except Exception:
    pass
if trtexec is None and os.access("@FALLBACK@", os.X_OK):
    trtexec = "@FALLBACK@"
info["trtexec"] = trtexec
print(json.dumps(info))
'''.replace("@FALLBACK@", _TRTEXEC_FALLBACK)


# --------------------------------------------------------------------------- paramiko + host keys


def _paramiko():
    try:
        import paramiko
    except ImportError as exc:
        raise ConfigError(
            "the ssh latency backend needs paramiko, which is not installed: pip install 'autocomp[ssh]'"
        ) from exc
    return paramiko


def board_label(target: "SshTarget") -> str:
    return target.label


def _host_key_name(target: "SshTarget") -> str:
    return target.host if target.port == 22 else f"[{target.host}]:{target.port}"


def _known_hosts_path(target: "SshTarget") -> Path:
    return Path(os.path.expanduser(target.known_hosts or "~/.ssh/known_hosts"))


def fingerprint(key: Any) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a public key (what ``ssh-keygen -lf`` prints)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


class _UnknownHostKey(Exception):
    def __init__(self, key: Any) -> None:
        super().__init__("unknown host key")
        self.key = key


class _Retryable(Exception):
    """A connection-level failure worth another attempt (refused, reset, dropped, banner timeout)."""


def _trust_hint(target: "SshTarget") -> str:
    kh = _known_hosts_path(target)
    port = f"-p {target.port} " if target.port != 22 else ""
    return (
        f"check the fingerprint on the board itself (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), "
        f"then trust it deliberately: ssh-keyscan {port}{shlex.quote(target.host)} >> {shlex.quote(str(kh))}"
    )


def _connect(target: "SshTarget", *, timeout_s: float) -> Any:
    """An authenticated paramiko SSHClient; raises DeviceError, ConfigError or _Retryable."""
    paramiko = _paramiko()
    label = board_label(target)
    if target.key is not None and not Path(os.path.expanduser(target.key)).is_file():
        raise ConfigError(f"ssh key file {target.key!r} for {label} does not exist")

    class RecordingReject(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            raise _UnknownHostKey(key)

    quiet = logging.getLogger("paramiko")
    if quiet.level == logging.NOTSET:
        # paramiko's transport thread logs every failed handshake with a traceback at ERROR; we report
        # each failure ourselves as one line. Anyone who sets paramiko's level keeps their choice.
        quiet.setLevel(logging.CRITICAL)
    client = paramiko.SSHClient()
    kh = _known_hosts_path(target)
    if kh.is_file():
        try:
            client.get_host_keys().load(str(kh))
        except Exception as exc:  # a malformed line: say which file, not its contents
            raise DeviceError(f"cannot read known_hosts file {kh}: {type(exc).__name__}") from exc
    client.set_missing_host_key_policy(RecordingReject())
    key_file = os.path.expanduser(target.key) if target.key else None
    log.debug("connecting to %s (known_hosts %s, key file %s)", label, kh, "given" if key_file else "default")
    try:
        client.connect(
            hostname=target.host,
            port=target.port,
            username=target.user,
            key_filename=key_file,
            look_for_keys=key_file is None,
            allow_agent=key_file is None,
            timeout=timeout_s,
            banner_timeout=timeout_s,
            auth_timeout=timeout_s,
            channel_timeout=timeout_s,
        )
    except _UnknownHostKey as exc:
        client.close()
        raise DeviceError(
            f"refusing to connect to {label}: its host key ({exc.key.get_name()} {fingerprint(exc.key)}) "
            f"is not in {kh}; {_trust_hint(target)}"
        ) from None
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise DeviceError(
            f"refusing to connect to {label}: its host key CHANGED (known_hosts {kh} has "
            f"{exc.expected_key.get_name()} {fingerprint(exc.expected_key)}, the server offered "
            f"{exc.key.get_name()} {fingerprint(exc.key)}); this is a reinstalled board or a man in the middle. "
            f"If you know which, remove the old entry (ssh-keygen -R {shlex.quote(_host_key_name(target))} "
            f"-f {shlex.quote(str(kh))}) and {_trust_hint(target)}"
        ) from None
    except paramiko.PasswordRequiredException:
        client.close()
        raise DeviceError(
            f"the ssh key for {label} is passphrase-protected; load it into ssh-agent and leave --key out "
            "(autocomp never asks for or stores passphrases)"
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        raise DeviceError(
            f"key authentication to {label} failed: is the public key of "
            f"{'the key given' if key_file else 'your default keys'} in ~{target.user}/.ssh/authorized_keys "
            "on the board? (password authentication is not supported)"
        ) from None
    except socket.gaierror as exc:
        client.close()
        raise DeviceError(f"cannot resolve board host {target.host!r}: {exc.strerror or exc}") from None
    except (OSError, EOFError, paramiko.SSHException) as exc:  # refused, reset, timeout, banner
        client.close()
        reason = _reason(exc)
        if reason in ("No existing session", "Error reading SSH protocol banner"):
            reason = f"the board accepted TCP but did not complete the SSH handshake within {timeout_s:g} s"
        raise _Retryable(f"cannot connect: {reason}") from exc
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(5)
    return client


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, (socket.timeout, TimeoutError)):
        text = f"timed out ({text})" if text not in ("timed out", "TimeoutError", "timeout") else "timed out"
    return text.splitlines()[0]


# --------------------------------------------------------------------------- remote commands


@dataclass
class _Completed:
    rc: int | None  # None: killed by a signal (no exit status)
    stdout: str
    stderr: str


class _RunTimeout(Exception):
    pass


def _exec(client: Any, command: str, *, timeout_s: float, stdin_data: bytes | None = None) -> _Completed:
    """Run ``command`` through the board's shell; stdin stays open unless ``stdin_data`` is given.

    Raises _Retryable when the connection drops, _RunTimeout after ``timeout_s`` (the channel is
    closed, which the runner sees as EOF on stdin and cleans up after).
    """
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise _Retryable("the connection was closed")
    log.debug("remote: %s", command)
    try:
        channel = transport.open_session(timeout=timeout_s)
        channel.exec_command(command)
        if stdin_data is not None:
            channel.sendall(stdin_data)
            channel.shutdown_write()
    except (OSError, EOFError) as exc:
        raise _Retryable(f"connection lost: {_reason(exc)}") from exc
    except Exception as exc:  # paramiko.SSHException, ChannelException
        if not transport.is_active():
            raise _Retryable(f"connection lost: {_reason(exc)}") from exc
        raise
    out: list[bytes] = []
    err: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not (channel.exit_status_ready() or channel.closed):
            if time.monotonic() > deadline:
                raise _RunTimeout()
            if not transport.is_active():
                break
            # the channel's fd wakes us for data but not for the exit status: keep the wait short
            select.select([channel], [], [], 0.02)
            while channel.recv_ready():
                out.append(channel.recv(65536))
            while channel.recv_stderr_ready():
                err.append(channel.recv_stderr(65536))
        while channel.recv_ready():
            out.append(channel.recv(65536))
        while channel.recv_stderr_ready():
            err.append(channel.recv_stderr(65536))
        # paramiko reports -1 both for "killed by a signal" (no exit-status message) and for a closed
        # connection; the transport goes inactive shortly after its channels close in the latter case.
        rc: int | None = channel.recv_exit_status() if channel.exit_status_ready() else -1
        if rc == -1:
            settle = time.monotonic() + 1.0
            while transport.is_active() and time.monotonic() < settle:
                time.sleep(0.02)
            if not transport.is_active():
                raise _Retryable("the connection dropped while the command ran")
            rc = None
    finally:
        channel.close()
    return _Completed(rc, b"".join(out).decode("utf-8", "replace"), b"".join(err).decode("utf-8", "replace"))


def _python_argv(target: "SshTarget") -> list[str]:
    argv = shlex.split(target.python)
    if not argv:
        raise ConfigError(f"ssh python for {board_label(target)} is empty")
    return argv


def _q(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def _missing_python(target: "SshTarget", completed: _Completed) -> DeviceError:
    tail = (completed.stderr.strip().splitlines() or ["exit code 127"])[-1]
    return DeviceError(
        f"python {target.python!r} not found on {board_label(target)} ({tail}); set ssh.python in the "
        "profile to the board's python 3.6+"
    )


# --------------------------------------------------------------------------- board check


@dataclass(frozen=True)
class BoardInfo:
    """What ``autocomp board check`` reports; ``problems`` says plainly what is missing."""

    board: str
    python: str | None
    python_version: str | None
    machine: str | None
    cpu_count: int | None
    free_disk_bytes: int | None
    tmpdir: str | None
    numpy_version: str | None
    onnxruntime_version: str | None
    providers: tuple[str, ...]
    trtexec: str | None
    host_key: str  # "ssh-ed25519 SHA256:..."; the fingerprint that was verified
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _version_tuple(text: str | None) -> tuple[int, ...]:
    parts = []
    for piece in (text or "").split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_board(
    target: "SshTarget",
    *,
    runtime: "RuntimeSettings | None" = None,
    connect_timeout_s: float = 10.0,
    timeout_s: float = 60.0,
) -> BoardInfo:
    """Connect to a board and report its python, onnxruntime, providers, CPUs, free disk and trtexec.

    ``runtime`` (the profile's) decides which gaps are problems: onnxruntime and the execution
    provider for ``tool: onnxruntime``, trtexec for ``tool: trtexec``. Raises DeviceError only
    when the board cannot be reached or trusted; everything else is reported in ``problems``.
    """
    tool = runtime.tool if runtime is not None else "onnxruntime"
    provider = runtime.execution_provider if runtime is not None else "CPUExecutionProvider"
    label = board_label(target)
    try:
        client = _connect(target, timeout_s=connect_timeout_s)
    except _Retryable as exc:
        raise DeviceError(f"{label}: {exc}") from None
    try:
        key = client.get_transport().get_remote_server_key()
        host_key = f"{key.get_name()} {fingerprint(key)}"
        try:
            completed = _exec(
                client, _q(_python_argv(target) + ["-"]), timeout_s=timeout_s, stdin_data=_PROBE_SCRIPT.encode()
            )
        except _Retryable as exc:
            raise DeviceError(f"{label}: {exc}") from None
        except _RunTimeout:
            raise DeviceError(f"{label}: the board did not answer the probe within {timeout_s:.0f} s") from None
    finally:
        client.close()

    empty = BoardInfo(label, None, None, None, None, None, None, None, None, (), None, host_key)
    if completed.rc == 127:
        return replace(empty, problems=(str(_missing_python(target, completed)),))
    try:
        info = json.loads(completed.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        return replace(empty, problems=(f"python {target.python!r} on the board could not run the probe: {tail}",))

    problems = []
    version = info.get("python_version")
    if _version_tuple(version) < (3, 6):
        problems.append(f"python {version} at {info.get('python')} is older than 3.6")
    if tool == "onnxruntime":
        if "numpy_error" in info:
            problems.append(f"numpy is missing for {info.get('python')} ({info['numpy_error']}): pip3 install numpy")
        if "onnxruntime_error" in info:
            problems.append(
                f"onnxruntime is missing for {info.get('python')} ({info['onnxruntime_error']}): pip3 install "
                "onnxruntime (on a Jetson, the onnxruntime-gpu wheel for your JetPack from the Jetson Zoo), "
                "or set runtime.tool: trtexec in the profile"
            )
        elif provider not in info.get("providers", []):
            problems.append(
                f"execution provider {provider} is not available (available: {', '.join(info.get('providers', []))})"
            )
    elif tool == "trtexec" and not info.get("trtexec"):
        problems.append(f"trtexec is not on PATH nor at {_TRTEXEC_FALLBACK}: install TensorRT (JetPack)")
    free = info.get("free_disk_bytes")
    if free is not None and free < MIN_FREE_DISK_BYTES:
        problems.append(f"only {free / 2**20:.0f} MiB free in {info.get('tmpdir')} (need {MIN_FREE_DISK_BYTES >> 20} MiB)")
    return BoardInfo(
        board=label,
        python=info.get("python"),
        python_version=version,
        machine=info.get("machine"),
        cpu_count=info.get("cpu_count"),
        free_disk_bytes=free,
        tmpdir=info.get("tmpdir"),
        numpy_version=info.get("numpy"),
        onnxruntime_version=info.get("onnxruntime"),
        providers=tuple(info.get("providers", ())),
        trtexec=info.get("trtexec"),
        host_key=host_key,
        problems=tuple(problems),
    )


# --------------------------------------------------------------------------- the backend


@dataclass(frozen=True)
class RemoteRun:
    """One measurement with what the board reported about it (remote clock, seconds since the epoch)."""

    result: LatencyResult
    lock_wait_s: float
    started: float  # the board's clock when timing began (lock held)
    ended: float  # ... and when it ended
    attempts: int
    wall_s: float  # client-side, everything included
    details: dict[str, Any] = field(default_factory=dict)  # onnxruntime version, providers or trtexec extras


def _has_qdq(onnx_path: Path) -> bool:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in model.graph.node)


def _batch_shapes(onnx_path: Path, batch_size: int) -> list[str]:
    """``--shape`` arguments giving every input whose first dimension is symbolic the batch size."""
    if batch_size == 1:
        return []
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    shapes = []
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        if not dims or dims[0].HasField("dim_value"):
            continue
        sizes = [batch_size] + [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in dims[1:]]
        shapes += ["--shape", f"{inp.name}=" + "x".join(str(s) for s in sizes)]
    return shapes


class SshBackend:
    """Latency backend timing on a board over SSH (see the module docstring).

    ``target`` overrides the profile's ``ssh:`` section (``--board``/``--key`` on the command line).
    """

    name = "ssh"

    def __init__(
        self,
        target: "SshTarget | None" = None,
        *,
        connect_timeout_s: float = 10.0,
        run_timeout_s: float = 600.0,
        lock_timeout_s: float = 1800.0,
        retries: int = 2,
        backoff_s: float = 1.0,
        trtexec: str = "trtexec",
        shapes: "Mapping[str, tuple[int, ...]] | None" = None,
    ) -> None:
        if retries < 0 or connect_timeout_s <= 0 or run_timeout_s <= 0 or lock_timeout_s < 0 or backoff_s < 0:
            raise ConfigError(
                f"bad ssh backend settings: retries={retries}, connect_timeout_s={connect_timeout_s}, "
                f"run_timeout_s={run_timeout_s}, lock_timeout_s={lock_timeout_s}, backoff_s={backoff_s}"
            )
        self.target = target
        self.connect_timeout_s = connect_timeout_s
        self.run_timeout_s = run_timeout_s
        self.lock_timeout_s = lock_timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.trtexec = trtexec
        self.shapes = dict(shapes or {})

    @property
    def identity(self) -> str:
        """What a result cache should key on besides the file: the board, not just "ssh"."""
        return f"ssh:{board_label(self.target)}" if self.target is not None else "ssh"

    def target_for(self, profile: "DeviceProfile") -> "SshTarget":
        target = self.target or profile.ssh
        if target is None:
            raise ConfigError(
                f"device profile {profile.name!r} has no ssh: section and no board was given; add "
                "ssh: {host, user, port, key, python} to the profile or pass --board user@host[:port]"
            )
        return target

    def measure(self, onnx_path: Path, profile: "DeviceProfile") -> LatencyResult:
        return self.run(onnx_path, profile).result

    def run(self, onnx_path: Path, profile: "DeviceProfile") -> RemoteRun:
        """Measure and return the details (lock wait, remote start/end, attempts) with the result."""
        onnx_path = check_onnx_file(onnx_path)
        target = self.target_for(profile)
        _paramiko()  # a missing paramiko is a ConfigError before anything else happens
        runtime = profile.runtime
        if runtime.tool not in ("onnxruntime", "trtexec"):
            raise ConfigError(f"profile {profile.name!r}: runtime.tool {runtime.tool!r} is not onnxruntime or trtexec")
        if runtime.tool == "trtexec":
            spec = profile.precisions.get("fp16")
            flags = {"fp16": bool(spec and spec.accelerated), "int8": _has_qdq(onnx_path), "shapes": self.shapes}
            extra: list[str] = []
        else:
            flags = {}
            if self.shapes:
                extra = []
                for name, dims in self.shapes.items():
                    extra += ["--shape", f"{name}=" + "x".join(str(int(d)) for d in dims)]
            else:
                extra = _batch_shapes(onnx_path, runtime.batch_size)
        label = board_label(target)
        began = time.monotonic()
        last: _Retryable | None = None
        for attempt in range(1, self.retries + 2):
            try:
                outcome = self._attempt(onnx_path, target, runtime, flags=flags, extra=extra)
            except _Retryable as exc:
                last = exc
                if attempt <= self.retries:
                    delay = self.backoff_s * 2 ** (attempt - 1)
                    log.warning(
                        "%s: %s; retrying in %.1f s (attempt %d of %d)", label, exc, delay, attempt + 1, self.retries + 1
                    )
                    time.sleep(delay)
                continue
            envelope, details = outcome
            return RemoteRun(
                result=details.pop("_result"),
                lock_wait_s=float(envelope["lock_wait_s"]),
                started=float(envelope["started"]),
                ended=float(envelope["ended"]),
                attempts=attempt,
                wall_s=time.monotonic() - began,
                details=details,
            )
        attempts = self.retries + 1
        raise DeviceError(f"{label}: gave up after {attempts} attempt{'s' if attempts > 1 else ''}: {last}")

    # One attempt: connect, make the run dir, upload, run, clean up. Raises _Retryable on connection loss.
    def _attempt(
        self,
        onnx_path: Path,
        target: "SshTarget",
        runtime: "RuntimeSettings",
        *,
        flags: dict[str, Any],
        extra: list[str],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        label = board_label(target)
        python = _python_argv(target)
        client = _connect(target, timeout_s=self.connect_timeout_s)
        rundir: str | None = None
        try:
            made = self._exec(
                client,
                # -S: only the standard library is needed, and skipping site-packages halves start-up
                _q(python + ["-S", "-c", f"import tempfile; print(tempfile.mkdtemp(prefix={_RUN_PREFIX!r}))"]),
                timeout_s=self.connect_timeout_s + 20,
                what="creating the run directory",
                target=target,
            )
            if made.rc == 127:
                raise _missing_python(target, made)
            lines = made.stdout.strip().splitlines()
            if made.rc != 0 or not lines or not lines[-1].startswith("/"):
                tail = (made.stderr.strip().splitlines() or [f"exit code {made.rc}"])[-1]
                raise DeviceError(f"{label}: cannot create a run directory with {target.python!r}: {tail}")
            rundir = lines[-1]
            log.debug("run directory %s on %s", rundir, label)
            model = f"{rundir}/model.onnx"
            try:
                sftp = client.open_sftp()
                try:
                    sftp.put(str(_BENCH_SCRIPT), f"{rundir}/bench_onnx.py")
                    with sftp.open(f"{rundir}/runner.py", "w") as fh:
                        fh.write(RUNNER_SCRIPT)
                    sftp.put(str(onnx_path), model)
                finally:
                    sftp.close()
            except (OSError, EOFError) as exc:
                if not client.get_transport().is_active():
                    raise _Retryable(f"connection lost while copying the model: {_reason(exc)}") from exc
                raise DeviceError(f"{label}: copying the model to {rundir} failed: {_reason(exc)}") from exc
            except Exception as exc:  # paramiko.SSHException: no SFTP subsystem, channel refused
                if not client.get_transport().is_active():
                    raise _Retryable(f"connection lost while copying the model: {_reason(exc)}") from exc
                raise DeviceError(f"{label}: SFTP to the board failed ({_reason(exc)}); is sftp enabled in sshd?") from exc

            if runtime.tool == "trtexec":
                child = [self.trtexec] + trtexec_args(model, runs=runtime.runs, **flags)
            else:
                child = python + [
                    f"{rundir}/bench_onnx.py", model,
                    "--warmup", str(runtime.warmup), "--runs", str(runtime.runs),
                    "--threads", str(runtime.threads), "--provider", runtime.execution_provider,
                ] + extra  # fmt: skip
            command = "exec " + _q(
                python
                + ["-S", f"{rundir}/runner.py", rundir, str(self.lock_timeout_s), str(self.run_timeout_s), "--"]
                + child
            )
            completed = self._exec(
                client,
                command,
                timeout_s=self.lock_timeout_s + self.run_timeout_s + 30,
                what="the benchmark",
                target=target,
            )
            envelope = self._envelope(completed, target)
            rundir = None  # the runner ran to its end, and its `finally` removed the run directory
            return envelope, self._result(envelope, target, runtime)
        finally:
            if rundir is not None:
                self._cleanup(client, target, rundir)
            client.close()

    def _exec(self, client: Any, command: str, *, timeout_s: float, what: str, target: "SshTarget") -> _Completed:
        try:
            return _exec(client, command, timeout_s=timeout_s)
        except _RunTimeout:
            raise LatencyError(
                f"{board_label(target)}: {what} did not finish within {timeout_s:.0f} s (run timeout)"
            ) from None
        except _Retryable as exc:
            raise _Retryable(f"{exc} ({what})") from None

    def _cleanup(self, client: Any, target: "SshTarget", rundir: str) -> None:
        """Remove the run directory, reconnecting once if the connection is gone (best effort)."""
        command = "rm -rf -- " + shlex.quote(rundir)
        for fresh in (False, True):
            try:
                if fresh:
                    client = _connect(target, timeout_s=min(self.connect_timeout_s, 5.0))
                try:
                    _exec(client, command, timeout_s=15)
                    return
                finally:
                    if fresh:
                        client.close()
            except Exception as exc:  # never mask the measurement's own error
                log.debug("cleanup of %s on %s: %s", rundir, board_label(target), _reason(exc))
        log.warning("could not remove %s on %s; the board's runner removes it when it exits", rundir, board_label(target))

    def _envelope(self, completed: _Completed, target: "SshTarget") -> dict[str, Any]:
        label = board_label(target)
        if completed.rc == 127:
            raise _missing_python(target, completed)
        if completed.rc is None:
            raise LatencyError(f"{label}: the benchmark runner was killed by a signal")
        try:
            envelope = json.loads(completed.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            tail = (completed.stderr.strip().splitlines() or [f"exit code {completed.rc}, no output"])[-1]
            if completed.rc == 3:  # the runner saw its session end
                raise _Retryable("the session ended during the benchmark") from None
            raise DeviceError(f"{label}: the benchmark runner failed with {target.python!r}: {tail}") from None
        if "error" in envelope:
            raise DeviceError(f"{label}: {envelope['error']}")
        return envelope

    def _result(self, envelope: dict[str, Any], target: "SshTarget", runtime: "RuntimeSettings") -> dict[str, Any]:
        label = board_label(target)
        source = f"ssh:{label}"
        if envelope.get("timed_out"):
            raise LatencyError(f"{label}: the benchmark did not finish within the run timeout of {self.run_timeout_s:.0f} s")
        if runtime.tool == "trtexec":
            if envelope["rc"] != 0:
                try:
                    parse_trtexec_output(envelope["stdout"])
                except LatencyError as exc:
                    raise LatencyError(f"{label}: trtexec failed (exit code {envelope['rc']}): {exc}") from None
            summary = parse_trtexec_output(envelope["stdout"])
            result = LatencyResult(summary.median_ms, summary.p90_ms, summary.runs or runtime.runs, source)
            return {"_result": result, "tensorrt": summary.tensorrt_version,
                    "gpu_compute_median_ms": summary.gpu_compute_median_ms}  # fmt: skip
        try:
            report = json.loads(envelope["stdout"].strip().splitlines()[-1])
        except (ValueError, IndexError):
            tail = (envelope["stderr"].strip().splitlines() or [f"exit code {envelope['rc']}"])[-1]
            raise LatencyError(f"{label}: bench_onnx.py printed no result: {tail}") from None
        if "error" in report:
            error = report["error"]
            if "No module named" in error or "ImportError" in error:
                raise DeviceError(
                    f"{label}: {error} for {target.python!r}; install onnxruntime (and numpy) for that python on "
                    "the board (pip3 install onnxruntime; on a Jetson the Jetson Zoo wheel), or point ssh.python "
                    "at a python that has it; `autocomp board check` lists what is missing"
                )
            raise LatencyError(f"{label}: bench_onnx.py failed: {error}")
        # the same statistic as the local backend: the lowest block median when the script reports it
        median_ms = float(report.get("robust_ms", report["median_ms"]))
        result = LatencyResult(median_ms, float(report["p90_ms"]), int(report["runs"]), source)
        return {"_result": result, "onnxruntime": report.get("onnxruntime"), "providers": report.get("providers")}
