"""The one way to open an MLflow tracking store: its URI, a client, an experiment.

Commands that track pay for MLflow's import (~1 s) only when they open a store: nothing here
imports it at module level.
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

    from bench.tracking.spool import ResilientClient

#: MLflow's own default since 3.7; the retired file store (``./mlruns``) is never used.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: The experiment tag that makes the MLflow UI show an experiment as model training (not GenAI).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


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


def open_experiment(tracking_uri: str, experiment: str) -> tuple["ResilientClient", str]:
    """A spooling client (:class:`bench.tracking.spool.ResilientClient`) on ``tracking_uri`` and the
    id of ``experiment`` (created if needed).

    The store must answer now: an unreachable or unusable tracking store is a one-line
    :class:`CLIError` (password masked). Later outages are spooled, not raised.
    """
    from mlflow.exceptions import MlflowException

    from bench.tracking.spool import ResilientClient

    try:
        client = ResilientClient(tracking_uri, client=make_client(tracking_uri))
        return client, experiment_id(client, experiment)
    except (MlflowException, OSError) as exc:
        detail = redact(" ".join(str(exc).split()))[:300]
        raise CLIError(f"tracking store {redact(tracking_uri)}: {detail}") from None


def experiment_id(client: "ResilientClient | MlflowClient", name: str) -> str:
    """Id of the experiment ``name``, created (or restored, if deleted) when needed, and tagged as a
    model-training experiment (:data:`EXPERIMENT_KIND`: the MLflow UI then opens its training view).

    Needs the store to answer: experiments are not spooled.
    """
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, tags=dict([EXPERIMENT_KIND]))
        except MlflowException:  # another process created it between the two calls
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    if experiment.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
    return experiment.experiment_id
