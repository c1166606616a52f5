"""The one function that logs a finished fit: final metrics, figures and the trained model, through
any :class:`Tracker` (:func:`log_fit`; :func:`log_fit_figures` logs the figures on their own, earlier)."""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from bench.tracking.base import NullTracker, Tracker

if TYPE_CHECKING:
    from bench.training.loop import FitResult


def log_fit_figures(tracker: Tracker, result: "FitResult") -> None:
    """``result``'s figures: computed here, in the training process (the model and the RNGs are left
    as they were), drawn by the tracker (which may be another process). Needs no final metrics:
    ``fit(on_trained=...)`` may call it before they are computed."""
    if isinstance(tracker, NullTracker):
        return
    from bench.figures.compute import fit_figure_data

    tracker.log_figures(fit_figure_data(result))


def log_fit(tracker: Tracker, result: "FitResult", *, log_model: bool = True, params: Mapping[str, Any] = (),
            tags: Mapping[str, Any] = (), datasets: Sequence[Mapping[str, str]] = (), figures: bool = True) -> None:
    """``result``'s final test metrics and ``train_seconds`` (``step`` = last epoch), its figures
    (:func:`log_fit_figures`; ``figures=False``: they were logged already) and, with ``log_model``,
    the trained CVAE as a logged model of the run, the final metrics linked to it and to the test
    split of ``datasets`` (:func:`bench.tracking.dataset_inputs.dataset_inputs`).
    ``params``/``tags`` are the logged model's (the run's configuration, say)."""
    if isinstance(tracker, NullTracker):
        return
    step = int(result.history[-1]["epoch"]) if result.history else 0
    final = {**result.final, "train_seconds": result.train_seconds}
    tracker.log_metrics(final, step=step)
    if figures:
        log_fit_figures(tracker, result)
    if log_model:
        log_fit_model(tracker, result, params=params, tags=tags, datasets=datasets)


def log_fit_model(tracker: Tracker, result: "FitResult", *, params: Mapping[str, Any] = (),
                  tags: Mapping[str, Any] = (), datasets: Sequence[Mapping[str, str]] = ()) -> None:
    """The trained CVAE of ``result`` as a logged model of the run, its final metrics linked to it and
    to the test split of ``datasets`` (what :func:`log_fit` does with ``log_model``)."""
    if isinstance(tracker, NullTracker):
        return
    import torch

    from bench.tracking.logged_model import pip_requirements
    from models.saved_model import save

    step = int(result.history[-1]["epoch"]) if result.history else 0
    folder = save(result.model, tempfile.mkdtemp(prefix="cvae-bench-saved-"), result.data.class_names)
    test = next((d for d in datasets if d.get("context") == "test"), None)
    tracker.log_model(str(folder), step=step, metrics=result.final,
                      params={str(k): str(v) for k, v in dict(params).items()},
                      tags={str(k): str(v) for k, v in dict(tags).items()},
                      requirements=pip_requirements(torch.__version__),
                      dataset={"name": test["name"], "digest": test["digest"]} if test else None)
