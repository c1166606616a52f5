"""Collapse-aware selection: infeasible trials are never the best, never registered, and counted."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from bench.evaluation.posterior_collapse import KL_FLOOR, latent_constraints
from studies.feasibility import best_trial, completed, is_feasible, judge_trial, selection_note
from studies.registry import register_study_models, trials_to_register
from studies.spec import StudySpec


def judged(value, units: float, kl: float, state=TrialState.COMPLETE, values=None):
    """A finished trial whose model had ``units`` active units and KL ``kl`` (nats) on the validation split."""
    attrs = {f"constraints:{k}": v for k, v in latent_constraints(units, kl).items()}
    return create_trial(state=state, value=value if values is None else None, values=values,
                        params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                        user_attrs={"val_kl": kl, "val_neg_elbo": value or sum(values)}, system_attrs=attrs)


def test_the_latent_criterion_is_one_active_unit_and_one_bit():
    assert latent_constraints(2, 1.0) == {"active_units_missing": -1.0, "kl_below_floor": pytest.approx(KL_FLOOR - 1)}
    assert all(v > 0 for v in latent_constraints(0, 0.0).values())
    assert latent_constraints(3, 0.5)["kl_below_floor"] > 0  # units active, but under one bit
    assert latent_constraints(0, 5.0)["active_units_missing"] > 0  # KL spent on an input-independent posterior
    assert all(v > 0 for v in latent_constraints(math.nan, math.nan).values())
    assert KL_FLOOR == pytest.approx(math.log(2))


def test_best_trial_skips_infeasible_trials_however_good():
    study = optuna.create_study()
    study.add_trial(judged(20.0, units=0, kl=0.01))  # collapsed, and the lowest -ELBO
    study.add_trial(judged(21.0, units=2, kl=0.9))
    study.add_trial(judged(20.5, units=3, kl=0.4))  # active units, under one bit
    study.add_trial(judged(22.0, units=4, kl=1.5))
    assert best_trial(study, ("val_neg_elbo",)).number == 1
    assert study.best_trial.number == 1  # Optuna's own best_trial reads the same constraints
    feasible, infeasible = completed(study)
    assert [t.number for t in feasible] == [1, 3] and [t.number for t in infeasible] == [0, 2]
    note = selection_note(study)
    assert note == ("2 of 4 completed trials infeasible (no active latent unit: 1, KL under one bit: 2): "
                    "the best is chosen among the other 2")
    assert trials_to_register(study, ("val_neg_elbo",)) == ([study.trials[1]], study.trials[1])


def test_no_feasible_trial_selects_and_registers_nothing():
    study = optuna.create_study()
    study.add_trial(judged(20.0, units=0, kl=-0.015))
    study.add_trial(judged(21.0, units=0, kl=0.3))
    assert best_trial(study, ("val_neg_elbo",)) is None
    assert selection_note(study).startswith("no feasible trial: every completed trial (2) leaves the latent unused")

    class NoRegistry:  # any call to the registry fails the test
        def __getattr__(self, name):
            raise AssertionError(f"the registry was called: {name}")

    registration = register_study_models(NoRegistry(), study, StudySpec(study_name="s", trials=2, epochs=1))
    assert registration.versions == {} and registration.best_uri is None and registration.notes == []


def test_unjudged_trials_count_as_feasible():
    """Pruned trials (stopped before judging) and trials of a study made before the criterion."""
    study = optuna.create_study()
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=21.0, params={}, distributions={}))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={}, distributions={}, intermediate_values={1: 30.0}))
    assert all(is_feasible(t) for t in study.trials)
    assert selection_note(study) is None and best_trial(study, ("val_neg_elbo",)).number == 0


def test_rate_distortion_front_and_registry_exclude_infeasible_trials():
    study = optuna.create_study(directions=["minimize", "minimize"])
    study.add_trial(judged(None, units=0, kl=0.01, values=[22.0, 0.01]))  # least rate: on the plain front
    study.add_trial(judged(None, units=2, kl=1.0, values=[20.0, 1.0]))
    study.add_trial(judged(None, units=4, kl=1.5, values=[19.0, 1.5]))
    study.add_trial(judged(None, units=4, kl=2.5, values=[19.5, 2.5]))  # dominated
    assert sorted(t.number for t in study.best_trials) == [1, 2]
    trials, best = trials_to_register(study, ("val_recon", "val_kl"))
    assert [t.number for t in trials] == [1, 2] and best.number == 2  # lowest val_neg_elbo on the front
    assert best_trial(study, ("val_recon", "val_kl")).number == 2


def test_judge_trial_measures_the_validation_split_and_sets_the_constraints(digits):
    from bench.training.presets import model_config
    from models import CVAE

    torch.manual_seed(0)
    model = CVAE(model_config("cvae", digits, latent_dim=4))
    study = optuna.create_study()
    trial = study.ask()
    reason = judge_trial(trial, model, digits, val_kl=0.2)
    study.tell(trial, 25.0)
    frozen = study.trials[0]
    units = frozen.user_attrs["val_active_units"]
    assert 0 <= units <= 4
    named = latent_constraints(units, 0.2)
    assert frozen.system_attrs["constraints"] == pytest.approx(list(named.values()))  # what optuna-dashboard reads
    assert frozen.constraints == pytest.approx({**named, "0": named["active_units_missing"],
                                                "1": named["kl_below_floor"]})
    assert reason is not None and "KL 0.200 < 0.693 nats" in reason
    assert frozen.user_attrs["infeasible_reason"] == f"{reason} on the validation split"
    assert not is_feasible(frozen) and study.best_trials == []
