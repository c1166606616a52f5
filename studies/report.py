"""A study's trials joined with their MLflow runs, as one table (what ``cvae-bench report`` prints).

One row per trial: Optuna's columns (:meth:`optuna.Study.trials_dataframe`: number, state,
``feasible`` (:mod:`studies.feasibility`), value(s) named after the objectives, ``params_*``,
``user_attrs_*``, durations) and, from the trial's
MLflow child run (found under the study's parent run by ``tags.mlflow.parentRunId``), ``run_id``,
``run_status``, ``end_reason`` and every metric's latest value as ``mlflow.<metric>``.

optuna, pandas and MLflow are imported by the functions that use them, not at the top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.errors import CLIError
from bench.tracking import redact_url, sqlite_file
from studies.registry import run_id_of
from studies.spec import OBJECTIVES
from studies.storage import is_journal

#: Columns printed (when present); the CSV holds them all.
PRINTED = ("number", "state", "feasible", "val_neg_elbo", "val_recon", "val_kl", "mlflow.test_neg_elbo",
           "mlflow.test_iw_nll", "mlflow.test_active_units", "mlflow.test_cond_acc", "mlflow.test_cond_std",
           "run_status", "end_reason")


def selection_lines(study) -> list[str]:
    """The best feasible trial and how many completed trials were infeasible (:mod:`studies.feasibility`)."""
    from studies.feasibility import best_trial, selection_note

    names = OBJECTIVES.get(study.user_attrs.get("objective", "neg-elbo"), ("value",))
    best = best_trial(study, names)
    lines = [f"note: {note}" for note in [selection_note(study)] if note]
    if best is not None:
        values = ", ".join(f"{n}={v:.3f}" for n, v in zip(names, best.values))
        lines.append(f"best feasible trial: {best.number} ({values} nats)")
    return lines


def load_study(storage_url: str, study_name: str):
    """The study, or :class:`CLIError` naming the studies that exist."""
    import optuna

    from studies.storage import open_storage, study_names

    path = local_file(storage_url)
    if path is not None and not path.is_file():
        raise CLIError(f"no Optuna storage at {path} (give --storage URL)")
    storage = open_storage(storage_url)
    names = study_names(storage)
    if study_name not in names:
        known = ", ".join(names) if names else "none"
        raise CLIError(f"no study named {study_name!r} in {redact_url(storage_url)} (studies there: {known})")
    return optuna.load_study(study_name=study_name, storage=storage)


def local_file(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL or a journal path (None for servers)."""
    db = sqlite_file(url)
    if db is not None:
        return db.expanduser()
    return Path(url).expanduser() if is_journal(url) else None


def tracking_client(uri: str) -> Any | None:
    """An MLflow client of the tracking store at ``uri``; None for a local store file that does not exist."""
    from bench.tracking import make_client

    store = local_file(uri)
    return None if store is not None and not store.is_file() else make_client(uri)


def child_runs(client: Any, parent_run_id: str) -> list:
    """Every child run of ``parent_run_id`` (all pages)."""
    parent = client.get_run(parent_run_id)
    runs, token = [], None
    while True:
        page = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def runs_frame(runs: list):
    """One row per trial number (the latest run when a trial number has several) of run info + metrics."""
    import pandas as pd

    rows = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        number = run.data.tags.get("trial_number")
        if number is None:
            continue
        row = {"number": int(number), "run_id": run.info.run_id, "run_status": run.info.status,
               "end_reason": run.data.tags.get("end_reason", "")}
        row.update({f"mlflow.{k}": v for k, v in sorted(run.data.metrics.items())})
        rows[int(number)] = row
    return pd.DataFrame(list(rows.values()), columns=None if rows else ["number", "run_id", "run_status", "end_reason"])


def study_report(study, client: Any | None) -> Any:
    """The trials of ``study`` left-joined with their MLflow child runs (``client=None``: Optuna only).

    When the runs cannot be read, ``frame.attrs["mlflow_error"]`` says why.
    """
    from studies.plots import trials_table

    objective = study.user_attrs.get("objective", "neg-elbo")
    frame = trials_table(study, OBJECTIVES.get(objective, ("value",)))
    if "state" in frame:
        frame["state"] = frame["state"].astype(str)
    parent_id = run_id_of(study, study.user_attrs.get("mlflow_parent_run_id"))
    if client is None or not parent_id or frame.empty:
        return frame
    from mlflow.exceptions import MlflowException

    from bench.tracking.ops import Store, Unresolved

    try:  # a parent recorded under its local id (created in an outage) is found by its run key
        runs = runs_frame(child_runs(client, Store(client, "").real(parent_id)))
    except (MlflowException, Unresolved) as exc:  # another tracking store, an unreachable one, or not sent yet
        frame.attrs["mlflow_error"] = " ".join(str(exc).split())[:200]
        return frame
    return frame.merge(runs, on="number", how="left")
