"""MLflow tracking: the :class:`Tracker` interface and its three implementations, the store, the spool.

- :class:`Tracker` (``base``): what the harness talks to; :class:`NullTracker` records nothing.
- :class:`RunTracker` (``run_tracker``): one MLflow run written from this process.
- :class:`TrackingProcess` (``process``): the same run written from a child process (``train``).
- ``store``: the one way to open a tracking store; ``spool``: writes that survive an outage;
  ``store_lock``: locks that live in a store (its SQLite file, its database server);
  ``environment``: what a run records about where it ran; ``redaction``: no password is logged;
  :func:`log_fit`: the one function that logs a finished fit.

Nothing here imports MLflow until a store is opened.
"""

from bench.tracking.base import RUN_STATUSES, NullTracker, Tracker
from bench.tracking.environment import config_params, device_name, environment_tags, git_commit, run_tags
from bench.tracking.finished_fit import log_fit, log_fit_figures, log_fit_model, log_trained
from bench.tracking.logged_model import load_logged_model, resolve_model
from bench.tracking.mlflow_env import configure_mlflow_environment
from bench.tracking.process import TrackingError, TrackingProcess, TrackingStoreError
from bench.tracking.redaction import redact_url
from bench.tracking.run_tracker import MAX_TAG_LENGTH, RunTracker
from bench.tracking.spool import (
                                  LOCAL_PREFIX,
                                  MAX_METRICS_PER_BATCH,
                                  MAX_PARAMS_PER_BATCH,
                                  MAX_TAGS_PER_BATCH,
                                  ResilientClient,
                                  default_spool_dir,
                                  is_transient,
                                  sync_spool,
)
from bench.tracking.store import (
                                  DEFAULT_TRACKING_URI,
                                  experiment_id,
                                  make_client,
                                  open_experiment,
                                  redact,
                                  resolve_tracking_uri,
                                  ui_hint,
)
from bench.tracking.store_lock import sqlite_file

__all__ = ["DEFAULT_TRACKING_URI", "LOCAL_PREFIX", "MAX_METRICS_PER_BATCH", "MAX_PARAMS_PER_BATCH",
           "MAX_TAGS_PER_BATCH", "MAX_TAG_LENGTH", "RUN_STATUSES", "NullTracker", "ResilientClient", "RunTracker",
           "Tracker", "TrackingError", "TrackingProcess", "TrackingStoreError", "config_params",
           "configure_mlflow_environment", "default_spool_dir", "device_name", "environment_tags",
           "experiment_id", "git_commit", "is_transient", "load_logged_model", "log_fit", "log_fit_figures", "log_fit_model", "log_trained", "make_client",
           "open_experiment", "redact",
           "redact_url", "resolve_model", "resolve_tracking_uri", "run_tags", "sqlite_file", "sync_spool", "ui_hint"]
