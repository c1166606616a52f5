"""The one function that logs a finished fit: final metrics and figures, through any :class:`Tracker`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.tracking.base import NullTracker, Tracker

if TYPE_CHECKING:
    from bench.training.loop import FitResult


def log_fit(tracker: Tracker, result: "FitResult") -> None:
    """``result``'s final test metrics and ``train_seconds`` (``step`` = last epoch), then its figures
    (computed here, in the training process; drawn by the tracker, which may be another process)."""
    if isinstance(tracker, NullTracker):
        return
    from bench.figures.compute import fit_figure_data

    step = int(result.history[-1]["epoch"]) if result.history else 0
    tracker.log_metrics({**result.final, "train_seconds": result.train_seconds}, step=step)
    tracker.log_figures(fit_figure_data(result))
