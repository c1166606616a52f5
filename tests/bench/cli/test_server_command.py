"""``cvae-bench server``: bad options are one-line errors before any MLflow server starts; nothing passed
through changes where it listens; the backend store's password is on no command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bench.cli import server as server_module
from studies.cli import main

PASSWORD = "S3cret/PW@x"


def no_server(*args, **kwargs):
    raise AssertionError("an MLflow server was started")


def one_line_error(capsys, message: str) -> str:
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and err.startswith("cvae-bench server: error:") and message in err, err
    assert "Traceback" not in err + captured.out
    return err


@pytest.mark.parametrize("argv, message", [
    (["--host", "0.0.0.0"], "refusing to bind 0.0.0.0"),
    (["--port", "70000"], "--port 70000: must be in 1..65535"),
    (["--workers", "0"], "--workers 0: must be an integer >= 1"),
    (["--workers", "-1"], "--workers -1: must be an integer >= 1"),
])
def test_bad_server_options_are_one_line_and_start_nothing(monkeypatch, capsys, argv, message):
    monkeypatch.setattr(subprocess, "Popen", no_server)
    assert main(["server", *argv]) == 2
    one_line_error(capsys, message)


@pytest.mark.parametrize("passed", [
    ["--host", "0.0.0.0"], ["-h", "0.0.0.0"], ["-h0.0.0.0"], ["--host=0.0.0.0"], ["--port", "80"], ["-p80"],
    ["--uvicorn-opts", "--host 0.0.0.0"], ["--gunicorn-opts=-b 0.0.0.0:80"], ["--waitress-opts", "--listen=*:80"],
    ["--allowed-hosts", "x", "--host", "::"], ["--backend-store-uri", "sqlite:///other.db"],
])
def test_options_that_decide_where_it_listens_do_not_pass_through(monkeypatch, capsys, tmp_path, passed):
    """`server --port 5150 -- --host 0.0.0.0` listened on every interface behind a 127.0.0.1 banner."""
    monkeypatch.setattr(subprocess, "Popen", no_server)
    monkeypatch.chdir(tmp_path)
    assert main(["server", "--port", "5150", "--", *passed]) == 2
    one_line_error(capsys, "cannot be passed through to `mlflow server`")
    assert not list(tmp_path.iterdir())  # no store was made


@pytest.mark.parametrize("var", ["MLFLOW_UVICORN_OPTS", "MLFLOW_GUNICORN_OPTS"])
def test_web_server_options_in_the_environment_are_refused(monkeypatch, capsys, tmp_path, var):
    monkeypatch.setattr(subprocess, "Popen", no_server)
    monkeypatch.setenv(var, "--host 0.0.0.0")
    monkeypatch.chdir(tmp_path)
    assert main(["server", "--port", "5150"]) == 2
    one_line_error(capsys, f"${var} is set")


class FakeServer:
    """Stands in for the ``mlflow server`` child: records its command line and environment."""

    seen: list[tuple[list[str], dict]] = []

    def __init__(self, cmd, env=None, **kwargs):
        FakeServer.seen.append((list(cmd), dict(env or {})))

    def wait(self, timeout=None):
        return 0


def test_backend_password_is_on_no_command_line_and_never_printed(monkeypatch, capsys, tmp_path):
    uri = f"postgresql://cvae:{PASSWORD}@db-host:5432/mlflow"
    FakeServer.seen.clear()
    monkeypatch.setattr(subprocess, "Popen", FakeServer)  # nothing else starts a process on this path
    monkeypatch.setattr(server_module, "check_backend_store", lambda uri: None)  # no database here
    monkeypatch.setattr(server_module, "check_port_free", lambda host, port: None)
    assert main(["server", "--backend-store-uri", uri, "--port", "5151",
                 "--", "--allowed-hosts", "mlflow.lan:5151"]) == 0
    [(cmd, env)] = FakeServer.seen
    assert not any("S3cret" in arg or "db-host" in arg for arg in cmd), cmd
    assert env["MLFLOW_BACKEND_STORE_URI"] == uri  # what `mlflow server` reads for --backend-store-uri
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and "--allowed-hosts" in cmd
    captured = capsys.readouterr()
    assert "S3cret" not in captured.out + captured.err and "cvae:***@db-host" in captured.out


def test_backend_uri_from_the_environment(monkeypatch, capsys, tmp_path):
    uri = f"sqlite:///{tmp_path / 'env.db'}"
    FakeServer.seen.clear()
    monkeypatch.setattr(server_module, "launch", lambda cmd, env: FakeServer(cmd, env))
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", uri)
    monkeypatch.setattr(server_module, "check_port_free", lambda host, port: None)
    assert main(["server", "--port", "5152"]) == 0
    [(cmd, env)] = FakeServer.seen
    assert env["MLFLOW_BACKEND_STORE_URI"] == uri and (tmp_path / "env.db").is_file()  # opened before the start


@pytest.mark.parametrize("uri, message", [
    ("foo://bar", "unsupported URI 'foo://bar'"),
    ("not-a-uri", "filesystem tracking backend"),
    (f"postgresql://cvae:{PASSWORD}@127.0.0.1:1/mlflow", "cannot reach the database server 127.0.0.1:1"),
])
def test_backend_uri_mlflow_rejects_is_one_line(monkeypatch, capsys, tmp_path, uri, message):
    monkeypatch.setattr(server_module, "launch", no_server)
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    assert main(["server", "--backend-store-uri", uri, "--port", "5153"]) == 2
    assert time.monotonic() - start < 15
    err = one_line_error(capsys, message)
    assert "S3cret" not in err and "--backend-store-uri" in err


def test_port_in_use_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(subprocess, "Popen", no_server)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["server", "--backend-store-uri", f"sqlite:///{tmp_path / 'm.db'}", "--port", str(port)]) == 2
    one_line_error(capsys, f"cannot listen on 127.0.0.1:{port}")


def _descendants(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text() if (task / "children").exists() else ""
        children += [int(c) for c in text.split()]
    return children + [d for c in children for d in _descendants(c)]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the process tree from /proc")
def test_real_server_reads_the_backend_from_its_environment(tmp_path):
    """The real ``mlflow server`` and its web workers: the backend URI (here a file name standing in for
    a password) is in no process's command line, and the server uses that store."""
    from local_services import free_port

    marker = "stand-in-for-a-password"
    db = tmp_path / f"{marker}.db"
    port = free_port()
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_BACKEND_STORE_URI=f"sqlite:///{db}")
    proc = subprocess.Popen([sys.executable, "-m", "studies.cli", "server", "--artifacts-destination",
                             str(tmp_path / "artifacts"), "--port", str(port), "--workers", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.5)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/create",
                                     data=b'{"name": "through-the-env"}', headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        import sqlite3

        with sqlite3.connect(db) as conn:  # the experiment landed in the store named only in the environment
            names = {n for (n,) in conn.execute("SELECT name FROM experiments")}
        assert "through-the-env" in names
        tree = [proc.pid, *_descendants(proc.pid)]
        assert len(tree) >= 3  # cvae-bench server, mlflow server, its web server
        for pid in tree:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            assert marker not in cmdline, cmdline
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
