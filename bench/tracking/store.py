"""The one way to name and open an MLflow tracking store: its URI, how a user opens its UI, a client.

Commands that write runs hand their writes to the writer process (:mod:`bench.tracking.writer`);
:func:`make_client` is for the commands and steps that read a store (``sample``, ``evaluate``,
``report``, a resumed run's checkpoint) and for the writer itself. Nothing here imports MLflow at
module level.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from bench.errors import CLIError
from bench.tracking.mlflow_env import configure_mlflow_environment
from bench.tracking.redaction import redact_url
from bench.tracking.store_lock import mlflow_schema_lock

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: MLflow's own default since 3.7; the retired file store (``./mlruns``) is never used.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: Seconds the database server of a store URI has to accept a connection (:func:`check_database_reachable`).
CONNECT_TIMEOUT_S = 5.0
#: The database dialects whose servers :func:`check_database_reachable` probes, with their default ports.
DATABASE_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433}


def resolve_tracking_uri(cli_value: str | None = None) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else :data:`DEFAULT_TRACKING_URI`."""
    return cli_value or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def check_database_reachable(uri: str, what: str = "tracking store", timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """:class:`CLIError` naming the host unless the database server of ``uri`` accepts a TCP connection
    within ``timeout_s`` seconds (its name looked up included).

    Only URIs of a database server (:data:`DATABASE_PORTS`, any driver: ``postgresql+psycopg://``) are
    probed; SQLite, HTTP and file URIs, and a database reached through a local socket (no host, or a
    ``host=`` query parameter) pass unchecked. Without it, MLflow retries a database that refuses
    connections for ~100 s before it fails with a traceback, and a host that drops packets keeps a
    connection waiting for the kernel's ~2 minutes. ``what`` names the store in the message
    (``tracking store``, ``--storage``). Self-contained: stores are opened after it, by their owners.
    """
    scheme = uri.partition("://")[0].split("+")[0].lower() if "://" in uri else ""
    if scheme not in DATABASE_PORTS:
        return  # before importing SQLAlchemy: 0.2 s a train run would wait for
    import socket
    import threading

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(uri)
    except (ArgumentError, ValueError):
        return  # not parsable: the store's own open says what is wrong
    host = (url.host or "").rpartition("@")[2]  # an unencoded '@' in a password: the host is after the last one
    if not host or "host" in url.query:
        return
    port = url.port or DATABASE_PORTS[scheme]
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome.append(None)
        except (OSError, UnicodeError) as exc:
            outcome.append(exc)

    probe = threading.Thread(target=connect, name="database-probe", daemon=True)
    probe.start()
    probe.join(timeout_s + 0.5)  # a name lookup has no timeout of its own: the join bounds it
    if outcome and outcome[0] is None:
        return
    if not outcome or isinstance(outcome[0], TimeoutError):
        reason = f"no answer within {timeout_s:g} s"
    else:
        reason = getattr(outcome[0], "strerror", None) or " ".join(str(outcome[0]).split())
    raise CLIError(f"{what} {redact_url(uri)}: cannot reach the database server {host}:{port} ({reason}); is it "
                   "running, and reachable from this machine?")


def make_client(tracking_uri: str) -> "MlflowClient":
    """An :class:`mlflow.MlflowClient` for ``tracking_uri``; a URI MLflow cannot use, a database server
    that does not answer (:func:`check_database_reachable`) or a store that cannot be opened is a
    one-line :class:`CLIError` (password masked).

    MLflow prints "View run ... at <tracking URL>" when a run ends on a server; that URL may hold a
    password, so the printing is switched off (``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``).
    """
    check_database_reachable(tracking_uri)
    configure_mlflow_environment()
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with mlflow_schema_lock(tracking_uri):
            return MlflowClient(tracking_uri=tracking_uri)
    except (MlflowException, SQLAlchemyError, OSError) as exc:  # unsupported scheme, refused login, read-only folder
        detail = redact_url(" ".join(str(exc).split()))[:300]
        raise CLIError(f"tracking store {redact_url(tracking_uri)}: {detail}") from None


def check_tracking_uri(tracking_uri: str) -> None:
    """What can be told of a tracking URI before the writer opens it: a :class:`CLIError` for an SQLite file
    whose folder does not exist (MLflow would fail with "unable to open database file") or a database server
    that does not answer (:func:`check_database_reachable`). An HTTP server that does not answer is not an
    error: its outage is spooled."""
    from bench.tracking.store_lock import sqlite_file

    db = sqlite_file(tracking_uri)
    if db is not None and not db.expanduser().parent.is_dir():
        raise CLIError(f"tracking store {redact_url(tracking_uri)}: folder {db.expanduser().parent} does not exist")
    check_database_reachable(tracking_uri)
