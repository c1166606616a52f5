"""MLflow writes that survive an unreachable tracking server.

:class:`ResilientClient` wraps the few ``MlflowClient`` writes the harness makes (create_run,
log_batch, log_artifact, log_inputs, a logged model, delete_artifacts, update_run, set_terminated). A write that fails for a transient reason
(connection refused, timeout, 5xx, a locked SQLite file) opens a circuit: the write and every later
write go to a local *spool* -- one JSON line each, in order -- and training carries on without
blocking. After a back-off (1 s, 2 s, 4 s ... up to 60 s) the next write first replays the spool; on
success the circuit closes. A run created while the server was down gets a local id
(``local-<hex>``) that the replay maps to the real run id; so does a logged model begun meanwhile. Whatever is still spooled when the
process ends is sent by ``cvae-bench sync`` (which ``study``/``worker`` also run when they start
and finish). Errors that are not transient (a bad parameter) raise as usual.

The spool never holds a password: each file names its tracking URI redacted, and ``sync`` replays
a file only to a tracking URI whose redacted form matches.

A spool file belongs to the process that writes it: that process holds an exclusive ``flock`` on
``<file>.lock`` for as long as it lives, so ``sync`` (from any process) replays only the files of
processes that have ended, and two syncs never replay one file twice. Runs that such a dead process
created but never ended are ended FAILED by ``sync`` (tag ``end_reason``), not left RUNNING.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.tracking.mlflow_env import configure_mlflow_environment
from bench.tracking.redaction import redact_url
from bench.tracking.store_lock import mlflow_schema_lock

LOCAL_PREFIX = "local-"
LOCAL_MODEL_PREFIX = LOCAL_PREFIX + "m-"  # a logged model begun while the server was down
#: Requests to the tracking server carry at most this many of each (MLflow's REST limits).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_BACKOFF_S = 60.0

def default_spool_dir() -> Path:
    root = os.environ.get("CVAE_BENCH_SPOOL")
    if root:
        return Path(root)
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache) if cache and os.path.isabs(cache) else Path.home() / ".cache") / "cvae-bench" / "mlflow-spool"


def is_transient(exc: BaseException) -> bool:
    """True for failures that a later retry may cure: the server unreachable, overloaded or locked."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
                        TimeoutError)):
        return True
    if isinstance(exc, MlflowException):
        code = getattr(exc, "error_code", "")
        text = str(exc).lower()
        return (code in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED")
                or any(s in text for s in ("max retries exceeded", "connection refused", "failed to establish",
                                           "timed out", "database is locked", "connection aborted",
                                           "remotedisconnected", "503", "502", "504")))
    return False


def _is_duplicate_key(exc: BaseException) -> bool:
    """An insert that lost a race to an equal row (SQLite, PostgreSQL, MySQL wording)."""
    text = str(exc).lower()
    return "integrityerror" in text or any(s in text for s in ("unique constraint", "duplicate key", "duplicate entry"))


