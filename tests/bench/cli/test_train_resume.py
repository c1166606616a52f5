"""``cvae-bench train --resume RUN_ID``: a SIGKILLed train run continues from its checkpoint in a new
run, with the whole history and the same final metrics as a run straight through (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.tracking import RUN_KEY_TAG, make_client
from bench.training.checkpoint_store import checkpoint_root
from studies.cli import main

REPO = Path(__file__).resolve().parents[3]
EPOCHS = 24
ARGS = ["train", "--dataset", "digits", "--limit", "300", "--epochs", str(EPOCHS), "--iw-samples", "5",
        "--checkpoint-every", "2", "--no-progress", "--no-model"]


@pytest.mark.slow
def test_train_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    before = set((checkpoint_root() / "run").glob("*/state.pt"))  # killed runs of other tests keep theirs
    proc = subprocess.Popen([sys.executable, "-m", "studies.cli", *ARGS], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (found := sorted(set((checkpoint_root() / "run").glob("*/state.pt")) - before)):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no checkpoint in time"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    key = found[0].parent.name  # the run's local id, its run key
    assert key.startswith("local-")
    client = make_client(uri)
    deadline = time.time() + 120
    while True:  # the writer process outlives the killed command: it writes what it was given, then ends the run
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  f"tags.`{RUN_KEY_TAG}` = '{key}'")
        if runs and runs[0].info.status != "RUNNING":
            break
        assert time.time() < deadline, "the killed run was not ended by its writer process"
        time.sleep(0.1)
    killed = runs[0].info.run_id  # what a user sees in the MLflow UI and resumes with
    assert runs[0].info.status == "KILLED"
    if not client.list_artifacts(killed, "checkpoint"):  # killed before the artifact was sent: as if it had been
        client.log_artifact(killed, str(found[0]), "checkpoint")

    assert main([*ARGS, "--resume", killed, "--metrics-json", str(tmp_path / "resumed.json")]) == 0
    out = capsys.readouterr().out
    assert f"--resume {killed}: continuing after epoch" in out
    assert main([*ARGS, "--no-track", "--checkpoint-every", "0", "--metrics-json", str(tmp_path / "full.json")]) == 0
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    full = json.loads((tmp_path / "full.json").read_text())
    assert resumed.keys() == full.keys()
    for name, value in full.items():
        assert resumed[name] == pytest.approx(value, rel=1e-6), name

    runs = client.search_runs([client.get_experiment_by_name("cvae-bench-train").experiment_id])
    new = [r for r in runs if r.data.tags.get("resumed_from_run") == killed]
    assert len(new) == 1
    k = int(new[0].data.tags["resumed_from_epoch"])
    assert 2 <= k < EPOCHS and k % 2 == 0
    steps = sorted(m.step for m in client.get_metric_history(new[0].info.run_id, "val_neg_elbo"))
    assert steps == list(range(1, EPOCHS + 1))  # each epoch once
    assert not set((checkpoint_root() / "run").glob("*/state.pt")) - before  # both runs' checkpoints removed
    for run_id in (killed, new[0].info.run_id):  # locally and as MLflow artifacts
        assert client.list_artifacts(run_id, "checkpoint") == [], run_id
    assert client.list_artifacts(new[0].info.run_id, "figures")  # only the checkpoints went


@pytest.mark.parametrize("bad", ["-1", "5x", "1.5", "-2s", "infm", "nans", "s"])
def test_a_bad_checkpoint_every_is_a_one_line_error(tmp_path, monkeypatch, capsys, bad):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["train", "--dataset", "digits", "--epochs", "1", "--no-track", f"--checkpoint-every={bad}"])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert f"--checkpoint-every: {bad!r} is neither a number of epochs" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("text, epochs, seconds", [("5", 5, 0.0), ("0", 0, 0.0), ("30s", 0, 30.0),
                                                   ("1.5m", 0, 90.0), ("2h", 0, 7200.0)])
def test_checkpoint_every_is_epochs_or_a_time(text, epochs, seconds):
    from bench.cli.arguments import DEFAULT_TRAIN_CHECKPOINT_EVERY, CheckpointEvery, checkpoint_every

    assert checkpoint_every(text) == CheckpointEvery(epochs=epochs, seconds=seconds)
    assert bool(checkpoint_every(text)) == (text != "0")
    assert checkpoint_every(DEFAULT_TRAIN_CHECKPOINT_EVERY).seconds >= 10  # a short run pays for no save


MISSING = "0123456789abcdef0123456789abcdef"  # a run id with no checkpoint anywhere
QUICK = ["train", "--dataset", "digits", "--limit", "100", "--epochs", "1", "--iw-samples", "2", "--no-progress",
         "--no-model"]


def _run(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_resume_without_a_checkpoint_stops_with_one_line(tmp_path, monkeypatch, capsys):
    """It used to train from epoch 1 and exit 0: the user asked to resume."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = make_client(uri)  # an existing store (a new one makes MLflow log its table creation)
    capsys.readouterr()
    assert _run([*QUICK, "--tracking-uri", uri, "--resume", MISSING]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and "Traceback" not in captured.out + err, err
    assert f"--resume {MISSING}: cannot resume" in err and "--fresh-if-missing" in err
    assert "epoch" not in captured.out.split("\n", 1)[-1]  # no epoch table: nothing trained
    experiment = client.get_experiment_by_name("cvae-bench-train")
    assert experiment is None or not client.search_runs([experiment.experiment_id])  # no run was made


def test_resume_without_a_checkpoint_untracked_stops_too(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _run([*QUICK, "--no-track", "--resume", MISSING]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_fresh_if_missing_trains_from_epoch_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _run([*QUICK, "--no-track", "--resume", MISSING, "--fresh-if-missing",
                 "--metrics-json", str(tmp_path / "m.json")]) == 0
    captured = capsys.readouterr()
    assert "--fresh-if-missing: starting at epoch 1" in captured.err
    assert json.loads((tmp_path / "m.json").read_text())["test_neg_elbo"] > 0


def test_fresh_if_missing_needs_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _run([*QUICK, "--no-track", "--fresh-if-missing"]) == 2
    assert "--fresh-if-missing: only with --resume" in capsys.readouterr().err
