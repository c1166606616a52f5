"""Optuna studies tracked in MLflow: `cvae-bench study`, `suite` and `report` on digits, tiny budgets.

Every study runs against temporary stores (SQLite for Optuna and MLflow, or PostgreSQL and a real
`mlflow server` on loopback for the credentials test).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from optuna.trial import TrialState

from bench.figures.draw import FIGURE_FILES
from bench.tracking import make_client
from studies.cli import main
from studies.registry import run_id_of
from studies.suite import SUMMARY_COLUMNS

REPO = Path(__file__).resolve().parents[2]
FAST = ["--iw-samples", "5", "--no-progress"]
GOOD = {"latent_dim": 8, "hidden_width": 128, "hidden_depth": 1, "batch_size": 64}


class Stores:
    def __init__(self, root: Path, study: str) -> None:
        self.root = root
        self.study = study
        self.storage = f"sqlite:///{root / 'optuna.db'}"
        self.tracking = f"sqlite:///{root / 'mlflow.db'}"

    def args(self, *extra: str) -> list[str]:
        return ["study", "--study-name", self.study, "--storage", self.storage, "--tracking-uri", self.tracking,
                *FAST, *extra]

    def load(self) -> optuna.Study:
        return optuna.load_study(study_name=self.study, storage=self.storage)

    def client(self):
        return make_client(self.tracking)

    def runs(self, experiment: str | None = None):
        client = self.client()
        exp = client.get_experiment_by_name(experiment or self.study)
        return client.search_runs([exp.experiment_id], max_results=1000)


def _children(runs, parent_id):
    return {int(r.data.tags["trial_number"]): r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id}


# -- one beta-cvae study of four enqueued trials: complete (uses its latent), complete (collapsed), NaN, pruned --

#: beta 0.05 keeps 6-8 latent units active and KL ~1.6 nats after 2 epochs; beta 4 drives the posterior to the
#: prior (KL ~0.01 nats, no active unit) and scores a val -ELBO as good or better: the trial selection must skip.
USES_LATENT = {"lr": 1e-2, "beta": 0.05, "beta_schedule": "constant", **GOOD}
COLLAPSES = {**USES_LATENT, "beta": 4.0}
MAIN = ("--variant", "beta-cvae", "--trials", "3", "--epochs", "2", "--limit", "400")


@pytest.fixture(scope="module")
def main_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    stores = Stores(root, "t-main")
    study = optuna.create_study(study_name=stores.study, storage=stores.storage)
    study.enqueue_trial(USES_LATENT)
    study.enqueue_trial(COLLAPSES)
    study.enqueue_trial({**USES_LATENT, "lr": 1e8, "hidden_width": 256, "hidden_depth": 2})  # loss turns NaN
    study.enqueue_trial({**USES_LATENT, "lr": 1e-4})  # far behind after epoch 1: the median pruner stops it
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        # lr=1e8 and beta=0.05 (under the searched 0.1) on purpose
        warnings.filterwarnings("ignore", message="Fixed parameter (lr|beta)", category=UserWarning)
        mp.chdir(root)
        rc = main(stores.args(*MAIN, "--pruner", "median"))
    assert rc == 0
    return stores


def test_study_trials_end_in_the_expected_states(main_study):
    trials = main_study.load().trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL,
                                         TrialState.PRUNED]
    assert "loss became nan" in trials[2].user_attrs["fail_reason"]
    assert sorted(trials[3].intermediate_values) == [1]  # stopped after its first epoch


def test_one_parent_run_with_one_child_per_trial(main_study):
    study = main_study.load()
    runs = main_study.runs()
    parents = [r for r in runs if r.data.tags.get("run_kind") == "study"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_id == study.user_attrs["mlflow_parent_run_id"]
    assert parent.info.status == "FINISHED"
    children = _children(runs, parent.info.run_id)
    assert sorted(children) == [0, 1, 2, 3]
    assert len(runs) == 5
    for trial in study.trials:
        run = children[trial.number]
        assert run.info.run_id == run_id_of(study, trial.user_attrs["mlflow_run_id"])
        assert float(run.data.params["lr"]) == pytest.approx(trial.params["lr"])
        assert run.data.params["latent_dim"] == "8" and run.data.params["epochs"] == "2"
        assert run.data.params["dataset"] == "digits" and run.data.params["n_train"] == "400"
        assert run.data.tags["variant"] == "beta-cvae" and run.data.tags["study_name"] == "t-main"


def test_children_hold_epoch_histories_finals_and_figures(main_study):
    study = main_study.load()
    client = main_study.client()
    children = _children(main_study.runs(), study.user_attrs["mlflow_parent_run_id"])
    for number in (0, 1):
        run = children[number]
        assert run.info.status == "FINISHED" and run.data.tags["trial_state"] == "COMPLETE"
        for key in ("val_recon", "val_kl", "val_neg_elbo", "train_recon"):
            history = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in history] == [1, 2], key
        # What Optuna saw each epoch is what MLflow holds.
        elbo = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_neg_elbo")}
        assert elbo == pytest.approx(study.trials[number].intermediate_values)
        for key in ("test_neg_elbo", "test_iw_nll", "test_active_units", "test_cond_acc", "test_cond_std"):
            assert run.data.metrics[key] == pytest.approx(study.trials[number].user_attrs[key])
        assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} == set(FIGURE_FILES.values())
    # Judged on the validation split: the collapsed trial is infeasible, and its run says why.
    trials = study.trials
    assert trials[0].constraints["active_units_missing"] < 0 and trials[0].constraints["kl_below_floor"] < 0
    assert trials[1].constraints["active_units_missing"] == 1 and trials[1].constraints["kl_below_floor"] > 0.5
    assert children[0].data.tags["feasible"] == "true" and "infeasible_reason" not in children[0].data.tags
    assert children[1].data.tags["feasible"] == "false"
    assert children[1].data.tags["infeasible_reason"].startswith("no active latent unit; KL 0.0")
    assert children[1].data.metrics["val_active_units"] == 0 and children[0].data.metrics["val_active_units"] >= 1


def test_pruned_and_failed_runs_are_marked_with_their_reason(main_study):
    client = main_study.client()
    children = _children(main_study.runs(), main_study.load().user_attrs["mlflow_parent_run_id"])
    pruned = children[3]
    # FINISHED and named so (a green tick in the runs table); a crashed trial's run is FAILED (a red cross)
    assert pruned.info.status == "FINISHED" and pruned.info.run_name == "pruned: beta-cvae-trial-3"
    assert pruned.data.tags["trial_state"] == "PRUNED"
    assert pruned.data.tags["end_reason"].startswith("pruned at epoch 1")
    assert [m.step for m in client.get_metric_history(pruned.info.run_id, "val_kl")] == [1]
    assert "test_iw_nll" not in pruned.data.metrics
    failed = children[2]
    assert failed.info.status == "FAILED" and failed.info.run_name == "beta-cvae-trial-2"
    assert failed.data.tags["trial_state"] == "FAIL"
    assert "loss became nan" in failed.data.tags["end_reason"]


def test_complete_trials_log_models_pruned_and_failed_ones_none_and_the_best_is_registered(main_study):
    study, client = main_study.load(), main_study.client()
    children = _children(main_study.runs(), study.user_attrs["mlflow_parent_run_id"])
    experiment_id = children[0].info.experiment_id
    for number, run in children.items():
        models = client.search_logged_models(experiment_ids=[experiment_id],
                                             filter_string=f"source_run_id = '{run.info.run_id}'")
        assert [m.name for m in models] == ([f"beta-cvae-trial-{number}"] if number in (0, 1) else []), number
        assert {d.tags[0].value for d in run.inputs.dataset_inputs} == {"training", "validation", "test"}
    # Only the feasible trial is registered, whatever the collapsed one scored.
    (version,) = client.search_model_versions("name='t-main'")
    best = client.get_model_version_by_alias("t-main", "best")
    assert best.version == version.version and best.tags["trial_number"] == "0" == str(study.best_trial.number)
    assert client.get_run(study.user_attrs["mlflow_parent_run_id"]).data.tags["registered_model"] == "models:/t-main@best"
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_parent_run_gets_plots_and_trials_table(main_study, tmp_path):
    client = main_study.client()
    parent_id = main_study.load().user_attrs["mlflow_parent_run_id"]
    paths = {a.path for a in client.list_artifacts(parent_id, "study")}
    assert {"study/trials.csv", "study/optimization_history.png", "study/param_importances.png"} <= paths
    table = pd.read_csv(client.download_artifacts(parent_id, "study/trials.csv", str(tmp_path)))
    assert list(table["number"]) == [0, 1, 2, 3]
    assert list(table["state"]) == ["COMPLETE", "COMPLETE", "FAIL", "PRUNED"]
    parent = client.get_run(parent_id)
    assert parent.data.metrics["n_complete"] == 2 and parent.data.metrics["n_pruned"] == 1
    assert parent.data.metrics["n_infeasible"] == 1 and parent.data.tags["best_trial"] == "0"
    attrs = main_study.load().user_attrs  # what optuna-dashboard shows of the selection
    assert attrs["best_feasible_trial"] == 0 and attrs["infeasible_trials"] == 1
    assert parent.data.metrics["best_val_neg_elbo"] == pytest.approx(main_study.load().best_value)


def test_rerun_with_the_same_total_runs_nothing_and_keeps_the_parent(main_study, capsys):
    before = main_study.load().user_attrs["mlflow_parent_run_id"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(main_study.root)
        assert main(main_study.args(*MAIN)) == 0
        assert "ran 0 trials" in capsys.readouterr().out
        # Changing what the trials mean is refused, and nothing is lost.
        assert main(main_study.args(*MAIN, "--epochs", "5")) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "epochs=2" in err
    study = main_study.load()
    assert len(study.trials) == 4
    assert study.user_attrs["mlflow_parent_run_id"] == before
    assert len(main_study.runs()) == 5


@pytest.mark.parametrize("other_data", [["--limit", "300"], [], ["--seed", "1", "--limit", "400"],
                                        ["--image-size", "4", "--limit", "400"]])
def test_rerun_on_other_data_is_refused_and_changes_nothing(main_study, capsys, other_data):
    """Other --limit, --seed or --image-size would train new trials on other data in the same study."""
    study = main_study.load()
    attrs, trials, runs = study.user_attrs, len(study.trials), len(main_study.runs())
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(main_study.root)
        assert main(main_study.args("--variant", "beta-cvae", "--trials", "5", "--epochs", "2", *other_data)) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and "was made with" in err and "Traceback" not in captured.out + err, err
    option = (other_data or ["--limit"])[0]
    assert f"{option.lstrip('-').replace('-', '_')}=" in err and f"({option})" in err
    study = main_study.load()
    assert study.user_attrs == attrs and len(study.trials) == trials and len(main_study.runs()) == runs


def test_report_joins_trials_with_their_runs(main_study, tmp_path, capsys):
    from studies.report import study_report

    frame = study_report(main_study.load(), main_study.client())
    assert list(frame["number"]) == [0, 1, 2, 3]
    assert list(frame["run_status"]) == ["FINISHED", "FINISHED", "FAILED", "FINISHED"]
    assert list(frame["feasible"]) == [True, False, None, None]
    children = _children(main_study.runs(), main_study.load().user_attrs["mlflow_parent_run_id"])
    for row in frame.to_dict("records"):
        run = children[row["number"]]
        assert row["run_id"] == run.info.run_id
        for key, value in run.data.metrics.items():
            assert row[f"mlflow.{key}"] == pytest.approx(value), key
    assert frame.loc[3, "mlflow.val_recon"] > 0 and math.isnan(frame.loc[2, "mlflow.val_recon"])  # NaN: no epoch
    complete = frame[frame["state"] == "COMPLETE"]
    assert (complete["mlflow.test_iw_nll"] > 0).all()

    csv = tmp_path / "r.csv"
    rc = main(["report", "--study-name", "t-main", "--storage", main_study.storage, "--tracking-uri",
               main_study.tracking, "--csv", str(csv)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "note: 1 of 2 completed trials infeasible (no active latent unit: 1, KL under one bit: 1)" in out
    assert "best feasible trial: 0 (val_neg_elbo=" in out
    assert len(pd.read_csv(csv)) == 4
    assert main(["report", "--study-name", "nope", "--storage", main_study.storage]) == 2
    err = capsys.readouterr().err
    assert "no study named 'nope'" in err and "t-main" in err
    # A tracking server that cannot be reached: the Optuna columns, and a note that says why no runs
    assert main(["report", "--study-name", "t-main", "--storage", main_study.storage, "--tracking-uri",
                 "http://127.0.0.1:9", "--csv", str(csv)]) == 0
    note = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("note:"))
    assert "http://127.0.0.1:9 (API request" in note and "failed" in note, note


# -- rate-distortion ---------------------------------------------------------------------------

@pytest.mark.slow
def test_rate_distortion_study_has_two_values_and_a_pareto_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    stores = Stores(tmp_path, "t-rd")
    study = optuna.create_study(study_name=stores.study, storage=stores.storage, directions=["minimize"] * 2)
    for trial in (USES_LATENT, COLLAPSES, {**USES_LATENT, "beta": 0.02}):
        study.enqueue_trial(trial)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Fixed parameter beta", category=UserWarning)  # under 0.1
        assert main(stores.args("--objective", "rate-distortion", "--trials", "3", "--epochs", "2",
                                "--limit", "300", "--variant", "beta-cvae")) == 0
    out = capsys.readouterr().out
    assert "rate-distortion front of the feasible trials (val_kl, val_recon)" in out
    study = stores.load()
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_recon", "val_kl"]
    client = stores.client()
    children = _children(stores.runs(), study.user_attrs["mlflow_parent_run_id"])
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3
    for trial in complete:
        run = children[trial.number]
        assert trial.values == pytest.approx([run.data.metrics["val_recon"], run.data.metrics["val_kl"]])
    # The collapsed trial spends the least KL, so it is on the plain Pareto front; the front excludes it,
    # and it is neither printed nor registered.
    assert min(complete, key=lambda t: t.values[1]).number == 1
    front = {t.number for t in study.best_trials}
    assert 1 not in front and front
    assert "#1 (" not in out.split("rate-distortion front of the feasible trials")[1].splitlines()[0]
    registered = {v.tags["trial_number"] for v in client.search_model_versions("name='t-rd'")}
    assert registered == {str(n) for n in front}
    paths = {a.path for a in client.list_artifacts(study.user_attrs["mlflow_parent_run_id"], "study")}
    assert {"study/rate_distortion.png", "study/optimization_history_val_recon.png",
            "study/optimization_history_val_kl.png"} <= paths
    # Pruning is impossible with two objectives: refused up front, in one line.
    assert main(stores.args("--objective", "rate-distortion", "--pruner", "median", "--trials", "1")) == 2
    assert "cannot prune multi-objective" in capsys.readouterr().err


# -- resume after SIGKILL ----------------------------------------------------------------------

@pytest.mark.slow
def test_killed_study_resumes_without_losing_or_double_counting(tmp_path, monkeypatch):
    stores = Stores(tmp_path, "t-kill")
    args = stores.args("--trials", "3", "--epochs", "30", "--limit", "400", "--pruner", "none", "--heartbeat", "1")
    env = dict(os.environ, PYTHONPATH=str(REPO), MLFLOW_DISABLE_TELEMETRY="true")
    proc = subprocess.Popen([sys.executable, "-m", "studies.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, "the study ended before it could be killed"
            assert time.time() < deadline, "no trial completed in time"
            try:
                trials = stores.load().get_trials()
            except KeyError:  # the study does not exist yet
                trials = []
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            running = [t for t in trials if t.state == TrialState.RUNNING and t.intermediate_values]
            if done and running:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    before = {t.number: t.value for t in stores.load().get_trials(states=(TrialState.COMPLETE,))}
    killed = [t for t in stores.load().get_trials() if t.state == TrialState.RUNNING]
    assert len(killed) == 1
    killed = killed[0]
    time.sleep(2.5)  # past the 2-heartbeat grace period
    deadline = time.time() + 120  # the killed study's writer process outlives it: it writes what it was given
    while not any(r.data.tags.get("trial_number") == str(killed.number) and r.info.status != "RUNNING"
                  for r in (stores.runs() if stores.client().get_experiment_by_name("t-kill") else [])):
        assert time.time() < deadline, "the killed study's writer did not end the killed trial's run"
        time.sleep(0.2)

    monkeypatch.chdir(tmp_path)
    assert main(args) == 0
    trials = stores.load().get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 3  # the requested total, none counted twice
    assert TrialState.RUNNING not in states
    assert {t.number: t.value for t in trials if t.number in before} == before  # nothing completed was lost
    assert trials[killed.number].state == TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == killed.params

    runs = stores.runs()
    assert not [r for r in runs if r.info.status == "RUNNING"]
    children = _children(runs, stores.load().user_attrs["mlflow_parent_run_id"])
    assert children[killed.number].info.status == "KILLED"  # ended by the dead study's writer
    assert "exited before ending it" in children[killed.number].data.tags["end_reason"]
    assert children[retried[0].number].data.tags["retry_of_trial"] == str(killed.number)
    assert len([r for r in runs if r.data.tags.get("run_kind") == "study"]) == 1


# -- threads -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_jobs_share_the_total(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stores = Stores(tmp_path, "t-jobs")
    assert main(stores.args("--trials", "4", "--epochs", "1", "--limit", "300", "--jobs", "2",
                            "--pruner", "none")) == 0
    trials = stores.load().trials
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 4
    assert len(trials) == 4
    children = _children(stores.runs(), stores.load().user_attrs["mlflow_parent_run_id"])
    assert sorted(children) == [0, 1, 2, 3]


# -- credentials never leak ---------------------------------------------------------------------

@pytest.fixture
def password_stores(tmp_path):
    """A real `mlflow server` on loopback reached through a URL with a password; PostgreSQL with a
    password for Optuna when PostgreSQL is installed (else SQLite)."""
    sys.path.insert(0, str(REPO / "tests"))
    from local_services import PASSWORD, MlflowServer, PostgresCluster, postgres_bin

    # Postgres runs as its own user when the tests run as root: its folder must be reachable by it.
    pg_base = Path(tempfile.mkdtemp(prefix="cvae-bench-pg-"))
    cluster = PostgresCluster(pg_base).start() if postgres_bin() else None
    server = MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts", tmp_path / "server.log")
    try:
        server.start()
        storage = cluster.create_database("optuna") if cluster else f"sqlite:///{tmp_path / 'optuna.db'}"
        tracking = server.uri.replace("http://", "http://cvae:Tr4ck-s3cret@")
        yield storage, tracking, [PASSWORD, "Tr4ck-s3cret"] if cluster else ["Tr4ck-s3cret"]
    finally:
        server.stop()
        if cluster:
            cluster.stop()
        shutil.rmtree(pg_base, ignore_errors=True)


@pytest.mark.slow
def test_passwords_reach_neither_mlflow_nor_the_output(tmp_path, password_stores):
    storage, tracking, secrets = password_stores
    env = dict(os.environ, PYTHONPATH=str(REPO), MLFLOW_DISABLE_TELEMETRY="true")
    work = tmp_path / "work"
    work.mkdir()
    out = subprocess.run([sys.executable, "-m", "studies.cli", "study", "--study-name", "t-secret", "--storage",
                          storage, "--tracking-uri", tracking, "--trials", "2", "--epochs", "1", "--limit", "300",
                          *FAST], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    output = out.stdout + out.stderr
    assert "cvae:***@" in output  # the URLs were printed, redacted
    client = make_client(tracking)
    runs = client.search_runs([client.get_experiment_by_name("t-secret").experiment_id])
    assert len(runs) == 3
    texts = [output]
    for run in runs:
        texts += [run.info.run_name, json.dumps(run.data.params), json.dumps(run.data.tags), *run.data.metrics]
        texts.append(client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id)))
    study = optuna.load_study(study_name="t-secret", storage=storage)
    texts.append(json.dumps(study.user_attrs) + json.dumps([t.user_attrs for t in study.trials]))
    stored = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]  # MLflow's store and artifacts
    for secret in secrets:
        assert not [t for t in texts if secret in t]
        assert not [b for b in stored if secret.encode() in b], "a secret was stored in a file"


# -- the suite ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_suite_runs_every_variant_and_logs_a_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = {"variants": ["cvae", "flow-cvae"], "trials": 2, "epochs": 1, "limit": 300, "iw_samples": 5,
              "storage": f"sqlite:///{tmp_path / 'o.db'}", "tracking_uri": f"sqlite:///{tmp_path / 'm.db'}"}
    (tmp_path / "suite.json").write_text(json.dumps(config))
    assert main(["suite", "--config", str(tmp_path / "suite.json"), "--no-progress"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("open the results: mlflow ui --backend-store-uri sqlite:///")
    assert "optuna-dashboard sqlite:///" in out[-1]
    table = [line for line in out if line.startswith("|")]
    assert len(table) == 2 + 2 and "test_iw_nll" in table[0] and "cond_acc" in table[0]
    assert "test_cond_std" in table[0] and "infeasible" in table[0] and "model_uri" in table[0]
    client = make_client(config["tracking_uri"])
    exp = client.get_experiment_by_name("cvae-bench-suite")
    (summary,) = client.search_runs([exp.experiment_id], filter_string="tags.run_kind = 'suite'")
    summary_line = next(line for line in out if line.startswith("summary logged to MLflow run"))
    assert summary_line.endswith(f"/#/experiments/{exp.experiment_id}/runs/{summary.info.run_id}"
                                 "?workflowType=machine_learning")
    arts = {a.path for a in client.list_artifacts(summary.info.run_id)}
    assert {"suite_summary.csv", "suite_summary.md"} <= arts
    registered = {m.name for m in client.search_registered_models()}
    for variant in config["variants"]:
        name = f"suite-{variant}-digits"
        study = optuna.load_study(study_name=name, storage=config["storage"])
        complete = study.get_trials(states=(TrialState.COMPLETE,))
        feasible = [t for t in complete if all(v <= 0 for v in t.constraints.values())]
        assert complete and all(t.constraints for t in complete)  # every completed trial was judged
        row = next(line for line in table if name in line)
        assert row.split("|")[SUMMARY_COLUMNS.index("infeasible") + 1].strip() == str(len(complete) - len(feasible))
        assert summary.data.metrics[f"{variant}/infeasible"] == len(complete) - len(feasible)
        if not feasible:  # one line says why, and nothing is registered
            assert name not in registered and "models:/" not in row
            assert f"note: {variant}: no feasible trial ({len(complete)} completed trials" in "\n".join(out)
            continue
        best = min(feasible, key=lambda t: t.value)
        assert summary.data.metrics[f"{variant}/test_iw_nll"] == pytest.approx(best.user_attrs["test_iw_nll"])
        assert summary.data.metrics[f"{variant}/test_cond_std"] == pytest.approx(best.user_attrs["test_cond_std"])
        assert not math.isnan(summary.data.metrics[f"{variant}/samples_per_s"])
        assert f"models:/{name}/1" in row
        assert client.get_model_version_by_alias(name, "best").tags["trial_number"] == str(best.number)


def test_suite_config_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"trials": 2, "epoch": 3}))
    assert main(["suite", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown key 'epoch'" in err
    toml = tmp_path / "bad.toml"
    toml.write_text('trials = "many"\n')
    assert main(["suite", "--config", str(toml)]) == 2
    assert "trials='many' must be an integer" in capsys.readouterr().err
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00binary")
    assert main(["suite", "--config", str(binary)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot read it (not UTF-8 text)" in err
    assert not list(tmp_path.glob("*.db"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unusable_device_is_one_line_before_any_trial(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "gpu.json"
    config.write_text(json.dumps({"device": "gpu", "trials": 2, "epochs": 1}))
    assert main(["suite", "--config", str(config), "--no-track", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "device='gpu': must be one of auto, cpu, cuda" in err
    assert main(["study", "--device", "cuda", "--trials", "2", "--epochs", "1", "--no-track", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device is available" in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.db"))  # no study with failed trials was made


# -- cvae-bench worker ---------------------------------------------------------------------------

@pytest.mark.slow  # two tracked studies, two writer processes: ~10 s
def test_worker_creates_then_joins_a_study_from_its_stored_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    common = ["worker", "--study-name", "w", "--storage", f"sqlite:///{tmp_path / 'o.db'}", "--tracking-uri",
              f"sqlite:///{tmp_path / 'm.db'}", *FAST]
    assert main(common) == 2  # no study yet, and no total to create one with
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist yet" in err and "--trials-total" in err

    assert main([*common, "--trials-total", "2", "--variant", "beta-cvae", "--epochs", "1", "--limit", "300",
                 "--pruner", "none", "--seed", "3"]) == 0
    assert "creates study 'w'" in capsys.readouterr().out
    study = optuna.load_study(study_name="w", storage=f"sqlite:///{tmp_path / 'o.db'}")
    assert {k: study.user_attrs[k] for k in ("variant", "epochs", "limit", "pruner", "seed", "trials_total")} == \
        {"variant": "beta-cvae", "epochs": 1, "limit": 300, "pruner": "none", "seed": 3, "trials_total": 2}

    assert main([*common, "--trials-total", "3"]) == 0  # joins: everything else comes from the study
    out = capsys.readouterr().out
    assert "joins study 'w'" in out and "beta-cvae on digits" in out and "3/3 finished" in out
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.params.keys() == trials[0].params.keys() for t in trials)
    assert "beta" in trials[0].params  # beta-cvae's search space, although the joiner never named it

    assert main([*common, "--epochs", "4"]) == 2  # a defining setting that disagrees with the study
    assert "was made with epochs=1, not 4" in capsys.readouterr().err
