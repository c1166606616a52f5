"""The writes of a run as records, and how each one is applied to an MLflow store (:class:`Store`).

A record is a JSON-able dict with an ``op`` and its arguments. It names runs, experiments and logged
models by *local ids* (``local-...``), made with the record, so nothing waits for the store; :class:`Store`
maps a local id to the store's id once there is one, in any process, through the ``cvae_bench.run_key``
tag every run carries. A failure a retry may cure is *transient* (:func:`is_transient`): the record waits
in the spool; any other is the record's own fault, reported, and the writer goes on.
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from typing import Any

from bench.tracking.redaction import redact_url

LOCAL_PREFIX = "local-"
#: The run tag holding the local id a run was created under (finds it from any process).
RUN_KEY_TAG = "cvae_bench.run_key"
#: The experiment tag that makes the MLflow UI show an experiment as model training (not GenAI).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
#: Requests to the tracking server carry at most this many of each (MLflow's REST limits).
MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, MAX_TAGS_PER_BATCH = 1000, 100, 100
#: Ops that hand the writer a file or folder it removes once written (or copies into the spool).
FILE_OPS = ("log_artifact", "begin_model")
DEAD_PROCESS_REASON = "the process that trained this run exited before ending it"
#: How long a run that another process recorded by its local id is waited for before a new one is made (s).
REUSE_WAIT_S = 120


def new_id(kind: str = "") -> str:
    """A fresh local id: ``local-<hex>`` (a run), ``local-e-<hex>`` (an experiment), ``local-m-<hex>`` (a model)."""
    return f"{LOCAL_PREFIX}{kind + '-' if kind else ''}{uuid.uuid4().hex}"


def now_ms() -> int:
    return int(time.time() * 1000)


class Unresolved(LookupError):
    """A record names a local id the store has no run for: its creating record failed, or is still
    spooled by another process (``cvae-bench sync`` sends it). Not transient: waiting for it would hold
    up every later write."""


class NotWrittenYet(Exception):
    """A study's parent run that another worker has just made (by its local id) is not in the store yet:
    transient, for :data:`REUSE_WAIT_S` after the record was made; then a run of its own is made."""


def is_transient(exc: BaseException) -> bool:
    """True for failures a later retry may cure: the server unreachable, overloaded or locked."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
                        TimeoutError, NotWrittenYet)):
        return True
    if isinstance(exc, MlflowException):
        text = str(exc).lower()
        return (getattr(exc, "error_code", "") in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED")
                or any(s in text for s in ("max retries exceeded", "connection refused", "failed to establish",
                                           "timed out", "database is locked", "connection aborted",
                                           "remotedisconnected"))
                # a gateway's status as MLflow and requests word it; not any "503" (a run id, a value)
                or re.search(r"(?:error code|status code|status) 50[234]\b|\b50[234] server error", text) is not None)
    return False


def one_line(exc: BaseException, limit: int = 300) -> str:
    return redact_url(f"{type(exc).__name__}: {' '.join(str(exc).split())}")[:limit]


