"""Tracking never stalls training and loses nothing, against a real ``mlflow server`` on loopback:
a hung server (SIGSTOP), one killed and restarted mid-study, one down from the start (study and
train). Commands run as separate processes, as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from local_services import MlflowServer, free_port
from optuna.trial import TrialState

from bench.tracking import make_client

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
STUDY = ["--variant", "beta-cvae", "--epochs", "3", "--limit", "300", "--iw-samples", "5", "--sampler", "random",
         "--pruner", "none", "--threads", "1", "--no-progress", "--heartbeat", "60"]
#: Trials that use their latent (feasible, so the best is registered): beta 0.05 keeps latent units active.
USES_LATENT = {"lr": 1e-2, "beta": 0.05, "beta_schedule": "constant", "latent_dim": 8, "hidden_width": 128,
               "hidden_depth": 1, "batch_size": 64}


class Setup:
    """A server (not started) on a fixed port, an Optuna SQLite storage and a spool, in ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server = MlflowServer(f"sqlite:///{tmp / 'mlflow.db'}", tmp / "artifacts", tmp / "server.log")
        self.storage = f"sqlite:///{tmp / 'optuna.db'}"
        self.spool = tmp / "spool"
        self.env = dict(os.environ, PYTHONPATH=str(REPO), CVAE_BENCH_SPOOL=str(self.spool),
                        CVAE_BENCH_CHECKPOINTS=str(tmp / "checkpoints"), CVAE_BENCH_FLUSH_BOUND_S="5")

    def command(self, *args: str, wait: bool = True, timeout: float = 600) -> subprocess.CompletedProcess | subprocess.Popen:
        cmd = [sys.executable, "-m", "studies.cli", *args]
        if not wait:
            return subprocess.Popen(cmd, cwd=self.tmp, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
        return subprocess.run(cmd, cwd=self.tmp, env=self.env, capture_output=True, text=True, timeout=timeout)

    def study(self, name: str, trials: int, *extra: str, wait: bool = True):
        """``cvae-bench study``; a new study's trials are queued with parameters that use the latent."""
        try:
            self.load(name)
        except KeyError:
            made = optuna.create_study(study_name=name, storage=self.storage)
            for lr in (1e-2, 5e-3, 8e-3, 3e-3)[:trials]:
                made.enqueue_trial({**USES_LATENT, "lr": lr})
        return self.command("study", "--study-name", name, "--storage", self.storage, "--tracking-uri",
                            self.server.uri, "--trials", str(trials), *STUDY, *extra, wait=wait)

    def load(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.storage)


@pytest.fixture
def setup(tmp_path):
    made = Setup(tmp_path)
    yield made
    made.server.stop()


def _assert_study_is_whole_and_registered(setup: Setup, name: str, trials: int, epochs: int = 3) -> None:
    """Every trial's run holds every epoch and its model, under the study's parent; the best trial is
    registered @best; the ids Optuna recorded lead to those runs."""
    from bench.tracking.ops import Store
    from studies.registry import run_id_of

    client = make_client(setup.server.uri)
    real = Store(client, setup.server.uri).real  # a local id: the run recorded under it (its run key)
    study = setup.load(name)
    parent = client.get_run(real(run_id_of(study, study.user_attrs["mlflow_parent_run_id"])))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == trials
    for trial in complete:
        run = client.get_run(real(run_id_of(study, trial.user_attrs["mlflow_run_id"])))
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED" and run.data.tags["trial_number"] == str(trial.number)
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_kl")) == [*range(1, epochs + 1)]
        assert "test_neg_elbo" in run.data.metrics
    best = min(complete, key=lambda t: t.value)
    version = client.get_model_version_by_alias(name, "best")
    assert version.tags["trial_number"] == str(best.number)


def test_a_hung_server_does_not_stall_trials(setup):
    """SIGSTOP the server for the whole study: trials take no longer than without a server (each far less
    than one HTTP timeout, 20 s), the study ends within its bounded wait, and once the server runs again
    `cvae-bench sync` sends everything, the registration included."""
    setup.server.start()
    os.killpg(setup.server.proc.pid, signal.SIGSTOP)  # the server and its web workers: a hung server
    try:
        start = time.monotonic()
        done = setup.study("hung", 3)
        took = time.monotonic() - start
        assert done.returncode == 0, done.stdout + done.stderr
        said = done.stdout + done.stderr
        assert "writes wait in the spool" in said or "still queued" in said, said
        for trial in setup.load("hung").get_trials(states=(TrialState.COMPLETE,)):
            seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
            assert seconds < 15, f"trial {trial.number} took {seconds:.1f} s with the server hung"
        assert took < 120, took
    finally:
        os.killpg(setup.server.proc.pid, signal.SIGCONT)
    synced = setup.command("sync", "--tracking-uri", setup.server.uri)
    assert synced.returncode == 0 and "sent " in synced.stdout, synced.stdout + synced.stderr
    _assert_study_is_whole_and_registered(setup, "hung", 3)


def test_a_server_down_from_the_start_is_a_longer_outage_for_study_and_train(setup):
    """Study and train run to the end with the server down (exit 0, a note), and are whole after `sync`:
    runs with their real ids, parent links, models, the best trial registered; a rerun records the
    store's ids of the runs Optuna knew only by their local ids."""
    from studies.registry import RUN_IDS_ATTR

    study = setup.study("down", 3)
    assert study.returncode == 0, study.stdout + study.stderr
    assert "writes wait in the spool" in study.stdout and "cvae-bench sync" in study.stdout
    assert all(t.user_attrs["mlflow_run_id"].startswith("local-") for t in setup.load("down").trials)
    train = setup.command("train", "--epochs", "2", "--limit", "300", "--iw-samples", "5", "--no-progress",
                          "--tracking-uri", setup.server.uri, "--experiment", "t")
    assert train.returncode == 0, train.stdout + train.stderr
    assert "writes wait in the spool" in train.stderr

    setup.server.start()
    synced = setup.command("sync", "--tracking-uri", setup.server.uri)
    assert synced.returncode == 0 and "from 2 file(s)" in synced.stdout, synced.stdout + synced.stderr
    rerun = setup.study("down", 3)  # runs no trial: the study is full
    assert rerun.returncode == 0 and "ran 0 trials" in rerun.stdout, rerun.stdout + rerun.stderr
    ids = setup.load("down").user_attrs[RUN_IDS_ATTR]
    assert all(t.user_attrs["mlflow_run_id"] in ids for t in setup.load("down").trials)
    _assert_study_is_whole_and_registered(setup, "down", 3)
    client = make_client(setup.server.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert run.info.status == "FINISHED" and "test_neg_elbo" in run.data.metrics
    assert client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert os.listdir(setup.spool) == []


def test_a_server_killed_and_restarted_mid_study_loses_nothing_and_the_best_is_registered(setup):
    """The server dies after the first trial and comes back a few seconds later: trials that started in
    the outage hold local ids, yet once their writes are sent (by the study itself if the server is back
    before it ends, else by the `cvae-bench sync` it asks for) the best trial is registered @best and
    `sample` draws from it."""
    setup.server.start()
    proc = setup.study("restart", 4, "--epochs", "6", wait=False)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if setup.load("restart").get_trials(states=(TrialState.COMPLETE,)):
                    break
            except KeyError:
                pass
            time.sleep(0.2)
        setup.server.stop()
        time.sleep(4)
        setup.server.start()
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    if "writes wait in the spool" in out:
        synced = setup.command("sync", "--tracking-uri", setup.server.uri)
        assert synced.returncode == 0, synced.stdout + synced.stderr
    _assert_study_is_whole_and_registered(setup, "restart", 4, epochs=6)
    sample = setup.command("sample", "--model", "models:/restart@best", "--tracking-uri", setup.server.uri,
                           "--out", str(setup.tmp / "s.png"))
    assert sample.returncode == 0 and (setup.tmp / "s.png").is_file(), sample.stdout + sample.stderr


def test_a_finished_study_and_train_leave_no_lock_file(tmp_path):
    """SQLite stores for Optuna and MLflow: the locks beside them, and the writer's spool lock, go away."""
    env = dict(os.environ, PYTHONPATH=str(REPO), CVAE_BENCH_SPOOL=str(tmp_path / "spool"))
    for args in (["study", "--trials", "2", *STUDY], ["train", "--epochs", "1", "--limit", "200", "--iw-samples", "2",
                                                       "--no-progress", "--checkpoint-every", "1"]):
        done = subprocess.run([sys.executable, "-m", "studies.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlruns", "optuna.db"]
    assert not (tmp_path / "spool").exists() or os.listdir(tmp_path / "spool") == []
