"""Tracking survives an unreachable MLflow server: writes are spooled locally and sent later."""

from __future__ import annotations

import time

import pytest
from local_services import MlflowServer

from bench.tracking.spool import ResilientClient, is_transient, sync_spool


@pytest.fixture
def server(tmp_path):
    srv = MlflowServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", tmp_path / "server.log").start()
    yield srv
    srv.stop()


def _history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_transient_errors_are_told_apart():
    import requests
    from mlflow.exceptions import MlflowException

    assert is_transient(requests.exceptions.ConnectionError("refused"))
    assert is_transient(MlflowException("API request failed: Max retries exceeded with url"))
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    assert not is_transient(MlflowException("Invalid value for param", error_code=INVALID_PARAMETER_VALUE))
    assert not is_transient(ValueError("bug"))


@pytest.mark.slow
def test_outage_is_spooled_then_replayed_in_order(server, tmp_path):
    spool = tmp_path / "spool"
    rc = ResilientClient(server.uri, spool)
    exp = rc.client.create_experiment("outage")
    run_id = rc.create_run(exp, "trial-0")
    rc.log_batch(run_id, {"val_kl": 1.0}, step=1, params={"lr": 0.001})

    server.stop()
    t0 = time.monotonic()
    for epoch in (2, 3, 4):
        rc.log_batch(run_id, {"val_kl": float(epoch)}, step=epoch)
    late = rc.create_run(exp, "trial-1")  # a run born during the outage gets a local id
    assert late.startswith("local-")
    rc.log_batch(late, {"val_kl": 9.0}, step=1)
    rc.set_terminated(late, "FINISHED")
    elapsed = time.monotonic() - t0
    assert rc.degraded and rc.pending == 6
    assert elapsed < 30, f"training was blocked {elapsed:.1f} s by the outage"

    server.start()
    assert rc.flush()
    assert not rc.degraded
    assert _history(rc.client, run_id, "val_kl") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    real = rc.run_id(late)
    assert not real.startswith("local-")
    assert rc.client.get_run(real).info.status == "FINISHED"
    assert _history(rc.client, real, "val_kl") == [(1, 9.0)]
    assert not list(spool.glob("*.jsonl"))


@pytest.mark.slow
def test_sync_sends_what_a_dead_process_left(server, tmp_path):
    spool = tmp_path / "spool"
    writer = ResilientClient(server.uri, spool)
    exp = writer.client.create_experiment("sync")
    run_id = writer.create_run(exp, "r")
    server.stop()
    writer.log_batch(run_id, {"test_neg_elbo": 42.0}, step=5)
    writer.set_terminated(run_id, "FINISHED")
    assert len(list(spool.glob("*.jsonl"))) == 1
    server.start()
    assert sync_spool(server.uri, spool).busy == [writer._file.name]  # its process still owns it
    server.stop()
    writer.close()  # the process "ends" with its spool on disk

    other = ResilientClient(f"http://127.0.0.1:{server.port + 0}", spool)  # same URI, later process
    server.start()
    report = sync_spool(other.tracking_uri, spool)
    assert (report.files, report.records, report.busy, report.other_uri) == (1, 2, [], [])
    assert _history(other.client, run_id, "test_neg_elbo") == [(5, 42.0)]
    assert other.client.get_run(run_id).info.status == "FINISHED"
    assert sync_spool(server.uri, spool).files == 0


@pytest.mark.slow
def test_sync_command_sends_a_dead_process_spool_and_fails_its_open_runs(server, tmp_path, capsys):
    from studies.cli import main

    spool = tmp_path / "spool"
    writer = ResilientClient(server.uri, spool)
    exp = writer.client.create_experiment("dead")
    server.stop()
    born_in_outage = writer.create_run(exp, "trial-7")  # the process dies before ending this run
    writer.log_batch(born_in_outage, {"val_kl": 3.0}, step=1)
    writer.close()

    assert main(["sync", "--tracking-uri", server.uri, "--spool-dir", str(spool)]) == 2  # still down: one line
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "still unreachable" in err and "nothing was lost" in err
    server.start()
    assert main(["sync", "--tracking-uri", server.uri, "--spool-dir", str(spool)]) == 0
    assert "sent 2 spooled writes from 1 file(s)" in capsys.readouterr().out
    (run,) = writer.client.search_runs([exp])
    assert run.info.status == "FAILED" and "ended before the run did" in run.data.tags["end_reason"]
    assert _history(writer.client, run.info.run_id, "val_kl") == [(1, 3.0)]
    assert not list(spool.glob("*.jsonl")) and not list(spool.glob("*.lock"))


