"""The one function that logs a finished fit: final metrics, figures and the trained model, through
any :class:`Tracker` (:func:`log_fit`). A fit's figures and model exist before its test metrics:
:func:`log_trained` logs them then (``fit(on_trained=...)``), and :func:`log_fit` the rest."""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from bench.tracking.base import NullTracker, Tracker

if TYPE_CHECKING:
    from bench.training.loop import FitResult


def _last_epoch(result: "FitResult") -> int:
    """The step of a fit's final metrics, ``train_seconds`` and model output: its last epoch (0: none)."""
    return int(result.history[-1]["epoch"]) if result.history else 0


def log_fit_figures(tracker: Tracker, result: "FitResult") -> None:
    """``result``'s figures: computed here, in the training process (the model and the RNGs are left
    as they were), drawn by the tracker (which may be another process). Needs no final metrics."""
    if isinstance(tracker, NullTracker):
        return
    from bench.figures.compute import fit_figure_data

    tracker.log_figures(fit_figure_data(result))


def log_trained(tracker: Tracker, result: "FitResult", *, log_model: bool = True, params: Mapping[str, Any] = (),
                tags: Mapping[str, Any] = (), datasets: Sequence[Mapping[str, str]] = ()) -> None:
    """What a fit has once its last epoch is done, before its test metrics: ``train_seconds``, the
    figures and, with ``log_model``, the trained model, written now and PENDING until :func:`log_fit`
    (``trained=True``) links its metrics. ``fit(on_trained=...)`` calls it, so a tracker that writes
    elsewhere (the tracking process) writes them while the test metrics are computed."""
    if isinstance(tracker, NullTracker):
        return
    step = _last_epoch(result)
    tracker.log_metrics({"train_seconds": result.train_seconds}, step=step)
    log_fit_figures(tracker, result)
    if log_model:
        log_fit_model(tracker, result, params=params, tags=tags, datasets=datasets, pending=True)


def log_fit(tracker: Tracker, result: "FitResult", *, log_model: bool = True, params: Mapping[str, Any] = (),
            tags: Mapping[str, Any] = (), datasets: Sequence[Mapping[str, str]] = (), trained: bool = False) -> None:
    """``result``'s final test metrics and ``train_seconds`` (``step`` = last epoch), its figures
    (:func:`log_fit_figures`) and, with ``log_model``, the trained CVAE as a logged model of the run,
    the final metrics linked to it and to the test split of ``datasets``
    (:func:`bench.tracking.dataset_inputs.dataset_inputs`). ``params``/``tags`` are the logged
    model's (the run's configuration, say). ``trained``: :func:`log_trained` logged ``train_seconds``,
    the figures and the pending model already; what is left is the test metrics."""
    if isinstance(tracker, NullTracker):
        return
    step = _last_epoch(result)
    if trained:  # with a model, the metrics linked to it are the run's too: written once
        if log_model:
            tracker.log_model_metrics(result.final)
        else:
            tracker.log_metrics(result.final, step=step)
        return
    tracker.log_metrics({**result.final, "train_seconds": result.train_seconds}, step=step)
    log_fit_figures(tracker, result)
    if log_model:
        log_fit_model(tracker, result, params=params, tags=tags, datasets=datasets)


def log_fit_model(tracker: Tracker, result: "FitResult", *, params: Mapping[str, Any] = (),
                  tags: Mapping[str, Any] = (), datasets: Sequence[Mapping[str, str]] = (),
                  pending: bool = False) -> None:
    """The trained CVAE of ``result`` as a logged model of the run, its final metrics linked to it and
    to the test split of ``datasets`` (what :func:`log_fit` does with ``log_model``); ``pending``: the
    metrics come later (:meth:`Tracker.log_model_metrics`)."""
    if isinstance(tracker, NullTracker):
        return
    import torch

    from bench.tracking.logged_model import pip_requirements
    from models.saved_model import save

    step = _last_epoch(result)
    folder = save(result.model, tempfile.mkdtemp(prefix="cvae-bench-saved-"), result.data.class_names)
    test = next((d for d in datasets if d.get("context") == "test"), None)
    tracker.log_model(str(folder), step=step, metrics=None if pending else result.final,
                      params={str(k): str(v) for k, v in dict(params).items()},
                      tags={str(k): str(v) for k, v in dict(tags).items()},
                      requirements=pip_requirements(torch.__version__),
                      dataset={"name": test["name"], "digest": test["digest"]} if test else None)
