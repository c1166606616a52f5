"""Links into the MLflow UI, in its model-training view (``?workflowType=machine_learning`` on the hash
route: the UI opens in its GenAI view otherwise). A store that is not a server is linked at the address
``mlflow ui --backend-store-uri URI`` serves by default. Passwords are masked: links are shown, never
followed here.
"""

from __future__ import annotations

from urllib.parse import quote

from bench.tracking.redaction import redact_url

#: The query that selects the model-training view.
TRAINING_VIEW = "workflowType=machine_learning"
#: Where ``mlflow ui`` serves by default.
LOCAL_UI = "http://127.0.0.1:5000"


def ui_base(tracking_uri: str) -> str:
    """The UI's address: the tracking server itself, else :data:`LOCAL_UI`."""
    if tracking_uri.startswith(("http://", "https://")):
        return redact_url(tracking_uri).rstrip("/")
    return LOCAL_UI


def ui_link(tracking_uri: str, route: str) -> str:
    """The UI page ``route`` (``/experiments/1``, hash-router path) in the model-training view."""
    return f"{ui_base(tracking_uri)}/#{route}?{TRAINING_VIEW}"


def ui_hint(tracking_uri: str) -> str:
    """How a user opens the UI on ``tracking_uri``, in its model-training view: the server's page, or the
    ``mlflow ui`` command for a store that is not a server."""
    experiments = ui_link(tracking_uri, "/experiments")
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {experiments} in a browser"
    return f"mlflow ui --backend-store-uri {redact_url(tracking_uri)}, then open {experiments}"


def run_link(tracking_uri: str, run_id: str, experiment_id: str) -> str:
    """A run's page. (The UI's shorter ``#/runs/<id>`` finds the experiment, but its redirect drops the
    query: the page opens in the GenAI view.)"""
    return ui_link(tracking_uri, f"/experiments/{experiment_id}/runs/{run_id}")


def registered_model_link(tracking_uri: str, name: str, version: str | None = None) -> str:
    """A registered model's page, or one of its versions (the schema of its inputs and outputs)."""
    route = f"/models/{quote(name, safe='')}"
    return ui_link(tracking_uri, route if version is None else f"{route}/versions/{version}")