class Store:
    """Applies records to one MLflow store (:meth:`apply`), mapping local ids through ``ids``."""

    def __init__(self, client: Any, tracking_uri: str, ids: dict[str, str] | None = None) -> None:
        self.client, self.tracking_uri = client, tracking_uri
        self.ids: dict[str, str] = ids if ids is not None else {}
        self.replaying = False  # a record may have reached the store before its failure: check first

    def real(self, local_or_real: str) -> str:
        """The store's id of ``local_or_real`` (an id of the store is returned as it is)."""
        if not local_or_real.startswith(LOCAL_PREFIX):
            return local_or_real
        if local_or_real in self.ids:
            return self.ids[local_or_real]
        found = self.find_run(local_or_real) if not local_or_real.startswith(LOCAL_PREFIX + "m-") else None
        if found is None:
            raise Unresolved(f"{local_or_real} is not in the store yet")
        return found

    def find_run(self, key: str) -> str | None:
        """The run created under local id ``key`` by any process (``None``: not in the store)."""
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        runs = self.client.search_runs(experiments, f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=1) \
            if experiments else []
        if runs:
            self.ids[key] = runs[0].info.run_id
            return runs[0].info.run_id
        return None

    def apply(self, record: dict[str, Any]) -> Any:
        """Write ``record``; returns what the op gives back (a register op: the version), else None."""
        return getattr(self, "_" + record["op"])(record)

    # -- experiments and runs ------------------------------------------------------------------------
    def _experiment(self, r: dict[str, Any]) -> None:
        from mlflow.exceptions import MlflowException

        if r["local_id"] in self.ids:
            return
        client, name = self.client, r["name"]
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                self.ids[r["local_id"]] = client.create_experiment(name, tags=dict([EXPERIMENT_KIND]))
                return
            except MlflowException:  # another process created it between the two calls
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        if experiment.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
            client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
        self.ids[r["local_id"]] = experiment.experiment_id

    def _create_run(self, r: dict[str, Any]) -> None:
        local = r["local_id"]
        if local in self.ids or (self.replaying and self.find_run(local)):
            return
        tags = {**r["tags"], RUN_KEY_TAG: local}
        if "mlflow.parentRunId" in tags:
            try:
                tags["mlflow.parentRunId"] = self.real(tags["mlflow.parentRunId"])
            except Unresolved:  # the parent's writes wait in another process's spool: link it later by hand
                tags["cvae_bench.parent_key"] = tags.pop("mlflow.parentRunId")
        run = self.client.create_run(self.real(r["experiment_id"]), start_time=r["start_time"], tags=tags,
                                     run_name=r["run_name"])
        self.ids[local] = run.info.run_id

    def _open_run(self, r: dict[str, Any]) -> None:
        """The run ``reuse`` (a study's parent, on a rerun) set back to RUNNING if it is in this store and
        not deleted; else a new run, as ``create_run``."""
        from mlflow.exceptions import MlflowException

        if r["local_id"] in self.ids:
            return
        try:
            run = self.client.get_run(self.real(r["reuse"]))
        except Unresolved:
            if now_ms() - r["start_time"] < REUSE_WAIT_S * 1000:  # its creator's writer may not have written it yet
                raise NotWrittenYet(f"run {r['reuse']} is not in the store yet") from None
            run = None  # it never came: a new run
        except MlflowException as exc:
            if is_transient(exc):
                raise
            run = None
        if run is None or run.info.lifecycle_stage != "active":
            self._create_run(r)
            return
        self.client.update_run(run.info.run_id, status="RUNNING")
        self.ids[r["local_id"]] = run.info.run_id

    def _log_batch(self, r: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run_id = self.real(r["run_id"])
        metrics = [Metric(k, v, ts, step) for k, v, ts, step in r.get("metrics", ())]
        params = [Param(k, v) for k, v in r.get("params", ())]
        tags = [RunTag(k, v) for k, v in r.get("tags", ())]
        m, p, t = MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, MAX_TAGS_PER_BATCH
        for i in range(max(1, -(-len(metrics) // m), -(-len(params) // p), -(-len(tags) // t))):
            self.client.log_batch(run_id, metrics=metrics[i * m:(i + 1) * m], params=params[i * p:(i + 1) * p],
                                  tags=tags[i * t:(i + 1) * t])

    def _set_terminated(self, r: dict[str, Any]) -> None:
        run_id = self.real(r["run_id"])
        if r.get("reason"):
            self.client.set_tag(run_id, "end_reason", r["reason"][:5000])
        self.client.set_terminated(run_id, status=r["status"], end_time=r["end_time"])

    def _end_if_running(self, r: dict[str, Any]) -> None:
        """End a run another process left RUNNING (a dead worker's trial; a dead process's spool)."""
        try:
            run_id = self.real(r["run_id"])
        except Unresolved:
            return  # the store never saw it: the dead process's spool ends it when it is sent
        if self.client.get_run(run_id).info.status == "RUNNING":
            for key, value in (r.get("tags") or {}).items():
                self.client.set_tag(run_id, key, value)
            self._set_terminated({**r, "run_id": run_id})

    def _resolve(self, r: dict[str, Any]) -> dict[str, str]:
        """The store's ids of local ids other processes recorded (their writes sent since, by them or by
        ``cvae-bench sync``); those the store has no run for are left out."""
        found = {}
        for local in r["ids"]:
            try:
                found[local] = self.real(local)
            except Unresolved:
                pass
        return found

    # -- artifacts, inputs, models -------------------------------------------------------------------
    def _log_artifact(self, r: dict[str, Any]) -> None:
        self.client.log_artifact(self.real(r["run_id"]), r["local_path"], r["artifact_path"])

    def _delete_artifacts(self, r: dict[str, Any]) -> None:
        """Best effort: a store that refuses (no artifact deletion, the run gone) gets a warning."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        try:
            run_id = self.real(r["run_id"])
        except Unresolved:
            return  # not in the store: neither are its artifacts
        try:
            uri = self.client.get_run(run_id).info.artifact_uri
            get_artifact_repository(uri, tracking_uri=self.tracking_uri).delete_artifacts(r["artifact_path"])
        except Exception as exc:  # noqa: BLE001 -- transient: kept for later; otherwise not the run's failure
            if is_transient(exc):
                raise
            print(f"warning: could not delete artifacts {r['artifact_path']!r} of MLflow run {r['run_id']}: "
                  f"{one_line(exc, 200)}", file=sys.stderr)

    def _log_inputs(self, r: dict[str, Any], attempts: int = 3) -> None:
        """``log_inputs``, retried when another writer created the same dataset first: MLflow's SQL store
        looks a dataset up by (experiment, name, digest) and inserts it if absent, so two runs logging one
        dataset at once race, and the loser's retry finds the winner's row."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.exceptions import MlflowException

        inputs = [DatasetInput(Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"],
                                       source=d["source"], schema=d.get("schema"), profile=d.get("profile")),
                               tags=[InputTag("mlflow.data.context", d["context"])]) for d in r["datasets"]]
        for attempt in range(attempts):
            try:
                self.client.log_inputs(self.real(r["run_id"]), datasets=inputs)
                return
            except MlflowException as exc:
                text = str(exc).lower()
                duplicate = "integrityerror" in text or any(
                    s in text for s in ("unique constraint", "duplicate key", "duplicate entry"))
                if attempt + 1 == attempts or not duplicate:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _begin_model(self, r: dict[str, Any]) -> None:
        from bench.tracking.logged_model import begin_logged_model

        if r["local_id"] not in self.ids:
            self.ids[r["local_id"]] = begin_logged_model(
                self.client, self.real(r["run_id"]), r["local_path"], step=r["step"],
                params=r["params"], tags=r["tags"], requirements=r["requirements"])

    def _finish_model(self, r: dict[str, Any]) -> None:
        from bench.tracking.logged_model import finish_logged_model

        model_id = self.ids.get(r["model_id"], r["model_id"])
        if model_id.startswith(LOCAL_PREFIX):
            raise RuntimeError(f"no logged model {model_id} was begun (its begin record was lost)")
        finish_logged_model(self.client, self.real(r["run_id"]), model_id, step=r["step"], metrics=r["metrics"],
                            dataset=r["dataset"])

    def _fail_if_pending(self, r: dict[str, Any]) -> None:
        """A logged model begun by a process that died before its metrics: FAILED."""
        model_id = self.ids.get(r["model_id"], r["model_id"])
        if not model_id.startswith(LOCAL_PREFIX) and "PENDING" in str(self.client.get_logged_model(model_id).status):
            self.client.finalize_logged_model(model_id, "FAILED")

    def _register(self, r: dict[str, Any]) -> str:
        """Register the logged model of run ``run_id`` under ``name`` (created with ``model_tags`` and
        ``description`` if new), unless that model is registered there already; ``alias``: point it at that
        version. Returns the version."""
        from bench.tracking.logged_model import register_run_model

        return register_run_model(self.client, r["name"], self.real(r["run_id"]), version_tags=r["version_tags"],
                                  alias=r.get("alias"), model_tags=r.get("model_tags") or {},
                                  description=r.get("description", ""))


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"))
