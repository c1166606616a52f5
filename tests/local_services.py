"""Real services on loopback for the scale-out tests: a throwaway PostgreSQL cluster and an
``mlflow server`` (through ``cvae-bench server``) using it as backend store.

PostgreSQL comes from Debian's packages (``.ci/run`` installs them when absent). Postgres refuses to
run as root, so when the tests run as root the cluster runs as the ``postgres`` system user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PASSWORD = "pg-s3cret-Zq7"  # only ever lives in this throwaway cluster; tests check it never leaks
USER = "cvae"


@contextlib.contextmanager
def silent_listener():
    """A loopback port whose listen queue is full: new connections get no answer at all (the kernel drops
    their SYNs), as from a host behind a firewall that drops packets. Yields the port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(s)
        time.sleep(0.2)
        yield port
    finally:
        for s in fillers:
            s.close()
        server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


class PostgresCluster:
    def __init__(self, base: Path) -> None:
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.base = base
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.as_user, *cmd], check=True, capture_output=True, timeout=120)

    def start(self) -> "PostgresCluster":
        self.base.mkdir(parents=True, exist_ok=True)
        pwfile = self.base / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_user:
            shutil.chown(self.base, "postgres")
            shutil.chown(pwfile, "postgres")
        data = self.base / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", USER, "-A", "scram-sha-256",
                  f"--pwfile={pwfile}")
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.base / "postgres.log"), "-w", "-o",
                  f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=200", "start")
        return self

    def create_database(self, name: str) -> str:
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.base / "data"), "-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass


class MlflowServer:
    """``cvae-bench server`` on a free loopback port; stop()/start() to simulate an outage."""

    def __init__(self, backend_store_uri: str, artifacts: Path, log: Path) -> None:
        self.backend_store_uri = backend_store_uri
        self.artifacts = artifacts
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> "MlflowServer":
        cmd = [sys.executable, "-m", "studies.cli", "server", "--backend-store-uri", self.backend_store_uri,
               "--artifacts-destination", str(self.artifacts), "--port", str(self.port), "--workers", "2"]
        env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.proc.returncode}); see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server did not answer within {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        """Kill the whole process group and wait until the port no longer answers."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        deadline = time.time() + 30
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"port {self.port} still answers after the server was killed")
