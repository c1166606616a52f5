"""MLflow tracking of runs: the writer process and its RunHandle, the train command's logging, redaction
(figures: tests/bench/figures; outages and the spool: test_spool.py, test_outages.py)."""

from __future__ import annotations

import os
import time

import pytest
from matplotlib.figure import Figure

from bench.figures.kinds import FIGURE_FILES
from bench.tracking import (
    DEFAULT_TRACKING_URI,
    RUN_KEY_TAG,
    NullTracker,
    RunHandle,
    TrackingWriter,
    config_params,
    make_client,
    redact_url,
    resolve_tracking_uri,
    ui_hint,
)
from bench.errors import CLIError
from bench.tracking.ops import MAX_PARAMS_PER_BATCH

WAIT_S = 120  # the writer's work, on a slow CI machine


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An SQLite tracking store in a fresh folder (artifacts land in ./mlruns there): (uri, client)."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, make_client(uri)


@pytest.fixture
def writer(store):
    w = TrackingWriter(store[0])
    yield w
    if not w.closed:
        w.close(WAIT_S)


def runs_of(client, experiment: str):
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id], order_by=["start_time ASC"])


# -- URIs and redaction --------------------------------------------------------------------------

def test_tracking_uri_resolution_order(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5001"
    assert resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"


def test_redaction_masks_passwords_in_urls_and_text():
    assert redact_url("postgresql://bob:s3cret@db:5432/optuna") == "postgresql://bob:***@db:5432/optuna"
    assert "s3cret" not in redact_url("failed: http://u:s3cret@host/api and sqlite:///x.db?password=s3cret")
    assert redact_url("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
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


# -- the writer ------------------------------------------------------------------------------------

def test_a_run_written_through_the_writer_has_everything_in_order(writer, store):
    """Params (several requests), epochs held back and sent together, a figure, a text, tags; the run
    carries its local id as its run key; nothing a call made waited for the store."""
    uri, client = store
    params = {f"p{i}": i for i in range(MAX_PARAMS_PER_BATCH * 2 + 5)}  # three requests
    with writer.start_run("tests", "r", tags={"variant": "cvae", "url": "http://u:hunter2@host"}) as run:
        assert run.run_id.startswith("local-")  # nothing waits for the store to create it
        run.log_params(params)
        for epoch in (1, 2, 3):
            run(epoch, {"val_recon": 10.0 / epoch, "val_kl": float(epoch)})
        fig = Figure()
        fig.add_subplot().plot([0, 1])
        run.log_figure(fig, "figures/x.png")
        run.log_text("a,b\n1,2\n", "table.csv")
    assert writer.close(WAIT_S) is None and not writer.errors
    assert not run.run_id.startswith("local-")
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "r"
    assert got.data.params == {k: str(v) for k, v in params.items()}
    assert got.data.tags["variant"] == "cvae" and got.data.tags[RUN_KEY_TAG] == run.local_id
    assert got.data.tags["url"] == "http://u:***@host"
    history = client.get_metric_history(run.run_id, "val_recon")
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx([10.0, 5.0, 10.0 / 3])
    assert {a.path for a in client.list_artifacts(run.run_id, "figures")} == {"figures/x.png"}
    assert {a.path for a in client.list_artifacts(run.run_id)} >= {"table.csv", "figures"}
    experiment = client.get_experiment(got.info.experiment_id)
    assert experiment.name == "tests" and experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_epoch_metrics_are_held_back_and_sent_with_the_next_other_write(monkeypatch):
    """The training process hands the writer its epochs at most every METRICS_INTERVAL_S, in order with
    everything else (a fake writer records what reaches it)."""
    import bench.tracking.writer as writer_module

    class Recorder:
        def __init__(self):
            self.records = []

        def submit(self, record):
            self.records.append(record)

        def run_id(self, local):
            return local

        def raise_if_fatal(self):
            pass

    monkeypatch.setattr(writer_module, "METRICS_INTERVAL_S", 3600.0)
    recorder = Recorder()
    run = RunHandle(recorder, "local-x", "r")
    for epoch in (1, 2, 3):
        run(epoch, {"val_kl": float(epoch)})
    assert recorder.records == []
    run.set_tags({"a": 1})
    assert [r["op"] for r in recorder.records] == ["log_batch", "log_batch"]
    assert [row[3] for row in recorder.records[0]["metrics"]] == [1, 2, 3]
    assert recorder.records[1]["tags"] == [["a", "1"]]
    monkeypatch.setattr(writer_module, "METRICS_INTERVAL_S", 0.0)
    run(4, {"val_kl": 4.0})
    assert recorder.records[-1]["metrics"][0][3] == 4


def test_a_run_that_raises_ends_failed_with_the_reason_redacted(writer, store):
    with pytest.raises(RuntimeError):
        with writer.start_run("tests", "boom") as run:
            raise RuntimeError("exploded at http://u:hunter2@host")
    writer.close(WAIT_S)
    got = store[1].get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags["end_reason"] == "RuntimeError: exploded at http://u:***@host"


def test_a_pending_model_is_ready_once_its_metrics_come_and_failed_if_the_run_ends_first(writer, store,
                                                                                         saved_model):
    client = store[1]
    finished = writer.start_run("tests", "cvae-digits")
    handed_over = saved_model("a")
    finished.log_model(str(handed_over), step=2, metrics=None, params={"lr": "0.1"}, tags={},
                       requirements=["torch"], dataset={"name": "digits", "digest": "ab12"})
    finished.log_model_metrics({"test_kl": 1.25})
    finished.end("FINISHED")
    failed = writer.start_run("tests", "failed")
    failed.log_model(str(saved_model("b")), step=1, metrics=None, params={}, tags={}, requirements=["torch"])
    with pytest.raises(RuntimeError, match="no logged model is pending"):
        writer.start_run("tests", "none").log_model_metrics({"test_kl": 1.0})
    failed.end("FAILED", "the test metrics were NaN")
    writer.close(WAIT_S)

    def model_of(run):
        (model,) = client.search_logged_models(experiment_ids=[client.get_run(run.run_id).info.experiment_id],
                                               filter_string=f"source_run_id = '{run.run_id}'")
        return (model.name, str(model.status).rpartition(".")[2],
                {m.key: (m.value, m.dataset_name) for m in model.metrics or ()})

    assert model_of(finished) == ("cvae-digits", "READY", {"test_kl": (1.25, "digits")})  # named after its run
    assert client.get_metric_history(finished.run_id, "test_kl")[0].step == 2
    assert model_of(failed) == ("failed", "FAILED", {})
    assert not handed_over.exists()  # handed over: the writer removed the folder once it was written


def test_child_runs_and_a_reused_parent(writer, store):
    client = store[1]
    parent = writer.start_run("tests", "parent")
    parent.end("FINISHED")
    child = writer.start_run("tests", "child", parent=parent.local_id)  # the parent's local id is enough
    child.end("KILLED", "pruned at epoch 1")
    writer.flush(WAIT_S)
    again = writer.start_run("tests", "parent", reuse=parent.run_id)  # a rerun's parent: the same run, RUNNING
    gone = writer.start_run("tests", "parent", reuse="0123456789abcdef0123456789abcdef")  # not in the store: new
    writer.close(WAIT_S)
    assert client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == parent.run_id
    assert client.get_run(child.run_id).info.status == "KILLED"
    assert again.run_id == parent.run_id and client.get_run(parent.run_id).info.status == "RUNNING"
    assert gone.run_id not in (parent.run_id, "0123456789abcdef0123456789abcdef")
    with pytest.raises(ValueError):
        child.ended = False
        child.end("DONE")


def test_a_write_that_fails_for_good_is_reported_and_the_rest_is_written(writer, store, capsys):
    run = writer.start_run("tests", "r")
    run.log_params({"lr": 0.1})
    run.log_params({"lr": 0.2})  # MLflow refuses to change a param: that write alone fails
    run.log_metrics({"loss": 1.0}, step=1)
    run.end("FINISHED")
    writer.close(WAIT_S)
    assert len(writer.errors) == 1 and "lr" in writer.errors[0]
    got = store[1].get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.data.params == {"lr": "0.1"} and got.data.metrics == {"loss": 1.0}


def test_a_store_that_cannot_be_used_stops_a_fit_at_its_next_epoch(tmp_path):
    from bench.tracking import TrackingStoreError

    w = TrackingWriter("foo://u:s3cret@host/x")
    run = w.start_run("tests", "r")
    deadline = time.monotonic() + WAIT_S
    while w.fatal is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(TrackingStoreError, match=r"foo://u:\*\*\*@host") as raised:
        run(1, {"loss": 1.0})
    assert "s3cret" not in str(raised.value)
    with pytest.raises(TrackingStoreError):
        w.close(WAIT_S)


def test_runs_left_open_by_a_command_that_died_end_killed(store):
    """The writer reads what the command sent until its end of input, then ends the runs it left open."""
    w = TrackingWriter(store[0])
    run = w.start_run("tests", "orphan")
    run.log_metrics({"loss": 1.0}, step=1)
    run._send_rows()
    w._outbox.put(None)  # the command's end of input, as when it is killed: no "close"
    w.proc.wait(WAIT_S)
    (got,) = runs_of(store[1], "tests")
    assert got.info.status == "KILLED" and "exited before ending it" in got.data.tags["end_reason"]
    assert got.data.metrics == {"loss": 1.0}


def test_an_abandoned_writer_creates_no_run(tmp_path):
    """``train`` abandons its writer when an option turns out bad before the run is made."""
    w = TrackingWriter(f"sqlite:///{tmp_path / 'm.db'}")
    w.abandon()
    assert w.proc.returncode is not None
    if (tmp_path / "m.db").exists():  # the writer may have opened the store first
        assert [e.name for e in make_client(f"sqlite:///{tmp_path / 'm.db'}").search_experiments()] == ["Default"]


@pytest.mark.parametrize("setting", ["soon", "-1", "nan", "inf"])
def test_a_bad_flush_bound_is_one_line_naming_it(monkeypatch, setting):
    from bench.tracking.writer import flush_bound_s

    monkeypatch.setenv("CVAE_BENCH_FLUSH_BOUND_S", setting)
    with pytest.raises(CLIError, match=r"CVAE_BENCH_FLUSH_BOUND_S=.*seconds"):
        flush_bound_s()
    monkeypatch.setenv("CVAE_BENCH_FLUSH_BOUND_S", "2.5")
    assert flush_bound_s() == 2.5


def test_config_params_are_flat_and_collisions_are_refused(digits):
    from bench.training.config import TrainConfig
    from bench.training.presets import model_config

    params = config_params(model_config("flow-cvae", digits), TrainConfig(lr=0.01), {"dataset": "digits"})
    assert params["flow"] == "planar" and params["lr"] == 0.01 and params["hidden"] == "128"
    assert params["dataset"] == "digits" and params["input_shape"] == "1x8x8"
    with pytest.raises(ValueError, match="lr"):
        config_params(model_config("cvae", digits), TrainConfig(), {"lr": 1})


def test_every_tracker_implements_the_tracker_interface():
    """RunHandle overrides every method of the Tracker base with the base's parameters (the harness talks to
    Tracker only); NullTracker is the base, which records nothing but frees a handed-over model folder."""
    import inspect

    from bench.tracking import Tracker

    members = [name for name, value in vars(Tracker).items() if callable(value) and not name.startswith("_")]
    members.append("__call__")
    assert {"log_params", "log_metrics", "set_tags", "log_figures", "log_text", "end"} <= set(members)
    for name in members:
        assert name in vars(RunHandle) or name == "__call__", f"RunHandle.{name} is not overridden"
        wanted = list(inspect.signature(getattr(Tracker, name)).parameters)
        assert list(inspect.signature(getattr(RunHandle, name)).parameters) == wanted, f"RunHandle.{name}"
    assert issubclass(RunHandle, Tracker) and issubclass(NullTracker, Tracker)


def test_the_null_tracker_records_nothing_and_frees_a_handed_over_model(tmp_path):
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "cvae.json").write_text("{}")
    with NullTracker() as tracker:
        tracker(1, {"loss": 1.0})
        tracker.log_model(str(folder), step=1, metrics=None, params={}, tags={}, requirements=[])
    assert tracker.ended and tracker.run_id is None and not folder.exists()


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
