"""Writes that wait for the store: the writer's spool, its replay, ``cvae-bench sync``, transient errors."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from local_services import MlflowServer, free_port

from bench.tracking import TrackingWriter, make_client
from bench.tracking.ops import Store, is_transient
from bench.tracking.spool import Spool, sync_spool

WAIT_S = 120


@pytest.fixture
def server(tmp_path):
    srv = MlflowServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", tmp_path / "server.log").start()
    yield srv
    srv.stop()


def _history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def _lines(spool_dir):
    return [json.loads(line) for f in sorted(spool_dir.glob("*.jsonl")) for line in f.read_text().splitlines()[1:]]


def test_transient_errors_are_told_apart():
    import requests
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    assert is_transient(requests.exceptions.ConnectionError("refused"))
    assert is_transient(MlflowException("API request failed: Max retries exceeded with url"))
    assert not is_transient(MlflowException("Invalid value for param", error_code=INVALID_PARAMETER_VALUE))
    assert is_transient(MlflowException("API request to endpoint /runs/log-batch failed with error code 503 != 200"))
    assert is_transient(MlflowException("502 Server Error: Bad Gateway for url: http://host/api"))
    # a refused write whose message holds a run id with "503" inside is the write's own fault
    assert not is_transient(MlflowException("Changing param values is not allowed. Param with key='lr' was "
                                            "already logged with value='0.1' for run ID='9f2a503c1e0b4d77'",
                                            error_code=INVALID_PARAMETER_VALUE))
    assert not is_transient(ValueError("bug"))


def test_a_spooled_checkpoint_takes_the_place_of_the_one_before(tmp_path):
    """A long outage keeps only each run's newest checkpoint; a delete of the folder starts afresh."""
    spool = Spool(tmp_path / "spool", "http://u:s3cret@host:5000")

    def checkpoint(run: str, content: str) -> dict:
        path = tmp_path / f"cvae-bench-file-{content}" / "state.pt"
        path.parent.mkdir()
        path.write_text(content)
        return {"op": "log_artifact", "run_id": run, "local_path": str(path), "artifact_path": "checkpoint"}

    for epoch in (2, 4, 6):
        spool.append(checkpoint("local-a", f"a{epoch}"))
        spool.append({"op": "log_batch", "run_id": "local-a", "metrics": [["val_kl", 1.0, 0, epoch]]})
    spool.append(checkpoint("local-b", "b2"))
    spool.append({"op": "delete_artifacts", "run_id": "local-a", "artifact_path": "checkpoint"})
    spool.append(checkpoint("local-a", "a8"))
    records = _lines(tmp_path / "spool")
    files = [(r["run_id"], open(r["local_path"]).read()) for r in records if r["op"] == "log_artifact"]
    assert files == [("local-a", "a6"), ("local-b", "b2"), ("local-a", "a8")]
    assert spool.pending == len(records) == 7
    assert len(list((tmp_path / "spool").rglob("state.pt"))) == 3
    assert "s3cret" not in spool.path.read_text()  # the header names the server, redacted
    spool.close()
    assert not list((tmp_path / "spool").glob("*.lock"))


