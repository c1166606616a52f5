"""MLflow tracking: the :class:`Tracker` interface, the one writer every run goes through, the stores.

- :class:`Tracker` (``base``): what the harness talks to; :class:`NullTracker` records nothing.
- :class:`TrackingWriter` (``writer``): the writer process of a command; :class:`RunHandle`, a run
  written through it (the Tracker of ``train``, of every trial and of a study's parent run).
- ``ops``: the writes as records and how each reaches a store; ``spool``: records that wait for an
  unreachable store, and ``cvae-bench sync``; ``store``: naming and opening a store;
  ``store_lock``: locks that live in a store; ``logged_model``: a trained CVAE as an MLflow logged
  model; ``checkpoints``: a fit's checkpoints, local and as artifacts; ``environment``: what a run
  records about where it ran; ``redaction``: no password is logged; :func:`log_trained` and
  :func:`log_fit`: logging a fit.

Nothing here imports MLflow: only the writer process and the readers (:func:`make_client`) do.
"""

from bench.tracking.base import RUN_STATUSES, NullTracker, Tracker
from bench.tracking.environment import config_params, device_name, environment_tags, git_commit, run_tags
from bench.tracking.finished_fit import log_fit, log_trained
from bench.tracking.logged_model import load_logged_model, resolve_model
from bench.tracking.mlflow_env import configure_mlflow_environment
from bench.tracking.ops import LOCAL_PREFIX, RUN_KEY_TAG, is_transient
from bench.tracking.redaction import redact_url
from bench.tracking.spool import default_spool_dir
from bench.tracking.store import DEFAULT_TRACKING_URI, check_tracking_uri, make_client, resolve_tracking_uri
from bench.tracking.store_lock import sqlite_file
from bench.tracking.ui_links import ui_hint
from bench.tracking.writer import (
                                   FLUSH_BOUND_S,
                                   MAX_TAG_LENGTH,
                                   RunHandle,
                                   TrackingError,
                                   TrackingStoreError,
                                   TrackingWriter,
                                   is_local,
)

__all__ = ["DEFAULT_TRACKING_URI", "FLUSH_BOUND_S", "LOCAL_PREFIX", "MAX_TAG_LENGTH", "RUN_KEY_TAG", "RUN_STATUSES",
           "NullTracker", "RunHandle", "Tracker", "TrackingError", "TrackingStoreError", "TrackingWriter",
           "check_tracking_uri", "config_params", "configure_mlflow_environment", "default_spool_dir", "device_name",
           "environment_tags", "git_commit", "is_local", "is_transient", "load_logged_model", "log_fit",
           "log_trained", "make_client", "redact_url", "resolve_model",
           "resolve_tracking_uri", "run_tags", "sqlite_file", "ui_hint"]
