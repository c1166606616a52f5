"""What a study's parent run gets at the end: Optuna's plots (matplotlib, PNG) and the trials table.

- ``study/optimization_history[_<objective>].png``: objective value per trial, best so far;
- ``study/param_importances.png``: needs at least two completed trials (skipped otherwise);
- ``study/rate_distortion.png`` (``rate-distortion`` studies): val_kl (rate) against val_recon
  (distortion) of every completed trial, the Pareto front highlighted;
- ``study/trials.csv``: :meth:`optuna.Study.trials_dataframe`.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # Optuna's plots go through pyplot; never open a window, work from any thread

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from optuna.visualization import matplotlib as optuna_plots  # noqa: E402

UNITS = " (nats)"


def trials_table(study: optuna.Study, objective_names: Sequence[str]) -> Any:
    """``study.trials_dataframe()`` with the value columns named after the objectives (``value``,
    ``values_i``, or ``value(s)_<name>`` once the study has metric names), and ``feasible``: whether
    a completed trial's model uses its latent (:mod:`studies.feasibility`; empty for other states)."""
    from studies.feasibility import is_feasible

    frame = study.trials_dataframe()
    if frame.empty:
        return frame
    names = {"value": objective_names[0]} if len(objective_names) == 1 else {}
    for i, name in enumerate(objective_names):
        names.update({f"values_{i}": name, f"value_{name}": name, f"values_{name}": name})
    frame = frame.rename(columns=names)
    trials = study.get_trials(deepcopy=False)
    frame.insert(frame.columns.get_loc("state") + 1, "feasible",
                 [is_feasible(t) if t.state == TrialState.COMPLETE else None for t in trials])
    return frame


def _log_axes(tracker: Any, axes: Any, artifact_file: str) -> None:
    fig = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
    fig.set_size_inches(8, 5)
    fig.tight_layout()
    try:
        tracker.log_figure(fig, artifact_file)
    finally:
        plt.close(fig)


def log_study_artifacts(tracker: Any, study: optuna.Study, objective_names: Sequence[str]) -> list[str]:
    """Log the plots and the trials table to ``tracker``; returns notes on what was skipped."""
    notes: list[str] = []
    tracker.log_text(trials_table(study, objective_names).to_csv(index=False), "study/trials.csv")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return ["no completed trial: no plots"]
    # Optuna's plots switch pyplot to the ggplot style for good: rc_context restores the settings.
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # PedAnova notes that it ranks params for *low* values: what minimised objectives want.
        warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes", category=UserWarning)
        if len(objective_names) == 1:
            ax = optuna_plots.plot_optimization_history(study, target_name=objective_names[0] + UNITS)
            _log_axes(tracker, ax, "study/optimization_history.png")
        else:
            for i, name in enumerate(objective_names):
                ax = optuna_plots.plot_optimization_history(study, target=lambda t, i=i: t.values[i],
                                                            target_name=name + UNITS)
                _log_axes(tracker, ax, f"study/optimization_history_{name}.png")
        if len(complete) >= 2:
            try:
                _log_axes(tracker, optuna_plots.plot_param_importances(study), "study/param_importances.png")
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                notes.append(f"parameter importances skipped: {exc}")
        else:
            notes.append("parameter importances skipped: need at least 2 completed trials")
        if tuple(objective_names) == ("val_recon", "val_kl"):
            ax = optuna_plots.plot_pareto_front(
                study, targets=lambda t: (t.values[1], t.values[0]),
                target_names=["val_kl: rate" + UNITS, "val_recon: distortion" + UNITS])
            ax.set_title("rate-distortion: Pareto front of the trials")
            _log_axes(tracker, ax, "study/rate_distortion.png")
    return notes
