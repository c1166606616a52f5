"""MLflow's environment defaults for this harness, set by one explicit call (never on import)."""

from __future__ import annotations

import os


def configure_mlflow_environment() -> None:
    """Set the MLflow environment this harness relies on; a user's own values of all but the last win.

    - ``MLFLOW_DISABLE_TELEMETRY``: nothing is sent anywhere (machines here are offline).
    - ``MLFLOW_HTTP_REQUEST_*``: fail fast on an unreachable server -- the spool
      (:mod:`bench.tracking.spool`), not MLflow's own minutes-long HTTP retry loop, keeps training going.
    - ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``: off; ``sample``/``evaluate`` download a model's ~20 small
      files, a bar per call is noise.
    - ``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``: MLflow prints "View run ... at <tracking URL>" when a
      run ends on a server, and that URL may hold a password. Always set.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
