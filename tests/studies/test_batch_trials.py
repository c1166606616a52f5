"""`study --batch-trials K`: trials asked K at a time and trained as vmapped groups, each still its own
Optuna trial and MLflow run; the exact study-wide total and heartbeat retries hold with batches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import FixedTrial, TrialState

from bench import TrainConfig, fit, model_config
from bench.training import BatchMember, batched_fit, torch_threads
from bench.tracking import make_client
from bench.tracking.ops import Store
from bench.training.checkpoint_store import checkpoint_path, trial_key
from studies.batch_runner import run_batches_until_total
from studies.cli import main
from studies.lock import study_lock
from studies.registry import run_id_of
from studies.runner import load_data
from studies.search_space import SHAPE_PARAMS, suggest
from studies.spec import StudySpec

REPO = Path(__file__).resolve().parents[2]
GOOD = {"latent_dim": 8, "hidden_width": 128, "hidden_depth": 1, "batch_size": 64}
EPOCHS, LIMIT = 2, 400


def _member(params: dict, epochs: int, data, **kwargs) -> BatchMember:
    """The trial with ``params`` as a study trains it (its seed 0, CPU, 5 importance samples)."""
    sampled = suggest(FixedTrial(params), "cvae", epochs)
    return BatchMember(model_config("cvae", data, **sampled.model_kwargs),
                       TrainConfig(epochs=epochs, seed=0, device="cpu", iw_samples=5, **sampled.train_kwargs),
                       **kwargs)


def _direct_fit(params: dict, epochs: int, limit: int):
    """The trial with ``params`` run alone with fit."""
    data = load_data(StudySpec(limit=limit, epochs=epochs, iw_samples=5, device="cpu"))
    member = _member(params, epochs, data)
    with torch_threads(1):
        return fit(member.model_cfg, member.train_cfg, data, progress=False)


# -- one tracked study: a group of three (one NaN), then a group of two (one pruned) and a trial alone --------

@pytest.fixture(scope="module")
def batched_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("batched")
    storage, tracking = f"sqlite:///{root / 'optuna.db'}", f"sqlite:///{root / 'mlflow.db'}"
    study = optuna.create_study(study_name="t-batch", storage=storage)
    for params in ({"lr": 1e-2, **GOOD}, {"lr": 5e-3, **GOOD}, {"lr": 1e8, **GOOD},  # batch 1; lr=1e8 diverges
                   # batch 2; measured val -ELBO after epoch 1: 45.2 (pruned), 28.2 and 29.3 nats against the
                   # median 32.4 of trials 0 and 1 (30.2, 34.6)
                   {"lr": 1e-4, **GOOD}, {"lr": 2e-2, **GOOD},
                   {"lr": 2e-2, **GOOD, "hidden_width": 64}):  # another shape: a group of its own
        study.enqueue_trial(params)
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Fixed parameter lr", category=UserWarning)  # lr=1e8 on purpose
        mp.chdir(root)
        # 5 finished wanted: batch 1 ends with 2 (one FAIL), so batch 2 has room for 3
        rc = main(["study", "--study-name", "t-batch", "--storage", storage, "--tracking-uri", tracking,
                   "--trials", "5", "--epochs", str(EPOCHS), "--limit", str(LIMIT), "--pruner", "median",
                   "--batch-trials", "3", "--iw-samples", "5", "--no-progress"])
    assert rc == 0
    return optuna.load_study(study_name="t-batch", storage=storage), make_client(tracking)


@pytest.mark.slow
def test_batches_form_groups_and_each_trial_ends_in_its_own_state(batched_study):
    study, _ = batched_study
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL,
                                         TrialState.PRUNED, TrialState.COMPLETE, TrialState.COMPLETE]
    assert [t.user_attrs["batch_group_size"] for t in trials] == [3, 3, 3, 2, 2, 1]
    assert "loss became" in trials[2].user_attrs["fail_reason"]  # the diverged loss failed its trial, not its group
    assert sorted(trials[3].intermediate_values) == [1]  # pruned after epoch 1: it stopped there


@pytest.mark.slow
def test_a_trial_trained_in_a_group_ends_as_it_would_alone(batched_study):
    """Trials 4 and 5 trained while batch 1's trials were logging (figures, MLflow) in their threads."""
    study, _ = batched_study
    for trial in (study.trials[0], study.trials[4], study.trials[5]):
        alone = _direct_fit(trial.params, EPOCHS, LIMIT)
        assert trial.value == pytest.approx(alone.history[-1]["val_neg_elbo"], rel=0.01)
        assert trial.value == pytest.approx(alone.history[-1]["val_neg_elbo"], rel=1e-4)  # measured: ~1e-7
        assert trial.user_attrs["test_iw_nll"] == pytest.approx(alone.final["test_iw_nll"], rel=1e-4)