DEAD_PROCESS_REASON = "the process logging this run ended before the run did (replayed by cvae-bench sync)"


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class ResilientClient:
    """The harness's MLflow writes, with back-off and a local spool (see module docstring).

    Made from a tracking URI, or around an existing ``MlflowClient`` (``client=``).
    """

    def __init__(self, tracking_uri: str | None = None, spool_dir: Path | None = None, *, client: Any = None,
                 clock: Callable[[], float] = time.monotonic):
        if client is None:
            from mlflow import MlflowClient

            configure_mlflow_environment()
            with mlflow_schema_lock(tracking_uri):
                client = MlflowClient(tracking_uri=tracking_uri)
        self.client = client
        self.tracking_uri = tracking_uri or client._tracking_client.tracking_uri
        self.spool_dir = Path(spool_dir) if spool_dir else default_spool_dir()
        self._file = self.spool_dir / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self._files_dir = self._file.with_suffix(".files")
        self._lock = threading.RLock()
        self._clock = clock
        self._failures = 0
        self._retry_at = 0.0
        self._pending = 0  # records in this process's spool file
        self.ids: dict[str, str] = {}  # local id -> real run id, once known
        self._owner_fd: int | None = None  # flock on this process's spool file, held while we live

    def __getattr__(self, name: str) -> Any:
        if name == "client":  # not set yet (half-constructed object)
            raise AttributeError(name)
        return getattr(self.client, name)

    # -- state -----------------------------------------------------------------------------------
    @property
    def degraded(self) -> bool:
        """True while writes are being spooled."""
        return self._pending > 0

    @property
    def pending(self) -> int:
        return self._pending

    def run_id(self, run_id: str) -> str:
        """The real id of a run (or logged model), or its local id while the server has not seen it yet."""
        return self.ids.get(run_id, run_id)

    # -- writes ----------------------------------------------------------------------------------
    def create_run(self, experiment_id: str, run_name: str | None = None, tags: dict[str, str] | None = None) -> str:
        """Returns the new run's id (a ``local-`` id if the server could not be reached)."""
        local = f"{LOCAL_PREFIX}{uuid.uuid4().hex}"
        record = {"op": "create_run", "local_id": local, "experiment_id": experiment_id, "run_name": run_name,
                  "tags": tags or {}, "start_time": int(time.time() * 1000)}
        self._submit(record)
        return self.run_id(local)

    def log_batch(self, run_id: str, metrics: dict[str, float] | None = None, step: int | None = None,
                  params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None,
                  metric_steps: Sequence[tuple[str, float, int]] = ()) -> None:
        """One request: ``metrics`` at ``step``, plus ``metric_steps`` rows (key, value, step) of other steps."""
        now = int(time.time() * 1000)
        rows = [(k, v, step or 0) for k, v in (metrics or {}).items()] + list(metric_steps)
        self._submit({"op": "log_batch", "run_id": run_id,
                      "metrics": [[k, float(v), now, int(s)] for k, v, s in rows],
                      "params": [[k, str(v)] for k, v in (params or {}).items()],
                      "tags": [[k, str(v)] for k, v in (tags or {}).items()]})

    def log_artifact(self, run_id: str, local_path: str | Path, artifact_path: str | None = None) -> None:
        self._submit({"op": "log_artifact", "run_id": run_id, "local_path": str(local_path),
                      "artifact_path": artifact_path})

    def log_model(self, run_id: str, saved_folder: str | Path, *, step: int, metrics: dict[str, float],
                  params: dict[str, str], tags: dict[str, str], requirements: Sequence[str],
                  dataset: dict[str, str] | None = None) -> None:
        """A saved CVAE folder as a logged model of the run (:func:`bench.tracking.logged_model.log_logged_model`)."""
        self._submit({"op": "log_model", "run_id": run_id, "local_path": str(saved_folder), "step": int(step),
                      "metrics": {k: float(v) for k, v in metrics.items()},
                      "params": {k: str(v) for k, v in params.items()}, "tags": {k: str(v) for k, v in tags.items()},
                      "requirements": list(requirements), "dataset": dataset})

    def begin_model(self, run_id: str, saved_folder: str | Path, *, step: int, params: dict[str, str],
                    tags: dict[str, str], requirements: Sequence[str]) -> str:
        """A saved CVAE folder as a PENDING logged model of the run, its metrics to come with
        :meth:`finish_model` (:func:`bench.tracking.logged_model.begin_logged_model`). Returns the model's
        id (a ``local-`` id if the server could not be reached: pass it to :meth:`finish_model` as it is)."""
        local = f"{LOCAL_MODEL_PREFIX}{uuid.uuid4().hex}"
        self._submit({"op": "begin_model", "local_id": local, "run_id": run_id, "local_path": str(saved_folder),
                      "step": int(step), "params": {k: str(v) for k, v in params.items()},
                      "tags": {k: str(v) for k, v in tags.items()}, "requirements": list(requirements)})
        return self.run_id(local)

    def finish_model(self, run_id: str, model_id: str, *, step: int, metrics: dict[str, float] | None,
                     dataset: dict[str, str] | None = None) -> None:
        """Link ``metrics`` to a model of :meth:`begin_model` and make it READY (``metrics`` None: FAILED)."""
        self._submit({"op": "finish_model", "run_id": run_id, "model_id": model_id, "step": int(step),
                      "metrics": None if metrics is None else {k: float(v) for k, v in metrics.items()},
                      "dataset": dataset})

    def delete_artifacts(self, run_id: str, artifact_path: str) -> None:
        """Delete the run's artifacts under ``artifact_path``; a store that refuses gets a warning, not an error."""
        self._submit({"op": "delete_artifacts", "run_id": run_id, "artifact_path": artifact_path})

    def log_inputs(self, run_id: str, datasets: Sequence[dict[str, str]]) -> None:
        """Datasets the run read: dicts of name, digest, source_type, source, profile, context."""
        self._submit({"op": "log_inputs", "run_id": run_id, "datasets": [dict(d) for d in datasets]})

    def update_run(self, run_id: str, status: str) -> None:
        self._submit({"op": "update_run", "run_id": run_id, "status": status})

    def set_terminated(self, run_id: str, status: str = "FINISHED") -> None:
        self._submit({"op": "set_terminated", "run_id": run_id, "status": status,
                      "end_time": int(time.time() * 1000)})

    # -- machinery -------------------------------------------------------------------------------
    def _submit(self, record: dict[str, Any]) -> None:
        with self._lock:
            if self._pending and not self._try_flush():
                self._spool(record)
                return
            if self._clock() < self._retry_at:
                self._spool(record)
                return
            try:
                self._apply(record, self.ids)
                self._failures = 0
            except Exception as exc:  # noqa: BLE001 - classified right below
                if not is_transient(exc):
                    raise
                self._open_circuit()
                self._spool(record)

    def _open_circuit(self) -> None:
        self._failures += 1
        self._retry_at = self._clock() + min(MAX_BACKOFF_S, 2.0 ** (self._failures - 1))

    def _apply(self, record: dict[str, Any], ids: dict[str, str]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        op = record["op"]
        if op == "create_run":
            if record["local_id"] in ids:
                return
            run = self.client.create_run(record["experiment_id"], start_time=record["start_time"],
                                         tags=record["tags"], run_name=record["run_name"])
            ids[record["local_id"]] = run.info.run_id
            return
        run_id = ids.get(record["run_id"], record["run_id"])
        if run_id.startswith(LOCAL_PREFIX):
            raise RuntimeError(f"spooled record for unknown local run {run_id}")
        if op == "log_batch":
            metrics = [Metric(k, v, ts, step) for k, v, ts, step in record["metrics"]]
            params = [Param(k, v) for k, v in record["params"]]
            tags = [RunTag(k, v) for k, v in record["tags"]]
            m, p, t = MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, MAX_TAGS_PER_BATCH
            for i in range(max(1, -(-len(metrics) // m), -(-len(params) // p), -(-len(tags) // t))):
                self.client.log_batch(run_id, metrics=metrics[i * m:(i + 1) * m], params=params[i * p:(i + 1) * p],
                                      tags=tags[i * t:(i + 1) * t])
        elif op == "log_artifact":
            self.client.log_artifact(run_id, record["local_path"], record["artifact_path"])
        elif op == "log_model":
            from bench.tracking.logged_model import log_logged_model

            log_logged_model(self.client, run_id, record["local_path"], step=record["step"], metrics=record["metrics"],
                             params=record["params"], tags=record["tags"], requirements=record["requirements"],
                             dataset=record["dataset"])
        elif op == "begin_model":
            from bench.tracking.logged_model import begin_logged_model

            if record["local_id"] not in ids:
                ids[record["local_id"]] = begin_logged_model(
                    self.client, run_id, record["local_path"], step=record["step"], params=record["params"],
                    tags=record["tags"], requirements=record["requirements"])
        elif op == "finish_model":
            from bench.tracking.logged_model import finish_logged_model

            model_id = ids.get(record["model_id"], record["model_id"])
            if model_id.startswith(LOCAL_PREFIX):
                raise RuntimeError(f"spooled record for unknown local logged model {model_id}")
            finish_logged_model(self.client, run_id, model_id, step=record["step"], metrics=record["metrics"],
                                dataset=record["dataset"])
        elif op == "log_inputs":
            self._log_inputs(run_id, record["datasets"])
        elif op == "delete_artifacts":
            self._delete_artifacts(run_id, record["artifact_path"])
        elif op == "update_run":
            self.client.update_run(run_id, status=record["status"])
        elif op == "set_terminated":
            self.client.set_terminated(run_id, status=record["status"], end_time=record["end_time"])
        else:
            raise ValueError(f"unknown spooled operation {op!r}")

    def _log_inputs(self, run_id: str, datasets: Sequence[dict[str, str]], attempts: int = 3) -> None:
        """``log_inputs``, retried when another writer created the same dataset first.

        MLflow's SQL store looks a dataset up by (experiment, name, digest) and inserts it if absent:
        two runs logging one dataset at once (workers that start together, ``--jobs``) race, and the
        loser gets an IntegrityError (BAD_REQUEST). Its retry finds the winner's row and links to it."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.exceptions import MlflowException

        inputs = [DatasetInput(Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"],
                                       source=d["source"], schema=d.get("schema"), profile=d.get("profile")),
                               tags=[InputTag("mlflow.data.context", d["context"])]) for d in datasets]
        for attempt in range(attempts):
            try:
                self.client.log_inputs(run_id, datasets=inputs)
                return
            except MlflowException as exc:
                if attempt + 1 == attempts or not _is_duplicate_key(exc):
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _delete_artifacts(self, run_id: str, artifact_path: str) -> None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        try:
            artifact_uri = self.client.get_run(run_id).info.artifact_uri
            get_artifact_repository(artifact_uri, tracking_uri=self.tracking_uri).delete_artifacts(artifact_path)
        except Exception as exc:  # noqa: BLE001 -- transient: spooled and retried; otherwise not the run's failure
            if is_transient(exc):
                raise
            print(f"warning: could not delete artifacts {artifact_path!r} of MLflow run {run_id}: "
                  f"{redact_url(' '.join(str(exc).split()))[:200]}", file=sys.stderr)

    def _spool(self, record: dict[str, Any]) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        if self._owner_fd is None:
            self._owner_fd = _try_lock(self._file.with_suffix(".lock"))
        if record["op"] in ("log_artifact", "log_model", "begin_model"):  # the caller may delete its files: keep a copy
            self._files_dir.mkdir(exist_ok=True)
            src = Path(record["local_path"])
            dst = self._files_dir / uuid.uuid4().hex[:8] / src.name  # the artifact keeps its name
            dst.parent.mkdir()
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copy2(src, dst)
            record = {**record, "local_path": str(dst)}
        if not self._file.exists():
            self._file.write_text(json.dumps({"op": "header", "tracking_uri": redact_url(self.tracking_uri)}) + "\n")
        with open(self._file, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        self._pending += 1

    def _try_flush(self) -> bool:
        """Replay this process's spool if the back-off allows; True when it is empty afterwards."""
        if self._clock() < self._retry_at:
            return False
        try:
            replay_file(self, self._file)
        except Exception as exc:  # noqa: BLE001
            if not is_transient(exc):
                raise
            self._open_circuit()
            return False
        self._pending = 0
        self._failures = 0
        return True

    def close(self) -> None:
        """Give up ownership of this process's spool file (what the process's end does too):
        whatever is still spooled becomes ``cvae-bench sync``'s to send."""
        with self._lock:
            if self._owner_fd is not None:
                os.close(self._owner_fd)
                self._owner_fd = None

    def settle(self) -> str | None:
        """At the end of a process: send what is spooled, then :meth:`close`. Returns None when
        nothing is left, else a one-line note for the user saying where the writes wait and how to send them."""
        try:
            if self.flush():
                return None
            left = self.pending
        finally:
            self.close()
        return (f"the MLflow server was unreachable: {left} writes are spooled in {self.spool_dir}; "
                f"`cvae-bench sync --tracking-uri {redact_url(self.tracking_uri)}` sends them")

    def flush(self) -> bool:
        """Try to send everything spooled now, ignoring the back-off; True when nothing is left."""
        with self._lock:
            if not self._pending:
                return True
            self._retry_at = 0.0
            return self._try_flush()


def replay_file(client: ResilientClient, path: Path, *, end_open_runs: bool = False) -> int:
    """Send the records of one spool file in order, then delete it; returns how many were sent.

    Progress is kept: records already sent are dropped from the file, so an interrupted replay
    resumes where it stopped without sending anything twice. ``end_open_runs`` (the file's process
    has ended): runs the file created but never terminated are ended FAILED afterwards.
    """
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    header, records = json.loads(lines[0]), [json.loads(line) for line in lines[1:] if line.strip()]
    if header.get("tracking_uri") != redact_url(client.tracking_uri):
        raise ValueError(f"{path} was spooled for {header.get('tracking_uri')}, not {redact_url(client.tracking_uri)}")
    ids_file = path.with_suffix(".ids.json")
    ids = {**(json.loads(ids_file.read_text()) if ids_file.exists() else {}), **client.ids}
    created = {r["local_id"] for r in records if r["op"] == "create_run"} | set(ids)
    created = {local for local in created if not local.startswith(LOCAL_MODEL_PREFIX)}
    terminated = {r["run_id"] for r in records if r["op"] == "set_terminated"}
    begun = {r["local_id"] for r in records if r["op"] == "begin_model"}
    begun -= {r["model_id"] for r in records if r["op"] == "finish_model"}
    sent = 0
    try:
        for record in records:
            client._apply(record, ids)
            sent += 1
    finally:
        client.ids.update(ids)
        remaining = records[sent:]
        if remaining:
            path.write_text("\n".join(json.dumps(r) for r in [header, *remaining]) + "\n")
            ids_file.write_text(json.dumps(ids))
    if end_open_runs:
        for local in sorted(created - terminated):
            _end_if_running(client, ids.get(local, local))
        for local in sorted(begun):
            _fail_if_pending(client, ids.get(local, local))
    path.unlink()
    ids_file.unlink(missing_ok=True)
    shutil.rmtree(path.with_suffix(".files"), ignore_errors=True)
    return sent


def _end_if_running(client: ResilientClient, run_id: str) -> None:
    if run_id.startswith(LOCAL_PREFIX) or client.client.get_run(run_id).info.status != "RUNNING":
        return
    client.client.set_tag(run_id, "end_reason", DEAD_PROCESS_REASON)
    client.client.set_terminated(run_id, status="FAILED")


def _fail_if_pending(client: ResilientClient, model_id: str) -> None:
    """A logged model begun by a dead process and never finished: FAILED (its metrics never came)."""
    if model_id.startswith(LOCAL_PREFIX) or "PENDING" not in str(client.client.get_logged_model(model_id).status):
        return
    client.client.finalize_logged_model(model_id, "FAILED")


@dataclass
class SyncReport:
    """What :func:`sync_spool` did: files and records sent; files left for a live process or another URI."""

    files: int = 0
    records: int = 0
    busy: list[str] = field(default_factory=list)
    other_uri: list[str] = field(default_factory=list)


def sync_spool(tracking_uri: str, spool_dir: Path | None = None) -> SyncReport:
    """Replay every spool file of an ended process meant for ``tracking_uri``, oldest first.

    Files whose process still runs (it holds the file's lock) are left to that process; files
    spooled for another tracking URI are left alone. Raises on a transient failure (the server is
    still down): what was sent stays sent, the rest stays spooled.
    """
    client = ResilientClient(tracking_uri, spool_dir)
    report = SyncReport()
    if not client.spool_dir.is_dir():
        return report
    for path in sorted(client.spool_dir.glob("*.jsonl"), key=lambda p: p.stat().st_mtime):
        lock_path = path.with_suffix(".lock")
        fd = _try_lock(lock_path)
        if fd is None:
            report.busy.append(path.name)
            continue
        try:
            if not path.exists():  # another sync sent it between the glob and the lock
                continue
            header = json.loads(path.read_text().splitlines()[0])
            if header.get("tracking_uri") != redact_url(tracking_uri):
                report.other_uri.append(path.name)
                continue
            report.records += replay_file(client, path, end_open_runs=True)
            report.files += 1
        finally:
            if not path.exists():
                lock_path.unlink(missing_ok=True)
            os.close(fd)
    for lock_path in client.spool_dir.glob("*.lock"):  # left by processes whose spool was sent
        if not lock_path.with_suffix(".jsonl").exists() and (fd := _try_lock(lock_path)) is not None:
            lock_path.unlink(missing_ok=True)
            os.close(fd)
    return report
