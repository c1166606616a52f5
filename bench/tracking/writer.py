"""The one writer of every MLflow run: :class:`TrackingWriter`, and :class:`RunHandle`, a run written through it.

A command that writes runs starts one writer process (:mod:`bench.tracking.writer_process`) and hands it
records (:mod:`bench.tracking.ops`). Training never waits on the store: runs are named by local ids until
the store gives one, epochs go out together, figures are drawn and models written by the writer. Only a
command's end waits, at most :func:`flush_bound_s`; what is not written by then stays spooled. Why a
process and not a thread, and how it all fits: docs/tracking.md.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from multiprocessing.connection import Connection
from pathlib import Path
from queue import SimpleQueue
from typing import Any, Mapping, Sequence

from bench.errors import CLIError
from bench.tracking.base import RUN_STATUSES, Tracker
from bench.tracking.ops import LOCAL_PREFIX, new_id, now_ms
from bench.tracking.redaction import redact_url

#: The longest a command waits at its end for the writer to finish (s; ``$CVAE_BENCH_FLUSH_BOUND_S``
#: overrides it); the rest is spooled.
FLUSH_BOUND_S = 10.0
#: A run's epoch metrics go to the writer at most this often (s), and with anything else it is sent.
METRICS_INTERVAL_S = 2.0
#: Tag values above this length are rejected by some stores: longer ones are cut.
MAX_TAG_LENGTH = 5000


class TrackingStoreError(CLIError):
    """The tracking store cannot be used at all (an unsupported URI, a folder that does not exist)."""


class TrackingError(CLIError):
    """A write failed for good, or the writer process died: a run is incomplete."""


def require_mlflow() -> None:
    """:class:`CLIError` unless MLflow is installed here (the writer process imports it)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("mlflow") is not None
    except ValueError:  # blocked (``sys.modules["mlflow"] = None``)
        found = False
    if not found:
        raise CLIError("MLflow is not installed here (pip install mlflow), so nothing can be tracked: "
                       "pass --no-track")


def flush_bound_s() -> float:
    """How long a command waits at its end for the writer (s): :data:`FLUSH_BOUND_S`, or
    ``$CVAE_BENCH_FLUSH_BOUND_S`` (e.g. longer on a machine that is busy); a bad value is a one-line error."""
    value = os.environ.get("CVAE_BENCH_FLUSH_BOUND_S", "")
    try:
        bound = float(value) if value else FLUSH_BOUND_S
    except ValueError:
        bound = math.nan
    if not 0 <= bound < math.inf:
        raise CLIError(f"CVAE_BENCH_FLUSH_BOUND_S={value!r}: must be a number of seconds >= 0")
    return bound


def _text(value: Any, limit: int | None = None) -> str:
    text = redact_url(str(value)) if value is not None else ""
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."