@pytest.mark.slow
def test_each_trial_of_a_group_is_its_own_run(batched_study):
    study, client = batched_study
    real = Store(client, "").real  # a run recorded by its local id: the run carrying it as its run key
    parent = client.get_run(real(run_id_of(study, study.user_attrs["mlflow_parent_run_id"])))
    assert parent.data.tags["batch_trials"] == "3"
    for t in study.get_trials():
        run = client.get_run(real(run_id_of(study, t.user_attrs["mlflow_run_id"])))
        assert run.data.tags["trial_number"] == str(t.number)
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_neg_elbo"))
        figures = [a.path for a in client.list_artifacts(run.info.run_id, "figures")]
        models = client.search_logged_models([run.info.experiment_id],
                                             filter_string=f"source_run_id = '{run.info.run_id}'")
        if t.state == TrialState.COMPLETE:
            assert run.info.status == "FINISHED" and steps == list(range(1, EPOCHS + 1))
            assert len(figures) >= 4 and len(models) == 1 and "test_neg_elbo" in run.data.metrics
        elif t.state == TrialState.PRUNED:
            assert run.info.status == "FINISHED" and run.info.run_name.startswith("pruned: ")  # not a crash
            assert steps == [1] and not models
        else:
            assert run.info.status == "FAILED" and "loss became" in run.data.tags["end_reason"] and not models
        assert client.list_artifacts(run.info.run_id, "checkpoint") == []  # finished trials leave none


