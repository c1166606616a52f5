"""Trials that survive a lost worker: a SIGKILLed `cvae-bench worker` leaves a checkpoint, and the
heartbeat retry resumes from it with the same final metrics as a trial run straight through; a corrupt
checkpoint, or one of other hyper-parameters, falls back to epoch 1 with a one-line reason."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import FixedTrial, TrialState

from bench import TrainConfig, fit, model_config
from bench.tracking import TrackingWriter, make_client
from bench.tracking.ops import Store
from bench.training import torch_threads
from bench.training.checkpoint_store import checkpoint_path, checkpoint_root, trial_key
from studies.cli import main
from studies.runner import load_data
from studies.search_space import suggest
from studies.spec import StudySpec

REPO = Path(__file__).resolve().parents[2]
EPOCHS, EVERY, LIMIT = 24, 2, 300
TIMING = ("samples_per_s", "step_ms")


class Worker:
    """`cvae-bench worker` on one study: SQLite Optuna storage with a 1 s heartbeat, SQLite MLflow."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = root, name
        self.storage = f"sqlite:///{root / 'optuna.db'}"
        self.tracking = f"sqlite:///{root / 'mlflow.db'}"

    def args(self, *extra: str) -> list[str]:
        return ["worker", "--study-name", self.name, "--storage", self.storage, "--tracking-uri", self.tracking,
                "--trials-total", "1", "--epochs", str(EPOCHS), "--limit", str(LIMIT), "--pruner", "none",
                "--iw-samples", "5", "--heartbeat", "1", "--checkpoint-every", str(EVERY), "--no-progress",
                "--threads", "1", *extra]

    def start(self) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(REPO), MLFLOW_DISABLE_TELEMETRY="true")
        return subprocess.Popen([sys.executable, "-m", "studies.cli", *self.args()], cwd=self.root, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def load(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.storage)

    def kill_after_checkpoint(self) -> optuna.trial.FrozenTrial:
        """Start a worker, SIGKILL it once trial 0 has written a checkpoint (the local file; the run's artifact
        follows through the writer process, which outlives the worker and writes what it was given); the
        killed trial."""
        path = checkpoint_path(trial_key(self.name, 0))
        proc = self.start()
        try:
            deadline = time.time() + 180
            while not path.exists():
                assert proc.poll() is None, "the worker ended before it could be killed"
                assert time.time() < deadline, "no checkpoint was written in time"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        running = [t for t in self.load().get_trials() if t.state == TrialState.RUNNING]
        assert len(running) == 1, [t.state for t in self.load().get_trials()]
        time.sleep(2.5)  # past the 2-heartbeat grace period
        return running[0]

    def resume(self, monkeypatch, capsys) -> tuple[optuna.trial.FrozenTrial, str]:
        """Run a second worker here until the study is done: (the retried trial, its stderr)."""
        monkeypatch.chdir(self.root)
        capsys.readouterr()
        assert main(self.args()) == 0
        err = capsys.readouterr().err
        trials = self.load().get_trials()
        retried = [t for t in trials if t.state == TrialState.COMPLETE]
        assert len(retried) == 1 and retried[0].number != 0
        assert trials[0].state == TrialState.FAIL
        return retried[0], err

    def real(self, run_id: str) -> str:
        """The store's id of a run a trial recorded (a local id: the run carrying it as its run key)."""
        return Store(make_client(self.tracking), self.tracking).real(run_id)

    def history(self, run_id: str) -> dict[str, list[int]]:
        client = make_client(self.tracking)
        return {key: sorted(m.step for m in client.get_metric_history(self.real(run_id), key))
                for key in ("val_neg_elbo", "train_recon")}


def direct_fit(params: dict):
    """The same trial run straight through, with fit (no study, no checkpoints)."""
    spec = StudySpec(limit=LIMIT, epochs=EPOCHS, iw_samples=5, device="cpu")
    data = load_data(spec)
    sampled = suggest(FixedTrial(params), "cvae", EPOCHS)
    with torch_threads(1):  # as the study's workers train (--threads 1)
        return fit(model_config("cvae", data, **sampled.model_kwargs),
                   TrainConfig(epochs=EPOCHS, seed=0, device="cpu", iw_samples=5, **sampled.train_kwargs), data,
                   progress=False)


@pytest.mark.slow
def test_a_retried_trial_resumes_from_the_killed_workers_checkpoint(tmp_path, monkeypatch, capsys):
    w = Worker(tmp_path, "t-ckpt")
    killed = w.kill_after_checkpoint()
    retried, err = w.resume(monkeypatch, capsys)
    k = retried.user_attrs["resumed_from_epoch"]
    assert 1 <= k < EPOCHS and k % EVERY == 0
    assert retried.params == killed.params
    assert sorted(retried.intermediate_values) == list(range(1, EPOCHS + 1))  # epochs 1..k from the checkpoint
    run_id = retried.user_attrs["mlflow_run_id"]
    assert run_id != killed.user_attrs["mlflow_run_id"]
    run = make_client(w.tracking).get_run(w.real(run_id))
    assert run.data.tags["resumed_from_epoch"] == str(k)
    assert w.history(run_id) == {key: list(range(1, EPOCHS + 1)) for key in ("val_neg_elbo", "train_recon")}
    assert "starting at epoch 1" not in err

    reference = direct_fit(retried.params)
    for name, value in reference.final.items():
        assert retried.user_attrs[name] == pytest.approx(value, rel=1e-6), name
    assert retried.user_attrs["val_neg_elbo"] == pytest.approx(reference.history[-1]["val_neg_elbo"], rel=1e-6)
    assert not (checkpoint_root() / "study" / "t-ckpt").exists()  # a finished study leaves none behind
    dead_run = killed.user_attrs["mlflow_run_id"]
    assert retried.user_attrs["checkpoint_runs"] == [dead_run, run_id]
    client = make_client(w.tracking)
    for rid in (dead_run, run_id):  # nor as MLflow artifacts, of the dead run or of the retry
        assert client.list_artifacts(w.real(rid), "checkpoint") == [], rid


@pytest.mark.slow
def test_a_corrupt_checkpoint_falls_back_to_epoch_1_with_its_reason(tmp_path, monkeypatch, capsys):
    w = Worker(tmp_path, "t-corrupt")
    w.kill_after_checkpoint()
    checkpoint_path(trial_key(w.name, 0)).write_bytes(b"garbage")
    if (artifact := _artifact_file(w)) is not None:
        artifact.write_bytes(b"garbage too")  # the dead run's artifact too: nothing usable anywhere
    retried, err = w.resume(monkeypatch, capsys)
    assert "resumed_from_epoch" not in retried.user_attrs
    lines = [line for line in err.splitlines() if "starting at epoch 1" in line]
    assert len(lines) == 1 and "unreadable" in lines[0], err
    assert w.history(retried.user_attrs["mlflow_run_id"])["val_neg_elbo"] == list(range(1, EPOCHS + 1))


def _artifact_file(w: Worker) -> Path | None:
    """The dead trial 0's ``checkpoint/state.pt`` in the local MLflow artifact store, or None when the
    worker was killed between saving the local file and handing its copy to the writer (a few ms; a
    retry on another machine then resumes from the checkpoint before, or from epoch 1). Decided once the
    dead worker's writer process has ended the run KILLED: it writes what it was given in order, so an
    artifact that is not there then never comes. On a busy machine that can take a while."""
    deadline = time.time() + 300
    while True:
        try:
            run = make_client(w.tracking).get_run(w.real(w.load().get_trials()[0].user_attrs["mlflow_run_id"]))
            if run.info.status != "RUNNING":
                assert run.info.status == "KILLED", run.info.status
                path = Path(run.info.artifact_uri.removeprefix("file://")) / "checkpoint" / "state.pt"
                return path if path.exists() else None
        except LookupError:  # the run itself is not written yet
            pass
        assert time.time() < deadline, "the dead worker's writer never ended its run"
        time.sleep(1.0)  # each look opens both stores: on 2 cores, looking often slows the writer it waits for


def _refingerprint(path: Path) -> None:
    """Make the checkpoint at ``path`` look made under other hyper-parameters."""
    state = torch.load(path, weights_only=True)
    state["fingerprint"] = "0" * 16
    torch.save(state, path)


@pytest.mark.slow
def test_a_checkpoint_of_other_hyper_parameters_is_refused(tmp_path, monkeypatch, capsys):
    w = Worker(tmp_path, "t-refused")
    w.kill_after_checkpoint()
    _refingerprint(checkpoint_path(trial_key(w.name, 0)))
    if (artifact := _artifact_file(w)) is not None:
        _refingerprint(artifact)
    retried, err = w.resume(monkeypatch, capsys)
    assert "resumed_from_epoch" not in retried.user_attrs
    lines = [line for line in err.splitlines() if "starting at epoch 1" in line]
    assert len(lines) == 1 and "another configuration" in lines[0], err
    assert w.history(retried.user_attrs["mlflow_run_id"])["val_neg_elbo"] == list(range(1, EPOCHS + 1))


def test_a_rerun_removes_the_checkpoints_of_trials_whose_retries_ran_out(tmp_path, monkeypatch):
    """A FAIL trial (its worker died, no retry left) keeps its runs' checkpoints until the study is
    rerun with nothing RUNNING or WAITING: then the local folder and the run artifacts go."""
    from bench.training import checkpoint as ckpt
    from studies.runner import remove_finished_checkpoints

    monkeypatch.setenv("CVAE_BENCH_CHECKPOINTS", str(tmp_path / "checkpoints"))
    client = make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "artifacts").as_uri())
    local = checkpoint_path(trial_key("t-gone", 0))
    ckpt.save({"epoch": 2}, local)
    runs = [client.create_run(experiment).info.run_id for _ in range(2)]
    for run_id in runs:
        client.log_artifact(run_id, str(local), "checkpoint")
        client.log_text(run_id, "kept", "notes.txt")
    study = optuna.create_study(study_name="t-gone", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    failed = study.ask()
    failed.set_user_attr("checkpoint_runs", runs)
    running = study.ask()

    writer = TrackingWriter(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not remove_finished_checkpoints(study, "t-gone", writer)  # a trial still runs: it may need them
    assert writer.flush() is None
    assert local.exists() and all(client.list_artifacts(r, "checkpoint") for r in runs)
    study.tell(failed, state=TrialState.FAIL)
    study.tell(running, 1.0)
    assert remove_finished_checkpoints(study, "t-gone", writer)
    assert writer.close() is None
    assert not local.exists()
    for run_id in runs:
        assert client.list_artifacts(run_id, "checkpoint") == [], run_id
        assert [f.path for f in client.list_artifacts(run_id)] == ["notes.txt"]
