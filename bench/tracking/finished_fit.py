"""Logging a fit through any :class:`Tracker`, in the two steps a fit offers: :func:`log_trained` once
its last epoch is done (``fit(on_trained=...)``: ``train_seconds``, figures, the model, PENDING),
:func:`log_fit` once its test metrics are computed (linked to that model, which becomes READY)."""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from bench.tracking.base import NullTracker, Tracker

if TYPE_CHECKING:
    from bench.training.loop import FitResult


def _last_epoch(result: "FitResult") -> int:
    """The step of a fit's final metrics, ``train_seconds`` and model output: its last epoch (0: none)."""
    return int(result.history[-1]["epoch"]) if result.history else 0


def log_trained(tracker: Tracker, result: "FitResult", *, log_model: bool = True, params: Mapping[str, Any] = (),
                tags: Mapping[str, Any] = (), datasets: Sequence[Mapping[str, str]] = ()) -> None:
    """What a fit has once its last epoch is done, before its test metrics: ``train_seconds`` (at the last
    epoch), the figures (computed here from the model, which is left as it was, and drawn by the tracker)
    and, with ``log_model``, the trained CVAE as a logged model of the run, PENDING until :func:`log_fit`.
    ``params``/``tags``: the model's (the run's configuration, say); its metrics will be linked to the
    test split of ``datasets`` (:func:`bench.tracking.dataset_inputs.dataset_inputs`). A tracker that writes
    elsewhere (the writer process) writes all this while the test metrics are computed."""
    if isinstance(tracker, NullTracker):
        return
    import torch

    from bench.figures.compute import fit_figure_data
    from bench.tracking.logged_model import pip_requirements
    from models.saved_model import save

    step = _last_epoch(result)
    tracker.log_metrics({"train_seconds": result.train_seconds}, step=step)
    tracker.log_figures(fit_figure_data(result))
    if not log_model:
        return
    folder = save(result.model, tempfile.mkdtemp(prefix="cvae-bench-saved-"), result.data.class_names)
    test = next((d for d in datasets if d.get("context") == "test"), None)
    tracker.log_model(str(folder), step=step, metrics=None, params={str(k): str(v) for k, v in dict(params).items()},
                      tags={str(k): str(v) for k, v in dict(tags).items()},
                      requirements=pip_requirements(torch.__version__),
                      dataset={"name": test["name"], "digest": test["digest"]} if test else None)


def log_fit(tracker: Tracker, result: "FitResult", *, log_model: bool = True) -> None:
    """``result``'s final test metrics, after :func:`log_trained` (the same ``log_model``): linked to the
    pending model, which makes them the run's metrics too (written once), or without a model logged as
    the run's metrics at its last epoch."""
    if isinstance(tracker, NullTracker):
        return
    if log_model:
        tracker.log_model_metrics(result.final)
    else:
        tracker.log_metrics(result.final, step=_last_epoch(result))
