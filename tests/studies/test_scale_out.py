"""Many `cvae-bench worker` processes on one study: PostgreSQL for Optuna and for an `mlflow server`.

The services are real and run on loopback (tests/local_services.py): a throwaway PostgreSQL cluster
(Debian's packages, which `.ci/run` installs) holding two databases, and `cvae-bench server` using
one of them as its backend store. Workers are separate processes, as on separate machines.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from local_services import PASSWORD, MlflowServer, PostgresCluster, postgres_bin
from optuna.trial import TrialState

from bench.tracking import make_client
from bench.tracking.ops import Store
from studies.registry import run_id_of

REPO = Path(__file__).resolve().parents[2]
EPOCH_METRICS = ("train_recon", "train_kl", "val_recon", "val_kl", "val_neg_elbo", "samples_per_s")
FINAL_METRICS = ("test_recon", "test_kl", "test_neg_elbo", "test_iw_nll")

pytestmark = [pytest.mark.slow, pytest.mark.postgres,
              pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL is not installed (.ci/run installs it)")]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """(cluster, server): PostgreSQL with an `mlflow` database behind `cvae-bench server`."""
    base = Path(tempfile.mkdtemp(prefix="cvae-bench-pg-"))  # reachable by the postgres user when run as root
    cluster = PostgresCluster(base).start()
    root = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(cluster.create_database("mlflow"), root / "artifacts", root / "server.log")
    try:
        server.start()
        yield cluster, server
    finally:
        server.stop()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


class Study:
    """One study on its own Optuna database, tracked on the shared server."""

    def __init__(self, services, name: str, tmp_path: Path) -> None:
        cluster, self.server = services
        self.name = name
        self.storage = cluster.create_database(name.replace("-", "_"))
        self.tmp = tmp_path
        self.logs: list[Path] = []
        self.procs: list[subprocess.Popen] = []

    def worker(self, *extra: str) -> subprocess.Popen:
        log = self.tmp / f"worker-{len(self.logs)}.log"
        self.logs.append(log)
        env = dict(os.environ, PYTHONPATH=str(REPO), MLFLOW_DISABLE_TELEMETRY="true",
                   CVAE_BENCH_SPOOL=str(self.tmp / "spool"))
        cmd = [sys.executable, "-m", "studies.cli", "worker", "--study-name", self.name, "--storage", self.storage,
               "--tracking-uri", self.server.uri, "--iw-samples", "5", "--no-progress", "--threads", "1", *extra]
        proc = subprocess.Popen(cmd, cwd=self.tmp, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def kill_leftovers(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def wait(self, workers, timeout: float = 300) -> None:
        for w, log in zip(workers, self.logs[-len(workers):]):
            assert w.wait(timeout=timeout) == 0, log.read_text()[-3000:]

    def log_tails(self, chars: int = 1500) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-chars:]}" for log in self.logs)

    def load(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.storage)

    def runs(self):
        client = make_client(self.server.uri)
        exp = client.get_experiment_by_name(self.name)
        return client, client.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture
def new_study(services, tmp_path):
    """``new_study(name)``: a Study whose worker processes are killed if the test fails."""
    made: list[Study] = []

    def make(name: str) -> Study:
        made.append(Study(services, name, tmp_path))
        return made[-1]

    yield make
    for study in made:
        study.kill_leftovers()


def _children(runs, parent_id):
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]


def _assert_complete_history(client, run, epochs: int) -> None:
    for key in EPOCH_METRICS:
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
        assert steps == list(range(1, epochs + 1)), (run.info.run_name, key, steps)
    assert set(FINAL_METRICS) <= set(run.data.metrics), run.info.run_name


def test_three_workers_started_together_share_one_study_and_one_parent_run(new_study):
    study = new_study("three-workers")
    n, epochs = 6, 2
    workers = [study.worker("--trials-total", str(n), "--epochs", str(epochs), "--limit", "300", "--pruner", "none")
               for _ in range(3)]  # all three find no study and race to create it
    study.wait(workers)

    storage = optuna.storages.RDBStorage(study.storage.replace("postgresql://", "postgresql+psycopg://"))
    assert [s.study_name for s in storage.get_all_studies()] == [study.name]
    trials = study.load().get_trials()
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # every number once
    why = ([(t.number, t.state.name, t.user_attrs.get("worker"), t.user_attrs.get("fail_reason")) for t in trials],
           study.log_tails())
    assert [t.state for t in trials].count(TrialState.COMPLETE) == n == len(trials), why
    assert len({t.user_attrs["worker"] for t in trials}) >= 2, "the work was not shared"

    client, runs = study.runs()
    parents = [r for r in runs if r.data.tags.get("run_kind") == "study"]
    assert len(parents) == 1
    (parent,) = parents
    assert study.load().user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    children = _children(runs, parent.info.run_id)
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == list(range(n))  # one run per trial
    by_id = {r.info.run_id: r for r in children}
    for t in trials:
        run = by_id[run_id_of(study.load(), t.user_attrs["mlflow_run_id"])]
        assert run.data.tags["worker"] == t.user_attrs["worker"]
        assert run.info.status == "FINISHED"
        _assert_complete_history(client, run, epochs)
    assert all(r.info.status != "RUNNING" for r in runs)
    texts = [log.read_text() for log in study.logs]
    texts += [json.dumps([r.data.params, r.data.tags]) for r in runs]
    texts += [json.dumps(study.load().user_attrs), json.dumps([t.user_attrs for t in trials])]
    assert "cvae:***@127.0.0.1" in texts[0]  # the storage URL was printed, redacted
    assert not [t for t in texts if PASSWORD in t], "the database password leaked"


def test_a_worker_killed_mid_trial_is_retried_and_its_run_ended_failed(new_study):
    study = new_study("killed-worker")
    n, epochs = 3, 40  # the victim is killed in the first half of a trial: seconds of it left, at least
    common = ("--trials-total", str(n), "--epochs", str(epochs), "--limit", "1200", "--pruner", "none",
              "--heartbeat", "2")
    victim = study.worker(*common)
    deadline = time.time() + 120
    doomed = None
    while doomed is None:  # the victim's first trial, once its MLflow run exists
        assert time.time() < deadline, study.logs[0].read_text()[-3000:]
        assert victim.poll() is None, study.logs[0].read_text()[-3000:]
        try:
            running = study.load().get_trials(states=(TrialState.RUNNING,))
        except KeyError:  # the study is not created yet
            running = []
        doomed = next((t for t in running
                       if "mlflow_run_id" in t.user_attrs and len(t.intermediate_values) < epochs // 2), None)
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = study.worker()  # joins with only the study's name and storage
    study.wait([survivor])

    trials = study.load().get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == n
    failed = next(t for t in trials if t.number == doomed.number)
    assert failed.state == TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == failed.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == failed.params

    client, runs = study.runs()
    killed_run = client.get_run(Store(client, study.server.uri).real(doomed.user_attrs["mlflow_run_id"]))
    # Ended by the dead worker's writer process (it outlives the worker), or else by the survivor once the
    # heartbeat stopped, whichever came first.
    assert (killed_run.info.status, killed_run.data.tags["end_reason"].split(":")[0]) in (
        ("KILLED", "the process that trained this run exited before ending it"), ("FAILED", "heartbeat lost"))
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []


def test_tracking_server_outage_loses_no_metric(new_study, tmp_path):
    study = new_study("server-outage")
    server = study.server
    n, epochs = 14, 4  # ~2 s a trial: the server (~8 s to restart) is usually back before the study ends
    worker = study.worker("--trials-total", str(n), "--epochs", str(epochs), "--pruner", "none", "--sampler", "random")
    deadline = time.time() + 180
    while True:  # let one trial finish while the server is up
        assert time.time() < deadline and worker.poll() is None, study.logs[0].read_text()[-3000:]
        try:
            if study.load().get_trials(states=(TrialState.COMPLETE,)):
                break
        except KeyError:
            pass
        time.sleep(0.2)
    server.stop()
    try:
        done_before = len(study.load().get_trials(states=(TrialState.COMPLETE,)))
        while len(study.load().get_trials(states=(TrialState.COMPLETE,))) < done_before + 1:  # training goes on
            assert time.time() < deadline and worker.poll() is None, study.logs[0].read_text()[-3000:]
            time.sleep(0.2)
    finally:
        server.start()
    back_in_time = worker.poll() is None
    study.wait([worker])
    spooled = "writes are spooled" in study.logs[0].read_text()
    if back_in_time:  # the worker itself sent the spool once the server answered again
        assert not spooled, study.logs[0].read_text()[-2000:]
    else:
        # The study ended before the server was back: the worker said so, and `sync` sends the rest.
        env = dict(os.environ, PYTHONPATH=str(REPO), CVAE_BENCH_SPOOL=str(tmp_path / "spool"))
        out = subprocess.run([sys.executable, "-m", "studies.cli", "sync", "--tracking-uri", server.uri], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "sent" in out.stdout, out.stderr

    trials = study.load().get_trials()
    assert [t.state for t in trials].count(TrialState.COMPLETE) == n
    client, runs = study.runs()
    (parent,) = [r for r in runs if r.data.tags.get("run_kind") == "study"]
    children = {int(r.data.tags["trial_number"]): r for r in _children(runs, parent.info.run_id)}
    assert sorted(children) == [t.number for t in trials]
    for t in trials:
        run = children[t.number]
        assert run.info.status == "FINISHED"
        _assert_complete_history(client, run, epochs)
        assert run.data.metrics["test_neg_elbo"] == pytest.approx(t.user_attrs["test_neg_elbo"])
    assert parent.info.status == "FINISHED"
    assert not list((tmp_path / "spool").glob("*.jsonl")), "writes were left in the spool"