class TrackingWriter:
    """Handle on the writer process of this command (thread-safe; see the module docstring).

    ``sync``: the writer first sends what ended processes left in the spool for this store.
    """

    def __init__(self, tracking_uri: str, *, spool_dir: str | Path | None = None, sync: bool = False) -> None:
        require_mlflow()
        self.tracking_uri = tracking_uri
        inbox_read, inbox_write = os.pipe()
        reply_read, reply_write = os.pipe()
        root = str(Path(__file__).resolve().parents[2])  # the writer runs this same code
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.tracking.writer_process", str(inbox_read), str(reply_write)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                pass_fds=(inbox_read, reply_write), env=env)
        finally:
            os.close(inbox_read)
            os.close(reply_write)
        self._inbox, self._replies = Connection(inbox_write, readable=False), Connection(reply_read, writable=False)
        self._outbox: SimpleQueue = SimpleQueue()
        self._tokens = itertools.count(1)
        self._answers: dict[int, tuple[Any, str | None]] = {}
        self._cond = threading.Condition()
        self.ids: dict[str, str] = {}  # local id -> the store's id, as the writer reports them
        self.errors: list[str] = []  # writes that failed for good
        self.fatal: str | None = None  # the store cannot be used at all
        self.left: int | None = None  # writes left spooled, once the writer is done
        self._experiments: dict[str, str] = {}
        self._runs: weakref.WeakSet[RunHandle] = weakref.WeakSet()  # whose held epochs a flush sends
        self.closed = False
        threading.Thread(target=self._send_loop, name="tracking-send", daemon=True).start()
        threading.Thread(target=self._read_loop, name="tracking-read", daemon=True).start()
        self.submit({"op": "hello", "tracking_uri": tracking_uri, "spool_dir": str(spool_dir or "") or None,
                     "sync": sync})

    # -- records ------------------------------------------------------------------------------------
    def submit(self, record: dict[str, Any]) -> None:
        """Queue ``record`` for the writer (returns at once)."""
        if not self.closed:
            self._outbox.put(record)

    def ask(self, records: Sequence[dict[str, Any]]) -> list[int]:
        """Submit ``records`` that answer (a result, or why they failed): their tokens for :meth:`answer`."""
        tokens = [next(self._tokens) for _ in records]
        for token, record in zip(tokens, records):
            self.submit({**record, "reply": token})
        return tokens

    def answer(self, token: int, timeout: float = 0.0) -> tuple[bool, Any, str | None]:
        """(answered, result, error) of a record :meth:`ask` submitted, waiting at most ``timeout`` s. A record
        not answered yet is still written (or spooled) later."""
        with self._cond:
            self._cond.wait_for(lambda: token in self._answers or self.left is not None, timeout)
            return (True, *self._answers[token]) if token in self._answers else (False, None, None)

    def flush(self, timeout: float | None = None) -> str | None:
        """Wait up to ``timeout`` s until everything submitted is written or spooled; a one-line note when
        writes wait in the spool (the store unreachable) or still in the queue (a hung store)."""
        timeout = flush_bound_s() if timeout is None else timeout
        self._send_held()
        [token] = self.ask([{"op": "flush"}])
        answered, pending, _ = self.answer(token, timeout)
        if not answered:
            return (f"the MLflow server has not answered for {timeout:.0f} s: the writes of this command are "
                    "still queued, and are sent (or spooled) as it goes on")
        return self._spooled_note(pending)

    def _spooled_note(self, left: int) -> str | None:
        if not left:
            return None
        return (f"the MLflow server did not answer: {left} writes wait in the spool; "
                f"`cvae-bench sync --tracking-uri {redact_url(self.tracking_uri)}` sends them "
                "(the next study or train on this store does too)")

    def experiment(self, name: str) -> str:
        """The local id of experiment ``name`` (created in the store if needed, tagged model training)."""
        with self._cond:  # trial threads start runs at once: one record per experiment
            if name not in self._experiments:
                self._experiments[name] = new_id("e")
                self.submit({"op": "experiment", "local_id": self._experiments[name], "name": name})
            return self._experiments[name]

    def start_run(self, experiment: str, run_name: str, *, tags: Mapping[str, Any] | None = None,
                  parent: str | None = None, reuse: str | None = None) -> "RunHandle":
        """A new run of ``experiment`` (a name), a child of run ``parent`` when given; ``reuse``: the id of a
        run to take up again if the store still has it active (a study's parent run, on a rerun)."""
        local = new_id()
        all_tags = {k: _text(v, MAX_TAG_LENGTH) for k, v in (tags or {}).items()}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        record = {"op": "open_run" if reuse else "create_run", "local_id": local,
                  "experiment_id": self.experiment(experiment), "run_name": run_name, "tags": all_tags,
                  "start_time": now_ms()}
        self.submit({**record, "reuse": reuse} if reuse else record)
        run = RunHandle(self, local, run_name, record["experiment_id"])
        self._runs.add(run)
        return run

    def run_id(self, local: str) -> str:
        """The store's id of a local id once the writer has reported it, else the local id."""
        return self.ids.get(local, local)

    def raise_if_fatal(self) -> None:
        if self.fatal:
            raise TrackingStoreError(self.fatal)

    # -- the end ------------------------------------------------------------------------------------
    def close(self, timeout: float | None = None) -> str | None:
        """Let the writer finish, waiting at most ``timeout`` s (default :func:`flush_bound_s`); then it is
        stopped and what it has not written stays spooled. Returns a one-line note when writes are left for
        ``cvae-bench sync``."""
        timeout = flush_bound_s() if timeout is None else timeout
        if not self.closed:
            self._send_held()
            self.submit({"op": "close"})
            self.closed = True
            self._outbox.put(None)
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.wait_for(lambda: self.left is not None, timeout)
        if self.proc.poll() is None and self.left is None:
            self.proc.terminate()  # the writer spools the write in flight and the rest
        try:
            self.proc.wait(max(5.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with self._cond:
            self._cond.wait_for(lambda: self.left is not None, 1.0)
        self.raise_if_fatal()
        if self.left is None:
            raise TrackingError(f"the tracking writer exited with status {self.proc.returncode} before it had "
                                "written or spooled everything: runs of this command are incomplete")
        return self._spooled_note(self.left)

    def abandon(self) -> None:
        """Stop the writer before anything was written (bad options): no run is created."""
        self.closed = True
        self._outbox.put(None)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    # -- machinery ----------------------------------------------------------------------------------
    def _send_held(self) -> None:
        """Send the epochs every run still holds back (:data:`METRICS_INTERVAL_S`)."""
        for run in list(self._runs):
            run._send_rows()

    def _send_loop(self) -> None:
        try:
            while (record := self._outbox.get()) is not None:
                self._inbox.send(record)
        except OSError:  # the writer is gone: close() reports it
            pass
        self._inbox.close()

    def _read_loop(self) -> None:
        while True:
            try:
                message = self._replies.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            with self._cond:
                if kind == "id":
                    self.ids[message[1]] = message[2]
                elif kind == "reply":
                    self._answers[message[1]] = (message[2], message[3])
                elif kind == "error":
                    self.errors.append(f"{message[1]}: {message[2]}")
                elif kind == "fatal":
                    self.fatal = message[1]
                elif kind == "done":
                    self.left = message[1]
                self._cond.notify_all()
        with self._cond:
            if self.fatal and self.left is None:
                self.left = 0
            self._cond.notify_all()


class RunHandle(Tracker):
    """One run written through a :class:`TrackingWriter`: the :class:`bench.tracking.base.Tracker` of ``train``,
    of each trial and of a study's parent run.

    Every method queues records and returns at once. Epoch metrics are held back and sent together at most
    every :data:`METRICS_INTERVAL_S` (any other write sends them first, so order is kept). The logged model
    is named after the run (``<variant>-<dataset>``, ``<variant>-trial-<n>``).
    """

    def __init__(self, writer: TrackingWriter, local_id: str, run_name: str, experiment: str = "") -> None:
        self.writer, self.local_id, self.run_name = writer, local_id, run_name
        self._experiment = experiment  # the experiment's local id
        self.ended = False
        self._rows: list[list] = []  # held epoch metrics: [key, value, timestamp, step]
        self._sent_at = time.monotonic()
        self._pending_model: tuple[str, int, dict | None] | None = None  # (local model id, step, dataset)

    @property
    def run_id(self) -> str:
        """The store's id of the run once known, else its local id (``local-...``)."""
        return self.writer.run_id(self.local_id)

    @property
    def experiment_id(self) -> str | None:
        """The store's id of the run's experiment, None until known."""
        found = self.writer.run_id(self._experiment) if self._experiment else None
        return None if not found or is_local(found) else found

    def _submit(self, op: str, **fields: Any) -> None:
        self._send_rows()
        self.writer.submit({"op": op, "run_id": self.local_id, **fields})

    def _send_rows(self) -> None:
        if self._rows:
            rows, self._rows = self._rows, []
            self.writer.submit({"op": "log_batch", "run_id": self.local_id, "metrics": rows})
        self._sent_at = time.monotonic()

    # -- the Tracker interface ----------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        self._submit("log_batch", params=[[str(k), _text(v)] for k, v in params.items()])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._submit("log_batch", tags=[[str(k), _text(v, MAX_TAG_LENGTH)] for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        ts = now_ms()
        self._rows += [[str(k), float(v), ts, int(step)] for k, v in metrics.items()]
        if time.monotonic() - self._sent_at >= METRICS_INTERVAL_S:
            self._send_rows()

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Fit callback: the epoch's metrics (``step=epoch``); stops a fit whose store cannot be used."""
        self.log_metrics(metrics, step=epoch)
        self.writer.raise_if_fatal()

    def log_figures(self, figure_data: Mapping[str, Any]) -> None:
        """Figures as data (:mod:`bench.figures.kinds`), drawn by the writer and logged as PNGs."""
        self._submit("log_figures", figures=dict(figure_data))

    def log_text(self, text: str, artifact_file: str) -> None:
        self._log_written(artifact_file, lambda path: path.write_text(text))

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """A matplotlib figure, saved here as a PNG (e.g. a study's Optuna plots)."""
        self._log_written(artifact_file, lambda path: figure.savefig(path, dpi=100))

    def _log_written(self, artifact_file: str, write: Any) -> None:
        folder, _, name = artifact_file.rpartition("/")
        path = Path(tempfile.mkdtemp(prefix="cvae-bench-file-")) / name
        write(path)
        self._submit("log_artifact", local_path=str(path), artifact_path=folder or None)

    def log_file(self, local_path: str, artifact_dir: str) -> None:
        """A copy of ``local_path`` goes to the writer (the caller may change or delete the file)."""
        copy = Path(tempfile.mkdtemp(prefix="cvae-bench-file-")) / Path(local_path).name
        shutil.copy2(local_path, copy)
        self._submit("log_artifact", local_path=str(copy), artifact_path=artifact_dir or None)

    def delete_artifacts(self, artifact_dir: str) -> None:
        self._submit("delete_artifacts", artifact_path=artifact_dir)

    def log_datasets(self, inputs: Sequence[Mapping[str, str]]) -> None:
        self._submit("log_inputs", datasets=[{str(k): str(v) for k, v in d.items()} for d in inputs])

    def log_model(self, saved_folder: str, *, step: int, metrics: Mapping[str, float] | None,
                  params: Mapping[str, str], tags: Mapping[str, str], requirements: Sequence[str],
                  dataset: Mapping[str, str] | None = None) -> None:
        """The saved folder (handed over: the writer removes it) as a logged model of the run; ``metrics``
        None: it stays PENDING until :meth:`log_model_metrics`."""
        self._finish_model(None)  # a model still pending is superseded: FAILED
        model = new_id("m")
        self._submit("begin_model", local_id=model, local_path=str(saved_folder), step=int(step),
                     params={str(k): _text(v) for k, v in params.items()},
                     tags={str(k): _text(v, MAX_TAG_LENGTH) for k, v in tags.items()},
                     requirements=[str(r) for r in requirements])
        self._pending_model = (model, int(step), {str(k): str(v) for k, v in dataset.items()} if dataset else None)
        if metrics is not None:
            self._finish_model(metrics)

    def log_model_metrics(self, metrics: Mapping[str, float]) -> None:
        if self._pending_model is None:
            raise RuntimeError("log_model_metrics: no logged model is pending (log_model(metrics=None) first)")
        self._finish_model(metrics)

    def _finish_model(self, metrics: Mapping[str, float] | None) -> None:
        if self._pending_model is not None:
            model, step, dataset = self._pending_model
            self._pending_model = None
            self._submit("finish_model", model_id=model, step=step, dataset=dataset,
                         metrics=None if metrics is None else {str(k): float(v) for k, v in metrics.items()})

    def end(self, status: str = "FINISHED", reason: str | None = None) -> None:
        """End the run: FINISHED, FAILED or KILLED; ``reason`` goes to the ``end_reason`` tag."""
        if status not in RUN_STATUSES:
            raise ValueError(f"status={status!r}: must be one of {', '.join(RUN_STATUSES)}")
        if self.ended:
            return
        self._finish_model(None)  # its metrics never came: FAILED
        self._submit("set_terminated", status=status, end_time=now_ms(), reason=_text(reason) if reason else None)
        self.ended = True


def is_local(run_id: str | None) -> bool:
    """True for a local id (``local-...``): a run the store had not given an id yet when it was recorded."""
    return bool(run_id) and run_id.startswith(LOCAL_PREFIX)
