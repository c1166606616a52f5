"""``check_database_reachable``: a database server that refuses or does not answer is one line in seconds."""

from __future__ import annotations

import socket
import time

import pytest

from bench.errors import CLIError
from bench.tracking.store import check_database_reachable, make_client
from local_services import silent_listener


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_port():
    with silent_listener() as port:
        yield port


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg", "mysql+pymysql", "mssql+pyodbc"])
def test_refused_is_one_line_naming_the_host(scheme):
    port = closed_port()
    with pytest.raises(CLIError) as err:
        check_database_reachable(f"{scheme}://cvae:S3cret/PW@127.0.0.1:{port}/db", "--storage")
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message and "S3cret" not in message and message.startswith("--storage ")
    assert "\n" not in message


def test_silent_server_fails_within_the_timeout(silent_port):
    start = time.monotonic()
    with pytest.raises(CLIError, match=f"127.0.0.1:{silent_port} \\(no answer within 1 s\\)"):
        check_database_reachable(f"postgresql://u:p@127.0.0.1:{silent_port}/db", timeout_s=1.0)
    assert time.monotonic() - start < 3


def test_unknown_host_is_one_line():
    with pytest.raises(CLIError, match="no-such-host.invalid:5432"):
        check_database_reachable("postgresql://u:p@ss@no-such-host.invalid/db")


@pytest.mark.parametrize("uri", ["sqlite:///x.db", "sqlite://", "http://127.0.0.1:1", "file:///tmp/x",
                                 "postgresql:///db", "postgresql://u@/db?host=/var/run/postgresql", "study.journal"])
def test_other_stores_are_not_probed(uri):
    check_database_reachable(uri)  # no server to ask (or a local socket): nothing raised


def test_a_listening_server_passes():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(5)
        check_database_reachable(f"postgresql://u:p@127.0.0.1:{server.getsockname()[1]}/db")


def test_make_client_fails_fast_on_an_unreachable_database():
    """MLflow itself retries a refused connection for ~100 s, then raises a traceback."""
    start = time.monotonic()
    with pytest.raises(CLIError, match="tracking store postgresql://u:\\*\\*\\*@127.0.0.1"):
        make_client(f"postgresql://u:pw@127.0.0.1:{closed_port()}/mlflow")
    assert time.monotonic() - start < 15
