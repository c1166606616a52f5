"""What a study keeps: its best trial's logged model registered under the study's name, alias ``best``.

``neg-elbo`` studies register their best feasible COMPLETE trial; ``rate-distortion`` studies register
every trial on the Pareto front of the feasible trials, ``best`` on the one of lowest ``val_neg_elbo``.
A trial whose model leaves its latent unused is infeasible (:mod:`studies.feasibility`) and never
registered; a study without a feasible trial registers nothing (the study's notes say why). Each invocation registers
what is not registered yet (a model is never registered twice) and moves ``best`` when a better
trial has appeared. Model versions carry the trial number, the study, its ``val_neg_elbo`` and what
made it feasible (``val_kl``, ``val_active_units``).

A tracking server that does not answer does not fail the study: the registration is reported as a
note, and rerunning the same command (it runs no trial once the study is full) registers it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from bench.tracking import redact_url
from bench.tracking.logged_model import MODEL_ID_TAG, find_run_model, version_model_id
from studies.feasibility import completed, is_feasible
from studies.spec import StudySpec

ALIAS = "best"


@dataclass
class Registration:
    """What :func:`register_study_models` did: the registered name, each trial's version, the alias."""

    name: str
    versions: dict[int, str] = field(default_factory=dict)  # trial number -> model version
    best_trial: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def best_uri(self) -> str | None:
        """``models:/NAME@best`` once the alias is set."""
        return f"models:/{self.name}@{ALIAS}" if self.best_trial is not None else None

    def uri(self, trial_number: int) -> str:
        """``models:/NAME/VERSION`` of a registered trial ('' if it is not registered)."""
        version = self.versions.get(trial_number)
        return f"models:/{self.name}/{version}" if version else ""


def trials_to_register(study: optuna.Study, objective_names: tuple[str, ...]) -> tuple[list[FrozenTrial], FrozenTrial | None]:
    """(the trials to register, the one to alias ``best``), among the feasible trials only
    (:mod:`studies.feasibility`): the best one, or the Pareto front of the feasible trials with ``best``
    on the lowest ``val_neg_elbo``. No feasible trial: nothing."""
    feasible, _ = completed(study)
    if not feasible:
        return [], None
    if len(objective_names) == 1:
        best = min(feasible, key=lambda t: t.value)
        return [best], best
    front = [t for t in study.best_trials if is_feasible(t)]  # Optuna's front skips infeasible trials already
    best = min(front, key=lambda t: t.user_attrs.get("val_neg_elbo", sum(t.values)))
    return sorted(front, key=lambda t: t.number), best


def register_study_models(client: Any, study: optuna.Study, spec: StudySpec) -> Registration:
    """Register the study's models (see the module docstring); never raises for the tracking store."""
    name = spec.registered_model or spec.name
    registration = Registration(name=name)
    trials, best = trials_to_register(study, spec.objective_names)
    if not trials:
        return registration
    try:
        _register(client, name, trials, best, spec, registration)
    except Exception as exc:  # noqa: BLE001 -- the study's trials are kept whatever the registry does
        detail = redact_url(" ".join(str(exc).split()))[:200]
        registration.notes.append(f"could not register the study's models as {name!r} ({type(exc).__name__}: "
                                  f"{detail}); rerun the same command once the tracking server answers: "
                                  "it registers them then")
    return registration


def _register(client: Any, name: str, trials: list[FrozenTrial], best: FrozenTrial, spec: StudySpec,
              registration: Registration) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, tags={"study_name": spec.name, "variant": spec.variant,
                                                   "dataset": spec.dataset},
                                       description=f"Best trials of the cvae-bench study {spec.name!r}")
    registered = {version_model_id(v): v.version for v in client.search_model_versions(f"name='{name}'")}
    for trial in trials:
        run_id = trial.user_attrs.get("mlflow_run_id")
        model = find_run_model(client, run_id) if run_id and not run_id.startswith("local-") else None
        if model is None:
            registration.notes.append(f"trial {trial.number} has no logged model to register (trained with "
                                      "--no-model, or its writes are still spooled: `cvae-bench sync`, then rerun)")
            continue
        version = registered.get(model.model_id)
        if version is None:
            mv = client.create_model_version(
                name, source=model.artifact_location, run_id=run_id, model_id=model.model_id,
                tags={MODEL_ID_TAG: model.model_id, "trial_number": str(trial.number), "study_name": spec.name,
                      "val_neg_elbo": f"{trial.user_attrs.get('val_neg_elbo', float('nan')):.4f}",
                      "val_kl": f"{trial.user_attrs.get('val_kl', float('nan')):.4f}",
                      "val_active_units": f"{trial.user_attrs.get('val_active_units', float('nan')):.0f}"})
            version = mv.version
            _link_version(client, model, name, str(version))
        registration.versions[trial.number] = str(version)
    if best.number in registration.versions:
        client.set_registered_model_alias(name, ALIAS, registration.versions[best.number])
        registration.best_trial = best.number


def _link_version(client: Any, model: Any, name: str, version: str) -> None:
    """Name the version on the logged model (the ``mlflow.modelVersions`` tag ``mlflow.register_model``
    writes), so that the UI's Models tab shows where each model is registered."""
    import json

    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    versions = json.loads(model.tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    entry = {"name": name, "version": version}
    if entry not in versions:
        client.set_logged_model_tags(model.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*versions, entry])})
