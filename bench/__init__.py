"""The harness: data, training, evaluation, figures, tracking, timing, gates and the bench commands.

This module is the face other layers import from (``from bench import fit, load_dataset``). Names load
on first use, so that importing a command for its ``--help`` costs neither torch nor MLflow.

Packages (each imports only the ones before it): ``data`` <- ``evaluation`` <- ``training`` <-
``figures`` <- ``tracking`` <- ``timing``, ``gates`` <- ``cli``; ``errors`` is the one user-facing error.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bench.errors import CLIError

if TYPE_CHECKING:
    from bench.data import DATASETS, DatasetError, DataSplits, Split, load_dataset
    from bench.evaluation import EPOCH_METRICS, FINAL_METRICS, collapse_note
    from bench.tracking import (
        NullTracker,
        RunHandle,
        Tracker,
        TrackingWriter,
        environment_tags,
        log_fit,
        resolve_tracking_uri,
        ui_hint,
    )
    from bench.training import (
        FitResult,
        NonFiniteLossError,
        TrainConfig,
        check_variant,
        fit,
        model_config,
        resolve_device,
    )

_FACE = {
    "bench.data": ("DATASETS", "DatasetError", "DataSplits", "Split", "load_dataset"),
    "bench.evaluation": ("EPOCH_METRICS", "FINAL_METRICS", "collapse_note"),
    "bench.training": ("FitResult", "NonFiniteLossError", "TrainConfig", "check_variant", "fit", "model_config",
                       "resolve_device"),
    "bench.tracking": ("NullTracker", "RunHandle", "Tracker", "TrackingWriter", "environment_tags", "log_fit",
                       "resolve_tracking_uri", "ui_hint"),
}
_WHERE = {name: module for module, names in _FACE.items() for name in names}

__all__ = ["CLIError", *_WHERE]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