def test_a_batch_shares_the_shape_parameters_of_its_first_trial(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    assert main(["study", "--study-name", "s", "--storage", storage, "--trials", "6", "--epochs", "1",
                 "--limit", "200", "--sampler", "random", "--batch-trials", "3", "--iw-samples", "5", "--no-track",
                 "--no-progress"]) == 0
    trials = optuna.load_study(study_name="s", storage=storage).get_trials()
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    for batch in (trials[:3], trials[3:]):
        assert len({tuple(t.params[n] for n in SHAPE_PARAMS if n in t.params) for t in batch}) == 1
        assert len({t.params["lr"] for t in batch}) == 3  # the rest is sampled per trial
        assert all(t.user_attrs["batch_group_size"] == 3 for t in batch)


def test_a_trial_trained_alone_does_not_keep_a_copied_group_size(digits):
    """A heartbeat retry copies its dead trial's attributes; trained alone, it says so."""
    from studies.objective import Objective, TrialSettings

    study = optuna.create_study()
    study.enqueue_trial({"lr": 1e-2, **GOOD})
    trial = study.ask()
    trial.set_user_attr("batch_group_size", 3)  # as a retry of a trial of a lost batch of 3 has it
    objective = Objective(TrialSettings(variant="cvae", objective="neg-elbo", epochs=1, device="cpu", iw_samples=5,
                                        study_name="s"), digits)
    assert objective(trial) > 0
    assert study.trials[0].user_attrs["batch_group_size"] == 1


# -- the Optuna side: exact totals and heartbeat retries with batches --------------------------------------

def _sleepy(seconds: float):
    def objective(trial, fit_fn):
        trial.set_user_attr("pid", os.getpid())
        time.sleep(seconds)
        return trial.params["x"] ** 2
    return objective


def _sample(trial):
    trial.suggest_float("x", -1, 1)


def test_in_process_batches_reach_exactly_the_total_and_resume(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    run = lambda total: run_batches_until_total(study, _sleepy(0), total, lambda: study_lock(url, "s"),  # noqa: E731
                                                batch_trials=3, sample=_sample)
    assert run(5) == 5  # 3, then 2: never more than the room left
    assert run(5) == 0
    assert run(8) == 3
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 8


WORKER = textwrap.dedent("""
    import os, sys, time, optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from studies.batch_runner import run_batches_until_total
    from studies.lock import study_lock
    url, total, sleep_s, k = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    storage = RDBStorage(url, heartbeat_interval=1, grace_period=3,
                         heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
    study = optuna.load_study(study_name="s", storage=storage)
    def objective(trial, fit_fn):
        trial.set_user_attr("pid", os.getpid())
        time.sleep(sleep_s)
        return trial.params["x"] ** 2
    run_batches_until_total(study, objective, total, lambda: study_lock(url, "s"), batch_trials=k,
                            sample=lambda t: t.suggest_float("x", -1, 1), poll_seconds=0.5)
""")

_SPAWNED: list[subprocess.Popen] = []


def _spawn(url: str, total: int, sleep_s: float, k: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", WORKER, url, str(total), str(sleep_s), str(k)], env=env)
    _SPAWNED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_stray_workers():
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="s", storage=url)
    return url


@pytest.mark.slow
def test_three_batched_workers_reach_exactly_n(sqlite_url):
    workers = [_spawn(sqlite_url, 7, 2.0, 3) for _ in range(3)]  # alone, one would need three rounds: 6 s
    for w in workers:
        assert w.wait(timeout=120) == 0
    trials = optuna.load_study(study_name="s", storage=sqlite_url).get_trials()
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 7
    assert len(trials) == 7  # nobody overshot, though each asks up to 3 at once
    assert len({t.user_attrs["pid"] for t in trials}) >= 2, [t.user_attrs["pid"] for t in trials]


@pytest.mark.slow
def test_a_killed_batch_is_failed_by_heartbeat_and_retried(sqlite_url):
    victim = _spawn(sqlite_url, 3, 60.0, 2)  # a batch of 2 that would take a minute
    study = optuna.load_study(study_name="s", storage=sqlite_url)
    deadline = time.time() + 60
    while len([t for t in study.get_trials(states=(TrialState.RUNNING,)) if "pid" in t.user_attrs]) < 2:
        assert time.time() < deadline, "victim never started its batch"
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = _spawn(sqlite_url, 3, 0.2, 2)
    assert survivor.wait(timeout=120) == 0
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 3 and states.count(TrialState.FAIL) == 2
    for failed in (t for t in trials if t.state == TrialState.FAIL):  # each trial of the batch retried once
        retried = [t for t in trials if t.system_attrs.get("failed_trial") == failed.number]
        assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
        assert retried[0].params == failed.params
    assert TrialState.RUNNING not in states


# -- a lost batch worker: the retries resume from the group's checkpoints, in a batch or alone ----------------

class BatchWorker:
    """`cvae-bench worker --batch-trials 3` on one study of three enqueued trials (one shape, three learning
    rates): SQLite Optuna storage with a 1 s heartbeat, SQLite MLflow."""

    EPOCHS, EVERY, LIMIT = 20, 2, 300  # killed once epoch 2 is checkpointed: ~1.5 s before it would end
    PARAMS = [{"lr": lr, **GOOD, "batch_size": 32} for lr in (1e-3, 3e-3, 1e-2)]
    TRIALS = len(PARAMS)

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = root, name
        self.storage = f"sqlite:///{root / 'optuna.db'}"
        self.tracking = f"sqlite:///{root / 'mlflow.db'}"

    def args(self, batch: int) -> list[str]:
        return ["worker", "--study-name", self.name, "--storage", self.storage, "--tracking-uri", self.tracking,
                "--trials-total", str(self.TRIALS), "--epochs", str(self.EPOCHS), "--limit", str(self.LIMIT),
                "--pruner", "none", "--iw-samples", "5", "--heartbeat", "1", "--checkpoint-every", str(self.EVERY),
                "--no-progress", "--threads", "1", "--batch-trials", str(batch)]

    def load(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.storage)

    def kill_after_checkpoints(self) -> list[optuna.trial.FrozenTrial]:
        """Start a batched worker, SIGKILL it once each of its trials has written a checkpoint."""
        study = optuna.create_study(study_name=self.name, storage=self.storage)
        for params in self.PARAMS:
            study.enqueue_trial(params)
        env = dict(os.environ, PYTHONPATH=str(REPO), MLFLOW_DISABLE_TELEMETRY="true")
        proc = subprocess.Popen([sys.executable, "-m", "studies.cli", *self.args(3)], cwd=self.root, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _SPAWNED.append(proc)
        paths = [checkpoint_path(trial_key(self.name, n)) for n in range(self.TRIALS)]
        deadline = time.time() + 180
        while not all(p.exists() for p in paths):
            assert proc.poll() is None, "the worker ended before it could be killed"
            assert time.time() < deadline, "no checkpoints were written in time"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        running = [t for t in self.load().get_trials() if t.state == TrialState.RUNNING]
        assert len(running) == self.TRIALS, [t.state for t in self.load().get_trials()]
        time.sleep(2.5)  # past the 2-heartbeat grace period
        return running

    def resumed_reference(self, retried: list[optuna.trial.FrozenTrial], batch: int) -> dict[int, dict]:
        """What each retry must end with, trained here on the same kernels: the killed group straight
        through with ``batched_fit`` (its checkpoints kept in memory), then each retry resumed from its
        epoch k -- alone with ``fit``, or with the retries resumed from the same epoch as one group.
        {trial number: {"value": last val -ELBO, **test metrics}}.

        Not the same parameters run alone straight through: vmap's batched matmuls round otherwise than
        plain ones, and at lr 1e-2 ten epochs grow that into 1e-4 relative (docs/batched-trials.md)."""
        data = load_data(StudySpec(limit=self.LIMIT, epochs=self.EPOCHS, iw_samples=5, device="cpu"))
        states: list[dict[int, dict]] = [{} for _ in self.PARAMS]
        with torch_threads(1):  # as the worker's --threads 1
            batched_fit([_member(p, self.EPOCHS, data, checkpoint_every=self.EVERY,
                                 checkpoint=lambda epoch, state, i=i: states[i].__setitem__(epoch, state))
                         for i, p in enumerate(self.PARAMS)], data, progress=False, final_eval=False)
            groups: dict[int, list[optuna.trial.FrozenTrial]] = {}  # by resume epoch in a batch, else one each
            for t in sorted(retried, key=lambda t: t.number):
                groups.setdefault(t.user_attrs["resumed_from_epoch"] if batch > 1 else t.number, []).append(t)
            results = {}
            for group in groups.values():
                members = [_member(t.params, self.EPOCHS, data, resume=states[self.PARAMS.index(t.params)][
                    t.user_attrs["resumed_from_epoch"]]) for t in group]
                for t, outcome in zip(group, batched_fit(members, data, progress=False)):
                    assert not isinstance(outcome, Exception), outcome
                    results[t.number] = {"value": outcome.history[-1]["val_neg_elbo"], **outcome.final}
        return results


@pytest.mark.slow
@pytest.mark.parametrize("batch", [3, 1], ids=["retried-in-a-batch", "retried-alone"])
def test_a_lost_batch_resumes_from_its_checkpoints(tmp_path, monkeypatch, batch):
    w = BatchWorker(tmp_path, f"t-lost-{batch}")
    killed = w.kill_after_checkpoints()
    monkeypatch.chdir(tmp_path)
    assert main(w.args(batch)) == 0
    trials = w.load().get_trials()
    retried = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(retried) == w.TRIALS and all(t.state == TrialState.FAIL for t in trials[:w.TRIALS])
    assert sorted(tuple(sorted(t.params.items())) for t in retried) == \
        sorted(tuple(sorted(t.params.items())) for t in killed)
    reference = w.resumed_reference(retried, batch)
    client = make_client(w.tracking)
    for t in retried:
        k = t.user_attrs["resumed_from_epoch"]
        assert 1 <= k < w.EPOCHS and k % w.EVERY == 0
        assert sorted(t.intermediate_values) == list(range(1, w.EPOCHS + 1))
        same_point = [u for u in retried if u.user_attrs["resumed_from_epoch"] == k]
        # 1 with --batch-trials 1; in a batch, a group of trials resumed from the same epoch (and, per
        # group_key, the same RNG states: a checkpoint whose states differ trains in a group of its own)
        size = t.user_attrs.get("batch_group_size", 1)
        assert size == 1 if batch == 1 else 1 <= size <= len(same_point)
        history = client.get_metric_history(Store(client, "").real(t.user_attrs["mlflow_run_id"]), "val_neg_elbo")
        assert sorted(m.step for m in history) == list(range(1, w.EPOCHS + 1))  # every epoch once in its run
        # the same machine, the same kernels: what is left is the order of a few float sums
        expected = reference[t.number]
        assert t.value == pytest.approx(expected["value"], rel=1e-6)
        for name in ("test_neg_elbo", "test_iw_nll"):
            assert t.user_attrs[name] == pytest.approx(expected[name], rel=1e-6), name