def test_runs_that_log_one_dataset_at_once_all_get_it(tmp_path):
    """MLflow's SQL store races when two runs log a new dataset at the same moment (workers started
    together): the loser's IntegrityError is retried, so no run, and no trial, fails for it."""
    import threading

    from bench.tracking import make_client

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    dataset = {"name": "digits", "digest": "0123abcd", "source_type": "code", "source": "sklearn",
               "profile": "{}", "context": "training"}
    errors: list[str] = []
    setup = make_client(uri)
    for rep in range(4):
        experiment = setup.create_experiment(f"race-{rep}")
        runs = [setup.create_run(experiment).info.run_id for _ in range(6)]
        start = threading.Barrier(len(runs))

        def log(run_id: str) -> None:
            client = ResilientClient(uri, tmp_path / "spool")
            start.wait()
            try:
                client.log_inputs(run_id, [dataset])
            except Exception as exc:  # noqa: BLE001 -- collected, asserted below
                errors.append(str(exc)[:200])

        threads = [threading.Thread(target=log, args=(run_id,)) for run_id in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for run_id in runs:
            inputs = setup.get_run(run_id).inputs.dataset_inputs
            assert [(d.dataset.name, d.dataset.digest) for d in inputs] == [("digits", "0123abcd")], run_id
    assert errors == []
    assert not (tmp_path / "spool").exists() or not list((tmp_path / "spool").glob("*.jsonl"))  # nothing spooled


@pytest.mark.slow
def test_artifacts_are_deleted_through_the_server_and_a_refusal_is_only_a_warning(server, tmp_path, capsys):
    rc = ResilientClient(server.uri, tmp_path / "spool")
    run_id = rc.client.create_run(rc.client.create_experiment("deletes")).info.run_id
    state = tmp_path / "state.pt"
    state.write_bytes(b"checkpoint")
    rc.log_artifact(run_id, state, "checkpoint")
    rc.log_artifact(run_id, state, "kept")
    assert [f.path for f in rc.client.list_artifacts(run_id, "checkpoint")] == ["checkpoint/state.pt"]
    rc.delete_artifacts(run_id, "checkpoint")
    assert rc.client.list_artifacts(run_id, "checkpoint") == []
    assert [f.path for f in rc.client.list_artifacts(run_id)] == ["kept"]
    rc.delete_artifacts("0" * 32, "checkpoint")  # no such run: a warning, not the caller's failure
    assert "could not delete artifacts 'checkpoint'" in capsys.readouterr().err


def _model_state(client, run_id):
    (model,) = client.search_logged_models(experiment_ids=[client.get_run(run_id).info.experiment_id],
                                           filter_string=f"source_run_id = '{run_id}'")
    return str(model.status).rpartition(".")[2], {m.key: m.value for m in model.metrics or ()}


@pytest.mark.slow
def test_a_model_begun_and_finished_in_an_outage_is_ready_with_its_metrics_after_the_replay(server, tmp_path, saved_model):
    """The two halves of a logged model (files while the test metrics are computed, metrics after)
    spool like any write: a model begun in an outage gets a local id that its finish names."""
    rc = ResilientClient(server.uri, tmp_path / "spool")
    run_id = rc.create_run(rc.client.create_experiment("models"), "r")
    early = rc.begin_model(run_id, saved_model("a"), step=3, params={"lr": "0.001"}, tags={},
                           requirements=["torch"])
    assert early.startswith("m-") and _model_state(rc.client, run_id) == ("PENDING", {})
    rc.finish_model(run_id, early, step=3, metrics={"test_kl": 1.5}, dataset={"name": "digits", "digest": "ab"})
    assert _model_state(rc.client, run_id) == ("READY", {"test_kl": 1.5})
    assert rc.client.get_run(run_id).data.metrics["test_kl"] == 1.5  # the linked metrics are the run's

    late_run = rc.create_run(rc.client.get_run(run_id).info.experiment_id, "r2")
    server.stop()
    late = rc.begin_model(late_run, saved_model("b"), step=2, params={}, tags={}, requirements=["torch"])
    assert late.startswith("local-")
    rc.finish_model(late_run, late, step=2, metrics={"test_kl": 2.5})
    assert rc.pending == 2
    server.start()
    assert rc.flush()
    assert _model_state(rc.client, late_run) == ("READY", {"test_kl": 2.5})
    assert rc.run_id(late).startswith("m-")


@pytest.mark.slow
def test_sync_fails_a_model_whose_process_died_before_its_metrics(server, tmp_path, saved_model):
    spool = tmp_path / "spool"
    writer = ResilientClient(server.uri, spool)
    run_id = writer.create_run(writer.client.create_experiment("dead-model"), "r")
    server.stop()
    writer.begin_model(run_id, saved_model("a"), step=1, params={}, tags={}, requirements=["torch"])
    writer.close()  # the process dies during its test metrics
    server.start()
    report = sync_spool(server.uri, spool)
    assert (report.files, report.records) == (1, 1)
    assert _model_state(writer.client, run_id) == ("FAILED", {})
