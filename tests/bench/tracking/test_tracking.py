"""MLflow tracking of single runs: RunTracker, the train command's logging, redaction (figures: tests/bench/figures)."""

from __future__ import annotations

import os

import pytest
from matplotlib.figure import Figure

from bench.figures.kinds import FIGURE_FILES
from bench.tracking import (
    DEFAULT_TRACKING_URI,
    MAX_PARAMS_PER_BATCH,
    NullTracker,
    RunTracker,
    config_params,
    make_client,
    redact,
    resolve_tracking_uri,
    ui_hint,
)
from bench.tracking import experiment_id as tracking_experiment_id


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # artifacts of sqlite stores land in ./mlruns
    return make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture
def experiment_id(client):
    return tracking_experiment_id(client, "tests")


class RecordingTracker(RunTracker):
    """Records every call that passes the write seam; ``inside`` is True while one runs."""

    seam_calls: list[str] = []
    inside = False

    def _write(self, method, *args, **kwargs):
        RecordingTracker.seam_calls.append(method)
        RecordingTracker.inside = True
        try:
            return super()._write(method, *args, **kwargs)
        finally:
            RecordingTracker.inside = False


# -- URIs and redaction --------------------------------------------------------------------------

def test_tracking_uri_resolution_order(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5001"
    assert resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"


def test_redaction_masks_passwords_in_urls_and_text():
    assert redact("postgresql://bob:s3cret@db:5432/optuna") == "postgresql://bob:***@db:5432/optuna"
    assert "s3cret" not in redact("failed: http://u:s3cret@host/api and sqlite:///x.db?password=s3cret")
    assert redact("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
    assert ui_hint("http://u:s3cret@127.0.0.1:5000") == ("open http://u:***@127.0.0.1:5000/#/experiments"
                                                         "?workflowType=machine_learning in a browser")
    assert ui_hint("sqlite:///m.db") == ("mlflow ui --backend-store-uri sqlite:///m.db, then open "
                                         "http://127.0.0.1:5000/#/experiments?workflowType=machine_learning")


@pytest.mark.parametrize("argv", [["sync", "--spool-dir", "spool"],
                                  ["compare", "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"],
                                  ["steptime", "--repeats", "1", "--block-ms", "1", "--warmup", "1"]],
                         ids=["sync", "compare", "steptime"])
def test_an_unusable_tracking_uri_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv):
    from bench.errors import CLIError
    from studies.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(CLIError, match=r"tracking store foo://u:\*\*\*@host"):
        make_client("foo://u:s3cret@host/x")
    assert main([*argv, "--tracking-uri", "foo://u:s3cret@host/x"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "s3cret" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"cvae-bench {argv[0]}: error:"), err


# -- RunTracker ----------------------------------------------------------------------------------

def test_run_tracker_logs_batches_through_one_seam(client, experiment_id, monkeypatch):
    RecordingTracker.seam_calls = []
    direct: list[tuple[str, bool]] = []
    for name in ("create_run", "log_batch", "log_artifact", "set_terminated", "update_run", "set_tag"):
        original = getattr(client, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            direct.append((_name, RecordingTracker.inside))
            return _original(*args, **kwargs)

        monkeypatch.setattr(client, name, spy)

    params = {f"p{i}": i for i in range(MAX_PARAMS_PER_BATCH * 2 + 5)}  # three requests
    with RecordingTracker.start(client, experiment_id, "r", tags={"variant": "cvae"}) as run:
        run.log_params(params)
        for epoch in (1, 2, 3):
            run(epoch, {"val_recon": 10.0 / epoch, "val_kl": float(epoch)})
        fig = Figure()
        fig.add_subplot().plot([0, 1])
        run.log_figure(fig, "figures/x.png")
        run.log_text("a,b\n1,2\n", "table.csv")
    assert direct and all(inside for _, inside in direct)  # no write bypassed the seam
    assert RecordingTracker.seam_calls == ["create_run", "log_batch", "log_batch", "log_batch", "log_batch",
                                           "log_artifact", "log_artifact", "set_terminated"]
    assert [n for n, _ in direct].count("log_batch") == 3 + 3  # 3 param requests + one per epoch

    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params == {k: str(v) for k, v in params.items()}
    assert got.data.tags["variant"] == "cvae"
    history = client.get_metric_history(run.run_id, "val_recon")
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx([10.0, 5.0, 10.0 / 3])
    assert {a.path for a in client.list_artifacts(run.run_id, "figures")} == {"figures/x.png"}
    assert {a.path for a in client.list_artifacts(run.run_id)} >= {"table.csv", "figures"}


def test_run_tracker_context_ends_failed_with_reason(client, experiment_id):
    with pytest.raises(RuntimeError):
        with RunTracker.start(client, experiment_id, "boom") as run:
            raise RuntimeError("exploded at http://u:hunter2@host")
    got = client.get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags["end_reason"] == "RuntimeError: exploded at http://u:***@host"


def test_a_pending_model_is_ready_once_its_metrics_come_and_failed_if_the_run_ends_first(client, experiment_id,
                                                                                         saved_model):
    def model_of(run):
        (model,) = client.search_logged_models(experiment_ids=[experiment_id],
                                               filter_string=f"source_run_id = '{run.run_id}'")
        return str(model.status).rpartition(".")[2], {m.key: (m.value, m.dataset_name) for m in model.metrics or ()}

    finished = RunTracker.start(client, experiment_id, "finished")
    finished.log_model(str(saved_model("a")), step=2, metrics=None, params={"lr": "0.1"}, tags={},
                       requirements=["torch"], dataset={"name": "digits", "digest": "ab12"})
    assert model_of(finished) == ("PENDING", {})
    finished.log_model_metrics({"test_kl": 1.25})
    finished.end("FINISHED")
    assert model_of(finished) == ("READY", {"test_kl": (1.25, "digits")})
    assert client.get_metric_history(finished.run_id, "test_kl")[0].step == 2

    failed = RunTracker.start(client, experiment_id, "failed")
    failed.log_model(str(saved_model("b")), step=1, metrics=None, params={}, tags={}, requirements=["torch"])
    with pytest.raises(RuntimeError, match="no logged model is pending"):
        RunTracker.start(client, experiment_id, "none").log_model_metrics({"test_kl": 1.0})
    failed.end("FAILED", "the test metrics were NaN")
    assert model_of(failed) == ("FAILED", {})


def test_child_run_and_reopen(client, experiment_id):
    parent = RunTracker.start(client, experiment_id, "parent")
    parent.end("FINISHED")
    child = RunTracker.start(client, experiment_id, "child", parent_run_id=parent.run_id)
    child.end("KILLED", "pruned at epoch 1")
    assert client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == parent.run_id
    assert client.get_run(child.run_id).info.status == "KILLED"
    RunTracker.reopen(client, parent.run_id)
    assert client.get_run(parent.run_id).info.status == "RUNNING"
    with pytest.raises(ValueError):
        child.ended = False
        child.end("DONE")


def test_config_params_are_flat_and_collisions_are_refused(digits):
    from bench.training.config import TrainConfig
    from bench.training.presets import model_config

    params = config_params(model_config("flow-cvae", digits), TrainConfig(lr=0.01), {"dataset": "digits"})
    assert params["flow"] == "planar" and params["lr"] == 0.01 and params["hidden"] == "128"
    assert params["dataset"] == "digits" and params["input_shape"] == "1x8x8"
    with pytest.raises(ValueError, match="lr"):
        config_params(model_config("cvae", digits), TrainConfig(), {"lr": 1})


def test_every_tracker_implements_the_tracker_interface():
    """RunTracker, TrackingProcess and NullTracker all have every method of the Tracker protocol, with
    the protocol's parameters (the harness talks to Tracker only)."""
    import inspect

    from bench.tracking import Tracker, TrackingProcess

    members = [name for name, value in vars(Tracker).items() if callable(value) and not name.startswith("_")]
    members.append("__call__")
    assert {"log_params", "log_metrics", "set_tags", "log_figures", "log_text", "end"} <= set(members)
    for cls in (RunTracker, TrackingProcess, NullTracker):
        for name in members:
            method = getattr(cls, name, None)
            assert callable(method), f"{cls.__name__}.{name}"
            wanted = list(inspect.signature(getattr(Tracker, name)).parameters)
            assert list(inspect.signature(method).parameters) == wanted, f"{cls.__name__}.{name}"
    assert isinstance(NullTracker(), Tracker)


# -- the train command ---------------------------------------------------------------------------

@pytest.mark.slow
def test_train_logs_epochs_finals_figures_and_tags(tmp_path, monkeypatch, capsys):
    from studies.cli import main

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    rc = main(["train", "--epochs", "3", "--limit", "300", "--iw-samples", "5", "--no-progress",
               "--tracking-uri", uri, "--experiment", "t"])
    assert rc == 0
    assert "tracked as MLflow run" in capsys.readouterr().out
    client = make_client(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert run.info.status == "FINISHED"
    for key in ("val_recon", "val_kl", "train_recon", "step_ms"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2, 3], key
    for key in ("test_neg_elbo", "test_iw_nll", "test_active_units", "test_cond_acc"):
        assert key in run.data.metrics
    assert run.data.params["lr"] == "0.001" and run.data.params["latent_dim"] == "32"
    assert run.data.params["dataset"] == "digits" and run.data.params["n_train"] == "300"
    tags = run.data.tags
    assert tags["variant"] == "cvae" and tags["dataset"] == "digits" and tags["device"] == "cpu"
    assert tags["torch_version"] and tags["device_name"] and tags["cuda_version"]
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert arts == set(FIGURE_FILES.values())


@pytest.mark.slow
def test_train_failure_ends_the_run_failed(tmp_path, monkeypatch):
    from studies.cli import main

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    rc = main(["train", "--epochs", "1", "--lr", "1e8", "--hidden", "256,256", "--no-progress",
               "--tracking-uri", uri, "--experiment", "t"])
    assert rc == 2
    client = make_client(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert run.info.status == "FAILED"
    assert "loss became nan" in run.data.tags["end_reason"]


def test_train_no_track_creates_no_store(tmp_path, monkeypatch):
    from studies.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["train", "--epochs", "1", "--limit", "200", "--iw-samples", "2", "--no-progress",
                 "--no-track"]) == 0
    assert os.listdir(tmp_path) == []
