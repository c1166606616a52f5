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


def redact(text: str | None) -> str:
    """``text`` with the password of every URL in it masked (see :func:`bench.tracking.redaction.redact_url`)."""
    return redact_url(text) if text else ""


def resolve_tracking_uri(cli_value: str | None = None) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else :data:`DEFAULT_TRACKING_URI`."""
    return cli_value or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def ui_hint(tracking_uri: str) -> str:
    """How a user opens the MLflow UI on ``tracking_uri`` (password redacted), in its model-training
    view (the UI starts in its GenAI view unless told: ``?workflowType=machine_learning``)."""
    uri = redact(tracking_uri)
    if uri.startswith(("http://", "https://")):
        return f"open {uri.rstrip('/')}/#/experiments?workflowType=machine_learning in a browser"
    return (f"mlflow ui --backend-store-uri {uri}, then open "
            "http://127.0.0.1:5000/#/experiments?workflowType=machine_learning")


def make_client(tracking_uri: str) -> "MlflowClient":
    """An :class:`mlflow.MlflowClient` for ``tracking_uri``; a URI MLflow cannot use is a :class:`CLIError`.

    MLflow prints "View run ... at <tracking URL>" when a run ends on a server; that URL may hold a
    password, so the printing is switched off (``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``).
    """
    configure_mlflow_environment()
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        with mlflow_schema_lock(tracking_uri):
            return MlflowClient(tracking_uri=tracking_uri)
    except MlflowException as exc:  # an unsupported scheme: a one-line error, not a traceback
        detail = redact(" ".join(str(exc).split()))[:300]
        raise CLIError(f"tracking store {redact(tracking_uri)}: {detail}") from None


def check_tracking_uri(tracking_uri: str) -> None:
    """What can be told of a tracking URI before the writer opens it: a :class:`CLIError` for an SQLite file
    whose folder does not exist (MLflow would fail with "unable to open database file")."""
    from bench.tracking.store_lock import sqlite_file

    db = sqlite_file(tracking_uri)
    if db is not None and not db.expanduser().parent.is_dir():
        raise CLIError(f"tracking store {redact(tracking_uri)}: folder {db.expanduser().parent} does not exist")
