"""What a study keeps: its best trial's logged model registered under the study's name, alias ``best``.

``neg-elbo`` studies register their best feasible COMPLETE trial; ``rate-distortion`` studies register
every trial on the Pareto front of the feasible trials, ``best`` on the one of lowest ``val_neg_elbo``.
A trial whose model leaves its latent unused is infeasible (:mod:`studies.feasibility`) and never
registered; a study without a feasible trial registers nothing (the study's notes say why). Each invocation registers
what is not registered yet (a model is never registered twice) and moves ``best`` when a better
trial has appeared. Model versions carry the trial number, the study, its ``val_neg_elbo`` and what
made it feasible (``val_kl``, ``val_active_units``).

Registering is a write like any other, made by the invocation's writer process (the op ``register``
of :mod:`bench.tracking.ops`): a tracking server that does not answer does not fail the study; the
registration waits in the writer's spool, and is made when the server answers (``cvae-bench sync``,
or the next invocation, sends it). Runs recorded under a local id are found by their run key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import optuna
from optuna.trial import FrozenTrial

from bench.tracking import LOCAL_PREFIX
from studies.feasibility import completed, is_feasible
from studies.spec import StudySpec

ALIAS = "best"


@dataclass
class Registration:
    """What :func:`register_study_models` asked for and, once :meth:`collect` ed, what the store did: the
    registered name, each trial's version, the trial the alias points at."""

    name: str
    versions: dict[int, str] = field(default_factory=dict)  # trial number -> model version
    best_trial: int | None = None
    notes: list[str] = field(default_factory=list)
    asked: dict[int, int] = field(default_factory=dict)  # trial number -> the writer's token
    best_asked: int | None = None

    @property
    def best_uri(self) -> str | None:
        """``models:/NAME@best`` once the alias is set."""
        return f"models:/{self.name}@{ALIAS}" if self.best_trial is not None else None

    def uri(self, trial_number: int) -> str:
        """``models:/NAME/VERSION`` of a registered trial ('' if it is not registered)."""
        version = self.versions.get(trial_number)
        return f"models:/{self.name}/{version}" if version else ""

    def collect(self, writer: Any) -> "Registration":
        """Read the answers the writer has by now (after its flush or close); a note for what still waits."""
        waiting = []
        for number, token in self.asked.items():
            answered, version, error = writer.answer(token)
            if not answered:
                waiting.append(number)
            elif error:
                self.notes.append(f"trial {number} was not registered as {self.name!r}: {error}")
            else:
                self.versions[number] = str(version)
                if number == self.best_asked:
                    self.best_trial = number
        if waiting:
            self.notes.append(f"registering trial(s) {', '.join(map(str, waiting))} as {self.name!r} waits for the "
                              "tracking server: it completes when the server answers (`cvae-bench sync` sends what "
                              "this command leaves spooled)")
        self.asked = {}
        return self


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


def register_study_models(writer: Any, study: optuna.Study, spec: StudySpec) -> Registration:
    """Ask ``writer`` (a :class:`bench.tracking.TrackingWriter`) to register the study's models (see the module
    docstring); :meth:`Registration.collect` reads the outcome once the writer is flushed or closed.
    Never raises for the tracking store: what it has not answered by then stays queued (spooled while it is
    unreachable), and completes when it answers (``cvae-bench sync`` sends what is left spooled)."""
    name = spec.resolved_registered_model
    registration = Registration(name=name)
    trials, best = trials_to_register(study, spec.objective_names)
    trials = [t for t in trials if t.user_attrs.get("mlflow_run_id")]
    records = [{"op": "register", "name": name, "run_id": t.user_attrs["mlflow_run_id"],
                "alias": ALIAS if t is best else None,
                "version_tags": {"trial_number": str(t.number), "study_name": spec.name,
                                 "val_neg_elbo": f"{t.user_attrs.get('val_neg_elbo', float('nan')):.4f}",
                                 "val_kl": f"{t.user_attrs.get('val_kl', float('nan')):.4f}",
                                 "val_active_units": f"{t.user_attrs.get('val_active_units', float('nan')):.0f}"},
                "model_tags": {"study_name": spec.name, "variant": spec.variant, "dataset": spec.dataset},
                "description": f"Best trials of the cvae-bench study {spec.name!r}"} for t in trials]
    registration.asked = dict(zip((t.number for t in trials), writer.ask(records))) if records else {}
    registration.best_asked = best.number if best is not None and best in trials else None
    return registration


#: The study user attribute mapping local run ids (``local-...``) to the store's ids, once known.
RUN_IDS_ATTR = "mlflow_run_ids"


def record_run_ids(study: optuna.Study, ids: Mapping[str, str], parent: str | None = None) -> None:
    """Record the store's ids of the local ids this study's trials hold (``mlflow_run_id``, ``checkpoint_runs``):
    Optuna keeps a finished trial's attributes as they were, so the map is a study attribute
    (:data:`RUN_IDS_ATTR`, read by :func:`run_id_of`). ``parent``: this invocation's parent run, by local
    id: the study's ``mlflow_parent_run_id`` becomes its id in the store (a new parent, if the recorded one
    was gone)."""
    known = dict(study.user_attrs.get(RUN_IDS_ATTR, {}))
    recorded = {study.user_attrs.get("mlflow_parent_run_id")}
    for trial in study.get_trials(deepcopy=False):
        recorded |= {trial.user_attrs.get("mlflow_run_id"), *trial.user_attrs.get("checkpoint_runs", [])}
    new = {k: ids[k] for k in recorded if k in ids and known.get(k) != ids[k]}
    if new:
        study.set_user_attr(RUN_IDS_ATTR, {**known, **new})
    if parent in ids and study.user_attrs.get("mlflow_parent_run_id") != ids[parent]:
        study.set_user_attr("mlflow_parent_run_id", ids[parent])  # the store's id, or a new parent


def unresolved_run_ids(study: optuna.Study) -> list[str]:
    """The local ids the study's trials (and its parent) hold that :data:`RUN_IDS_ATTR` does not map yet."""
    known = study.user_attrs.get(RUN_IDS_ATTR, {})
    recorded = {study.user_attrs.get("mlflow_parent_run_id")}
    for trial in study.get_trials(deepcopy=False):
        recorded |= {trial.user_attrs.get("mlflow_run_id"), *trial.user_attrs.get("checkpoint_runs", [])}
    return sorted(r for r in recorded if r and r.startswith(LOCAL_PREFIX) and r not in known)


def run_id_of(study: optuna.Study, run_id: str | None) -> str | None:
    """The store's id of a run id a trial recorded (a local id is looked up in :data:`RUN_IDS_ATTR`)."""
    return study.user_attrs.get(RUN_IDS_ATTR, {}).get(run_id, run_id) if run_id else run_id