@pytest.mark.slow
def test_an_outage_is_spooled_then_replayed_in_order(server, tmp_path, saved_model):
    """Writes made while the server is down are spooled in order and sent when it is back: a run born in
    the outage gets its real id, a model begun and finished in it is READY with its metrics."""
    spool_dir = tmp_path / "spool"
    writer = TrackingWriter(server.uri, spool_dir=spool_dir)
    run = writer.start_run("outage", "trial-0")
    run.log_params({"lr": 0.001})
    run.log_metrics({"val_kl": 1.0}, step=1)
    assert writer.flush(WAIT_S) is None

    server.stop()
    for epoch in (2, 3, 4):
        run.log_metrics({"val_kl": float(epoch)}, step=epoch)
    late = writer.start_run("outage", "trial-1")
    state = tmp_path / "state.pt"
    for epoch in (1, 2, 3):
        state.write_text(f"epoch {epoch}")
        late.log_file(str(state), "checkpoint")
    late.log_metrics({"val_kl": 9.0}, step=1)
    late.log_model(str(saved_model("b")), step=1, metrics={"test_kl": 2.5}, params={}, tags={},
                   requirements=["torch"])
    late.end("FINISHED")
    assert "writes wait in the spool" in writer.flush(WAIT_S)
    assert late.run_id.startswith("local-")
    assert [open(p).read() for p in spool_dir.rglob("state.pt")] == ["epoch 3"]  # only the newest waits

    server.start()
    assert writer.close(WAIT_S) is None
    client = make_client(server.uri)
    assert _history(client, run.run_id, "val_kl") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    assert not late.run_id.startswith("local-")
    got = client.get_run(late.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "trial-1"
    assert _history(client, late.run_id, "val_kl") == [(1, 9.0)]
    assert [f.path for f in client.list_artifacts(late.run_id, "checkpoint")] == ["checkpoint/state.pt"]
    (model,) = client.search_logged_models(experiment_ids=[got.info.experiment_id],
                                           filter_string=f"source_run_id = '{late.run_id}'")
    assert str(model.status).endswith("READY") and {m.key: m.value for m in model.metrics} == {"test_kl": 2.5}
    assert os.listdir(spool_dir) == []  # nothing left behind, no lock file either


@pytest.mark.slow
def test_sync_sends_what_a_dead_writer_left_says_how_much_and_fails_its_open_runs(tmp_path, saved_model, capsys):
    """A command killed during an outage leaves its writer's spool; ``cvae-bench sync`` sends it once the
    server answers, ends FAILED the runs it had open and fails the model whose metrics never came."""
    from studies.cli import main

    port = free_port()
    spool_dir = tmp_path / "spool"
    uri = f"http://127.0.0.1:{port}"
    writer = TrackingWriter(uri, spool_dir=spool_dir)  # the server is down from the start
    run = writer.start_run("dead", "trial-7")
    run.log_metrics({"val_kl": 3.0}, step=1)
    run.log_model(str(saved_model("a")), step=1, metrics=None, params={}, tags={}, requirements=["torch"])
    writer.flush(WAIT_S)
    assert [r["op"] for r in _lines(spool_dir)] == ["experiment", "create_run", "log_batch", "begin_model"]
    assert main(["sync", "--tracking-uri", uri, "--spool-dir", str(spool_dir)]) == 0  # its process still runs
    assert "1 file(s) belong to processes still running" in capsys.readouterr().out
    os.kill(writer.proc.pid, signal.SIGKILL)  # the command dies with it
    writer.proc.wait()

    assert main(["sync", "--tracking-uri", uri, "--spool-dir", str(spool_dir)]) == 2  # still down: one line
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "still unreachable" in err and "nothing was lost" in err
    server = MlflowServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", tmp_path / "server.log")
    server.port = port
    server.start()
    try:
        assert main(["sync", "--tracking-uri", uri, "--spool-dir", str(spool_dir)]) == 0
        out = capsys.readouterr().out
        assert "sent 4 spooled writes (" in out and " MB) from 1 file(s)" in out
        client = make_client(uri)
        (got,) = client.search_runs([client.get_experiment_by_name("dead").experiment_id])
        assert got.info.status == "FAILED" and "exited before ending it" in got.data.tags["end_reason"]
        assert _history(client, got.info.run_id, "val_kl") == [(1, 3.0)]
        (model,) = client.search_logged_models(experiment_ids=[got.info.experiment_id])
        assert str(model.status).endswith("FAILED")
        assert os.listdir(spool_dir) == []
    finally:
        server.stop()


def test_runs_that_log_one_dataset_at_once_all_get_it(tmp_path):
    """MLflow's SQL store races when two runs log a new dataset at the same moment (workers started
    together): the loser's IntegrityError is retried, so no run, and no trial, fails for it."""
    import threading

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
            store = Store(make_client(uri), uri)
            start.wait()
            try:
                store.apply({"op": "log_inputs", "run_id": run_id, "datasets": [dataset]})
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


@pytest.mark.slow
def test_artifacts_are_deleted_through_the_server_and_a_refusal_is_only_a_warning(server, tmp_path, capsys):
    client = make_client(server.uri)
    store = Store(client, server.uri)
    run_id = client.create_run(client.create_experiment("deletes")).info.run_id
    state = tmp_path / "state.pt"
    state.write_bytes(b"checkpoint")
    client.log_artifact(run_id, str(state), "checkpoint")
    client.log_artifact(run_id, str(state), "kept")
    store.apply({"op": "delete_artifacts", "run_id": run_id, "artifact_path": "checkpoint"})
    assert client.list_artifacts(run_id, "checkpoint") == []
    assert [f.path for f in client.list_artifacts(run_id)] == ["kept"]
    store.apply({"op": "delete_artifacts", "run_id": "0" * 32, "artifact_path": "checkpoint"})  # no such run
    assert "could not delete artifacts 'checkpoint'" in capsys.readouterr().err
