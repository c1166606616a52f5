"""What a study keeps: its best trial's logged model registered under the study's name with alias
``best``; the alias moves to a better trial on a rerun; rate-distortion registers the Pareto front.

Real MLflow (SQLite) and real Optuna studies; the trials' runs log real (untrained) CVAEs through
bench.tracking.logged_model, as a trial does.
"""

from __future__ import annotations

import optuna
import pytest
import torch
from local_services import free_port
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from bench.tracking import TrackingWriter, make_client
from bench.tracking.logged_model import pip_requirements
from models import CVAE, CVAEConfig
from models.saved_model import save
from studies.registry import register_study_models
from studies.spec import StudySpec

WAIT_S = 120


@pytest.fixture
def store(tmp_path, monkeypatch):
    """(client, writer) of an SQLite store in a fresh folder."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    writer = TrackingWriter(uri)
    yield make_client(uri), writer
    writer.close(WAIT_S)


def spec(**kw) -> StudySpec:
    return StudySpec(study_name="reg-test", device="cpu", storage="sqlite:///unused.db", **kw)


def trial_with_model(writer, tmp_path, number: int, values, log: bool = True):
    """A COMPLETE trial whose run (recorded by its local id, as a trial records it) logged a CVAE."""
    run = writer.start_run("reg", f"cvae-trial-{number}")
    if log:
        torch.manual_seed(number)
        model = CVAE(CVAEConfig(input_shape=(1, 8, 8), num_classes=10, hidden=(16,), latent_dim=2))
        folder = save(model, tmp_path / f"saved-{number}", [str(i) for i in range(10)])
        run.log_model(str(folder), step=1, metrics={"test_neg_elbo": float(values[0])}, params={}, tags={},
                      requirements=pip_requirements(torch.__version__))
    run.end("FINISHED")
    values = list(values)
    return create_trial(state=TrialState.COMPLETE, values=values, params={"lr": 1e-3},
                        distributions={"lr": FloatDistribution(1e-4, 1e-2, log=True)},
                        user_attrs={"mlflow_run_id": run.local_id, "val_neg_elbo": float(sum(values))})


def register(writer, study, the_spec):
    registration = register_study_models(writer, study, the_spec)
    writer.flush(WAIT_S)
    return registration.collect(writer)


def aliased_trial(client, name: str) -> str:
    return client.get_model_version_by_alias(name, "best").tags["trial_number"]


def test_best_trial_is_registered_and_the_alias_moves_to_a_better_one(store, tmp_path):
    client, writer = store
    study = optuna.create_study()
    study.add_trial(trial_with_model(writer, tmp_path, 0, [30.0]))
    study.add_trial(trial_with_model(writer, tmp_path, 1, [25.0]))
    first = register(writer, study, spec())
    assert first.notes == [] and first.best_uri == "models:/reg-test@best" and first.best_trial == 1
    assert aliased_trial(client, "reg-test") == "1"
    assert first.uri(1) == "models:/reg-test/1"

    again = register(writer, study, spec())  # a rerun with no better trial: nothing new
    assert len(client.search_model_versions("name='reg-test'")) == 1 and again.versions == {1: "1"}

    study.add_trial(trial_with_model(writer, tmp_path, 2, [20.0]))
    better = register(writer, study, spec())
    assert better.best_trial == 2 and aliased_trial(client, "reg-test") == "2"
    assert len(client.search_model_versions("name='reg-test'")) == 2


def test_registered_name_can_be_chosen_and_a_trial_without_a_model_is_a_note(store, tmp_path):
    client, writer = store
    study = optuna.create_study()
    study.add_trial(trial_with_model(writer, tmp_path, 0, [30.0], log=False))
    registration = register(writer, study, spec(registered_model="my-cvae"))
    assert registration.best_uri is None and "trial 0 was not registered as 'my-cvae'" in registration.notes[0]
    assert "has no logged model" in registration.notes[0]


def test_rate_distortion_registers_the_front_with_best_on_the_lowest_neg_elbo(store, tmp_path):
    client, writer = store
    study = optuna.create_study(directions=["minimize", "minimize"])
    for number, values in enumerate([(30.0, 1.0), (25.0, 3.0), (22.0, 8.0), (31.0, 9.0)]):  # the last is dominated
        study.add_trial(trial_with_model(writer, tmp_path, number, values))
    registration = register(writer, study, spec(objective="rate-distortion"))
    assert sorted(registration.versions) == [0, 1, 2]
    assert registration.best_trial == 1 and aliased_trial(client, "reg-test") == "1"  # 28.0 nats, the lowest


def test_an_unreachable_registry_is_a_note_saying_the_registration_waits(tmp_path):
    writer = TrackingWriter(f"http://u:s3cret@127.0.0.1:{free_port()}", spool_dir=tmp_path / "spool")
    study = optuna.create_study()
    study.add_trial(trial_with_model(writer, tmp_path, 0, [30.0]))
    registration = register(writer, study, spec())
    (note,) = registration.notes
    assert "waits for the tracking server" in note and "cvae-bench sync" in note and "s3cret" not in note
    assert registration.best_uri is None
    assert "writes wait in the spool" in writer.close(WAIT_S)
