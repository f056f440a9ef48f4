"""A real PostgreSQL server on 127.0.0.1 for the shared-study tests, started and stopped by the test.

``initdb`` makes a cluster in a temp directory, ``pg_ctl`` starts it on a free port as the
``postgres`` user (the server refuses to run as root), and it is stopped by ``pg_ctl stop``
even when a test fails. The role ``ac`` has a password, so the tests also check that no output
shows it.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from sshd import _free_port

PASSWORD = "s3cret-pw"


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def postgres_available() -> str | None:
    """None when a test server can run here, else the reason it cannot."""
    if _bin("initdb") is None or _bin("pg_ctl") is None:
        return "PostgreSQL is not installed (apt-get install postgresql)"
    if os.geteuid() != 0:
        return "the fixture runs the server as the postgres user, which needs root (runuser)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the driver is not installed (pip install -e '.[dev]')"
    return None


class PostgresServer:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o777)
        self.port = _free_port()
        self.data = self.root / "data"
        self.url = f"postgresql://ac:{PASSWORD}@127.0.0.1:{self.port}/autocomp"

    def _as_postgres(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, timeout=120)
        if check and done.returncode:
            raise RuntimeError(f"{' '.join(args[:1])} failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
        return done

    def start(self) -> "PostgresServer":
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD)
        os.chmod(pwfile, 0o644)
        self._as_postgres(_bin("initdb"), "-D", str(self.data), "-A", "scram-sha-256", "-U", "ac", f"--pwfile={pwfile}")
        self.resume()
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        subprocess.run(
            ["runuser", "-u", "postgres", "--", _bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "ac", "autocomp"],
            check=True, capture_output=True, text=True, env=env, timeout=60,
        )
        return self

    def resume(self) -> None:
        """Start (or start again) the server on the same port and data."""
        self._as_postgres(
            _bin("pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.root / "pg.log"),
            "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start",
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not listen on {self.port}: {(self.root / 'pg.log').read_text()[-2000:]}")

    def stop(self) -> None:
        self._as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)
