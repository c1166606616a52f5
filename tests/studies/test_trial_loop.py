"""The study-wide trial budget: N workers, exactly N finished trials, killed workers retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import optuna
import pytest
from optuna.trial import TrialState

from studies.lock import study_lock
from studies.trial_loop import run_until_total

WORKER = textwrap.dedent("""
    import os, sys, time, optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from studies.lock import study_lock
    from studies.trial_loop import run_until_total
    url, total, sleep_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    storage = RDBStorage(url, heartbeat_interval=1, grace_period=3,
                         heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
    study = optuna.load_study(study_name="s", storage=storage)
    def objective(trial):
        x = trial.suggest_float("x", -1, 1)
        trial.set_user_attr("pid", os.getpid())
        time.sleep(sleep_s)
        return x * x
    run_until_total(study, objective, total, lambda: study_lock(url, "s"), poll_seconds=0.5)
""")


_SPAWNED: list[subprocess.Popen] = []


def _spawn(url: str, total: int, sleep_s: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-c", WORKER, url, str(total), str(sleep_s)], env=env)
    _SPAWNED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_stray_workers():
    """A failing test must not leave its worker processes running."""
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


def test_in_process_total_is_exact_and_resumable(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    objective = lambda t: t.suggest_float("x", 0, 1)  # noqa: E731
    assert run_until_total(study, objective, 3, lambda: study_lock(url, "s")) == 3
    # A rerun with the same total runs nothing; a larger total runs only what is missing.
    assert run_until_total(study, objective, 3, lambda: study_lock(url, "s")) == 0
    assert run_until_total(study, objective, 5, lambda: study_lock(url, "s")) == 2
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 5


@pytest.mark.slow
def test_three_workers_reach_exactly_n(sqlite_url):
    workers = [_spawn(sqlite_url, 7, 0.3) for _ in range(3)]
    for w in workers:
        assert w.wait(timeout=120) == 0
    trials = optuna.load_study(study_name="s", storage=sqlite_url).get_trials()
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 7
    assert len(trials) == 7  # nobody overshot
    assert len({t.user_attrs["pid"] for t in trials}) >= 2  # the work was shared


@pytest.mark.slow
def test_killed_worker_trial_is_failed_by_heartbeat_and_retried(sqlite_url):
    victim = _spawn(sqlite_url, 4, 60.0)  # its first trial would take a minute
    study = optuna.load_study(study_name="s", storage=sqlite_url)
    deadline = time.time() + 60
    # Wait until the victim's trial has its parameters (it sleeps after its pid is recorded).
    while not any("pid" in t.user_attrs for t in study.get_trials(states=(TrialState.RUNNING,))):
        assert time.time() < deadline, "victim never started a trial"
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = _spawn(sqlite_url, 4, 0.2)
    assert survivor.wait(timeout=120) == 0
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 4
    assert states.count(TrialState.FAIL) == 1
    failed = next(t for t in trials if t.state == TrialState.FAIL)
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == failed.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == failed.params
    assert TrialState.RUNNING not in states
