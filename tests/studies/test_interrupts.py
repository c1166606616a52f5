"""Ctrl-C and SIGTERM stop a study, a worker or the suite the way they stop ``train``: the trial in flight
stops, keeps its last checkpoint and is queued again with the same parameters, so the rerun resumes it;
its run and the parent run end KILLED with the reason; one line, no traceback, exit 130 or 143. A
checkpoint that cannot be written costs a warning, not the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from bench.tracking import make_client
from bench.tracking.ops import Store
from bench.training.checkpoint_store import checkpoint_path, trial_key
from studies.registry import run_id_of

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
TRIAL = ["--epochs", "40", "--limit", "300", "--iw-samples", "5", "--pruner", "none", "--sampler", "random",
         "--checkpoint-every", "2", "--threads", "1", "--no-progress"]
EXIT = {signal.SIGINT: (130, "interrupted (Ctrl-C)"), signal.SIGTERM: (143, "terminated (SIGTERM)")}


def _env(tmp: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), CVAE_BENCH_CHECKPOINTS=str(tmp / "checkpoints"),
                CVAE_BENCH_SPOOL=str(tmp / "spool"))


def _popen(args: list[str], **kwargs) -> subprocess.Popen:
    """Start ``args`` with Ctrl-C's default disposition: a shell running this suite in the background starts
    it with SIGINT ignored, which every child would inherit (Python keeps an ignored SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a handler is reset to default by exec
    try:
        return subprocess.Popen(args, **kwargs)
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_when_checkpointed(proc: subprocess.Popen, checkpoint: Path, signum: int) -> tuple[str, str, datetime]:
    """Send ``signum`` once ``checkpoint`` exists; (stdout, stderr, when the signal was sent)."""
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    sent = datetime.now()
    proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()  # no command left training for the rest of the suite
    return out, err, sent


@pytest.mark.parametrize("command,signum", [("study", signal.SIGINT), ("worker", signal.SIGTERM)])
def test_an_interrupted_trial_is_queued_again_and_resumed_by_the_rerun(tmp_path, command, signum):
    name, storage, tracking = "t-stop", f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    total = ["--trials", "2"] if command == "study" else ["--trials-total", "2"]
    args = [sys.executable, "-m", "studies.cli", command, "--study-name", name, "--storage", storage,
            "--tracking-uri", tracking, *total, *TRIAL]
    env = _env(tmp_path)
    proc = _popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "checkpoints" / checkpoint_path(trial_key(name, 0), Path("")).as_posix()
    out, err, sent = _stop_when_checkpointed(proc, checkpoint, signum)
    code, reason = EXIT[signum]
    assert proc.returncode == code, out + err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == f"cvae-bench {command}: {reason}", err
    assert checkpoint.exists()  # kept: the retry resumes from it

    study = optuna.load_study(study_name=name, storage=storage)
    stopped, queued = study.trials[0], study.trials[-1]
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["interrupted"] is True
    stopped_after = (stopped.datetime_complete - sent).total_seconds()
    assert stopped_after < 10, f"the trial went on for {stopped_after:.1f} s after the signal"
    assert queued.state == TrialState.WAITING and queued.params == stopped.params
    client = make_client(tracking)
    real = Store(client, tracking).real
    run = client.get_run(real(stopped.user_attrs["mlflow_run_id"]))
    assert run.info.status == "KILLED" and run.data.tags["end_reason"] == reason
    parent = client.get_run(real(run_id_of(study, study.user_attrs["mlflow_parent_run_id"])))
    assert parent.info.status == "KILLED" and parent.data.tags["end_reason"] == reason

    rerun = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    study = optuna.load_study(study_name=name, storage=storage)
    resumed = study.trials[queued.number]
    assert resumed.state == TrialState.COMPLETE and resumed.params == stopped.params
    assert 2 <= resumed.user_attrs["resumed_from_epoch"] < 40
    assert sorted(resumed.intermediate_values) == list(range(1, 41))
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 2
    assert not checkpoint.exists()


def test_sigterm_stops_the_suite_in_one_line(tmp_path):
    config = tmp_path / "suite.json"
    config.write_text(json.dumps({"variants": ["cvae"], "trials": 2, "epochs": 40, "limit": 300, "pruner": "none",
                                  "checkpoint_every": 2, "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
                                  "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}))
    proc = _popen([sys.executable, "-m", "studies.cli", "suite", "--config", str(config), "--no-progress"],
                  cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    study_dirs = tmp_path / "checkpoints" / "study"
    deadline = time.monotonic() + 300
    while not list(study_dirs.glob("*/trial-0/state.pt")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    out, err, _ = _stop_when_checkpointed(proc, next(study_dirs.glob("*/trial-0/state.pt")), signal.SIGTERM)
    assert proc.returncode == 143, out + err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "cvae-bench suite: terminated (SIGTERM)", err
    (name,) = [d.name for d in study_dirs.iterdir()]
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]


def test_a_checkpoint_that_cannot_be_written_is_one_warning_and_training_goes_on(tmp_path):
    (tmp_path / "not-a-folder").write_text("")  # checkpoints would go below a file: every write fails
    env = dict(_env(tmp_path), CVAE_BENCH_CHECKPOINTS=str(tmp_path / "not-a-folder" / "checkpoints"))
    train = subprocess.run([sys.executable, "-m", "studies.cli", "train", "--epochs", "4", "--limit", "200",
                            "--iw-samples", "2", "--checkpoint-every", "1", "--no-progress"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stdout + train.stderr
    assert train.stderr.count("warning: checkpoint of epoch") == 1 and "Traceback" not in train.stderr
    study = subprocess.run([sys.executable, "-m", "studies.cli", "study", "--trials", "2", "--epochs", "3", "--limit",
                            "200", "--iw-samples", "2", "--checkpoint-every", "1", "--pruner", "none", "--no-progress"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert study.returncode == 0, study.stdout + study.stderr
    assert study.stderr.count("warning: checkpoint of epoch") == 2  # one per trial
    assert "2/2 finished (2 complete" in study.stdout
