"""Collapse-aware selection: a completed trial whose model does not use its latent is infeasible.

At the end of each completed trial, :func:`judge_trial` measures the model on the validation split
(its active units; ``val_kl`` is the last epoch's) and records the criterion of
:func:`bench.evaluation.posterior_collapse.latent_constraints` as the trial's Optuna constraints
(``trial.set_constraint``: Optuna 5's successor of the samplers' ``constraints_func``). From then on
Optuna itself keeps infeasible trials out of what it calls best: TPE, NSGA-II and the GP sampler
rank them below every feasible trial when they sample, ``study.best_trial`` and ``study.best_trials``
(the rate-distortion front) skip them. Everything here that selects -- :func:`best_trial` (the
study's summary, the suite's table, the parent run's ``best_*`` metrics), the registry's ``@best`` --
chooses among feasible trials only, and :func:`selection_note` says how many were left out.

The test split plays no part in selection: it stays held out for the final metrics.
A pruned trial gets no constraints (it was stopped before its model was judged), nor does a trial of
a study made before this criterion existed: both count as feasible.
"""

from __future__ import annotations

from typing import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

#: The trial system attribute of constraints as a list (``constraints_func``'s format).
LEGACY_CONSTRAINTS_KEY = "constraints"


def judge_trial(trial: optuna.Trial, model, data, val_kl: float) -> str | None:
    """Measure whether ``model`` (the trial's trained CVAE) uses its latent on ``data.val`` and record it
    on ``trial``: its constraints, the user attribute ``val_active_units`` and, when infeasible,
    ``infeasible_reason``. Returns that reason (None: feasible). ``val_kl``: nats per example, beta = 1."""
    from bench.evaluation import active_units, latent_constraints, latent_unused_reason

    units = float(active_units(model, data.val))
    trial.set_user_attr("val_active_units", units)
    constraints = latent_constraints(units, val_kl)
    for key, value in constraints.items():
        trial.set_constraint(key, value)
    # optuna-dashboard (0.21) reads only the unnamed list that the samplers' constraints_func wrote
    # (Optuna reads both): the same values under that key, so that it greys the trial out too.
    trial.storage.set_trial_system_attr(trial._trial_id, LEGACY_CONSTRAINTS_KEY, list(constraints.values()))
    reason = latent_unused_reason(units, val_kl)
    if reason is not None:
        trial.set_user_attr("infeasible_reason", f"{reason} on the validation split")
    return reason


def is_feasible(trial: FrozenTrial) -> bool:
    """Every constraint value ``<= 0`` (a trial with none -- pruned, or from an older study -- is feasible)."""
    return all(value <= 0 for value in trial.constraints.values())


def completed(study: optuna.Study) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """The study's COMPLETE trials: (feasible, infeasible)."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    feasible = [t for t in trials if is_feasible(t)]
    return feasible, [t for t in trials if not is_feasible(t)]


def best_trial(study: optuna.Study, objective_names: Sequence[str]) -> FrozenTrial | None:
    """The feasible completed trial of lowest val -ELBO (rate-distortion: lowest val_recon + val_kl);
    None when no completed trial is feasible."""
    feasible, _ = completed(study)
    if not feasible:
        return None
    if len(objective_names) == 1:
        return min(feasible, key=lambda t: t.value)
    return min(feasible, key=lambda t: sum(t.values))


def record_selection(study: optuna.Study, objective_names: Sequence[str]) -> None:
    """Keep the selection in the study's user attributes, where optuna-dashboard shows them (its Best
    Trial card ignores constraints): ``best_feasible_trial`` (-1: none) and ``infeasible_trials``."""
    best = best_trial(study, objective_names)
    selection = {"best_feasible_trial": best.number if best is not None else -1,
                 "infeasible_trials": len(completed(study)[1])}
    for key, value in selection.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)


def selection_note(study: optuna.Study) -> str | None:
    """One line on the trials selection left out (None when every completed trial is feasible)."""
    feasible, infeasible = completed(study)
    if not infeasible:
        return None
    total = len(feasible) + len(infeasible)
    why = _common_reasons(infeasible)
    if not feasible:
        return (f"no feasible trial: every completed trial ({total}) leaves the latent unused ({why}); "
                "none is selected or registered")
    return (f"{len(infeasible)} of {total} completed trials infeasible ({why}): "
            f"the best is chosen among the other {len(feasible)}")


def _common_reasons(trials: Sequence[FrozenTrial]) -> str:
    """``no active latent unit: 3, KL under one bit: 2``: how many infeasible trials fail each test."""
    counts = {"no active latent unit": 0, "KL under one bit": 0}
    for trial in trials:
        constraints = trial.constraints
        if constraints.get("active_units_missing", 0) > 0:
            counts["no active latent unit"] += 1
        if constraints.get("kl_below_floor", 0) > 0:
            counts["KL under one bit"] += 1
    return ", ".join(f"{name}: {n}" for name, n in counts.items() if n)
