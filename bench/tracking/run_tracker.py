"""One MLflow run written from this process: params, per-epoch metrics, final metrics, tags and figures.

Runs are made with :class:`mlflow.MlflowClient` (``create_run`` with an ``mlflow.parentRunId`` tag),
not with the fluent active-run stack, so child runs can be created from any thread or process.
Every write to MLflow goes through :meth:`RunTracker._write`, and from there through a
:class:`bench.tracking.spool.ResilientClient`: when the tracking server cannot be reached, writes
back off and are spooled locally, training goes on, and the spool is replayed later (by the same
process on its next successful write, or by ``cvae-bench sync``).

Credentials never reach MLflow or the logs: :func:`redact` (:func:`bench.tracking.redaction.redact_url`)
masks the password of any URL (``scheme://user:PASSWORD@host``, ``?password=...``); params, tags
and end reasons pass through it, and commands use it wherever a tracking or storage URL is printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from bench.tracking.base import RUN_STATUSES
from bench.tracking.store import redact

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow import MlflowClient

    from bench.tracking.spool import ResilientClient

#: Tag values above this length are rejected by some stores: longer ones are cut.
MAX_TAG_LENGTH = 5000


class RunTracker:
    """One MLflow run, written through a :class:`bench.tracking.spool.ResilientClient`.

    Usable as a :func:`bench.training.loop.fit` callback (``tracker(epoch, metrics)`` logs that epoch's
    metrics in one ``log_batch`` call with ``step=epoch``) and as a context manager (an exception
    ends the run FAILED with the reason in the ``end_reason`` tag; KeyboardInterrupt ends it KILLED).

    ``client`` is a ResilientClient (share one among the runs of a process: one spool, one
    back-off) or a plain ``MlflowClient``, which gets a ResilientClient of its own. While the server
    is unreachable a run created meanwhile has a local id (``local-...``); :attr:`run_id` is the
    real id as soon as the spool has been replayed.
    """

    def __init__(self, client: "ResilientClient | MlflowClient", run_id: str) -> None:
        from bench.tracking.spool import ResilientClient

        self.client = client if isinstance(client, ResilientClient) else ResilientClient(client=client)
        self._run_id = run_id
        self.ended = False
        self._pending_model: tuple[str, int, dict[str, str] | None] | None = None  # (id, step, dataset)

    @property
    def run_id(self) -> str:
        return self.client.run_id(self._run_id)

    # -- creation ----------------------------------------------------------------------------------
    @classmethod
    def start(cls, client: "ResilientClient | MlflowClient", experiment_id: str, run_name: str, *,
              parent_run_id: str | None = None, tags: Mapping[str, Any] | None = None) -> "RunTracker":
        """Create a new run (a child of ``parent_run_id`` when given) and return its tracker."""
        all_tags = {k: _tag_value(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        tracker = cls(client, run_id="")
        tracker._run_id = tracker._write("create_run", experiment_id, run_name=run_name, tags=all_tags)
        return tracker

    @classmethod
    def reopen(cls, client: "ResilientClient | MlflowClient", run_id: str) -> "RunTracker":
        """Tracker of an existing run, set back to RUNNING (a resumed study's parent run)."""
        tracker = cls(client, run_id)
        tracker._write("update_run", run_id, status="RUNNING")
        return tracker

    # -- logging -----------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Params (stringified, URLs redacted); sent in requests of at most 100."""
        self._write("log_batch", self._run_id, params={str(k): redact(str(v)) for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Metrics at ``step`` in one call (requests of at most 1000)."""
        self._write("log_batch", self._run_id, metrics={str(k): float(v) for k, v in metrics.items()}, step=int(step))

    def log_metric_steps(self, rows: Sequence[tuple[str, float, int]]) -> None:
        """Metrics of several steps, rows of (key, value, step), in one call (e.g. epochs held back)."""
        rows = [(str(k), float(v), int(step)) for k, v, step in rows]
        if rows:
            self._write("log_batch", self._run_id, metric_steps=rows)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._write("log_batch", self._run_id, tags={str(k): _tag_value(v) for k, v in tags.items()})

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Fit callback: the epoch's metrics, ``step=epoch``, in one batched call."""
        self.log_metrics(metrics, step=epoch)

    def log_figure(self, figure: "Figure", artifact_file: str) -> None:
        """A matplotlib figure saved as PNG at ``artifact_file`` (e.g. ``figures/recon.png``)."""
        self._log_file(artifact_file, lambda path: figure.savefig(path, dpi=100))

    def log_text(self, text: str, artifact_file: str) -> None:
        self._log_file(artifact_file, lambda path: Path(path).write_text(text))

    def log_figures(self, figure_data: Mapping[str, Any]) -> None:
        """Draw each figure (:func:`bench.figures.draw.save_png`) and log it as a PNG at its ``FIGURE_FILES`` path."""
        from bench.figures.draw import save_png
        from bench.figures.kinds import FIGURE_FILES

        for name, data in figure_data.items():
            self._log_file(FIGURE_FILES[name], lambda path, data=data: save_png(data, path))

    def log_file(self, local_path: str, artifact_dir: str) -> None:
        """``local_path`` as artifact ``artifact_dir/<name>``, written now (or spooled, with a copy)."""
        self._write("log_artifact", self._run_id, str(local_path), artifact_dir or None)

    def delete_artifacts(self, artifact_dir: str) -> None:
        """Delete ``artifact_dir`` of this run (now, or spooled after the writes before it)."""
        self._write("delete_artifacts", self._run_id, artifact_dir)

    def log_datasets(self, inputs: Sequence[Mapping[str, str]]) -> None:
        self._write("log_inputs", self._run_id, [dict(d) for d in inputs])

    def log_model(self, saved_folder: str, *, step: int, metrics: Mapping[str, float] | None,
                  params: Mapping[str, str], tags: Mapping[str, str], requirements: Sequence[str],
                  dataset: Mapping[str, str] | None = None) -> None:
        """The saved folder as a logged model of this run (:mod:`bench.tracking.logged_model`); removed after.
        ``metrics`` None: the model stays PENDING until :meth:`log_model_metrics`."""
        import shutil

        params = {k: redact(str(v)) for k, v in params.items()}
        tags = {k: _tag_value(v) for k, v in tags.items()}
        dataset = dict(dataset) if dataset else None
        try:
            if metrics is not None:
                self._write("log_model", self._run_id, saved_folder, step=step, metrics=dict(metrics), params=params,
                            tags=tags, requirements=list(requirements), dataset=dataset)
                return
            self._finish_model(None)  # a model still pending is superseded: FAILED
            model_id = self._write("begin_model", self._run_id, saved_folder, step=step, params=params, tags=tags,
                                   requirements=list(requirements))
            self._pending_model = (model_id, int(step), dataset)
        finally:
            shutil.rmtree(saved_folder, ignore_errors=True)

    def log_model_metrics(self, metrics: Mapping[str, float]) -> None:
        """Link ``metrics`` to the model :meth:`log_model` left pending and make it READY."""
        if self._pending_model is None:
            raise RuntimeError("log_model_metrics: no logged model is pending (log_model(metrics=None) first)")
        self._finish_model(metrics)

    def _finish_model(self, metrics: Mapping[str, float] | None) -> None:
        if self._pending_model is not None:
            model_id, step, dataset = self._pending_model
            self._pending_model = None
            self._write("finish_model", self._run_id, model_id, step=step,
                        metrics=None if metrics is None else {str(k): float(v) for k, v in metrics.items()},
                        dataset=dataset)

    def _log_file(self, artifact_file: str, write: Any) -> None:
        import tempfile

        folder, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory(prefix="cvae-bench-artifact-") as tmp:
            path = Path(tmp) / name
            write(path)
            self._write("log_artifact", self._run_id, str(path), folder or None)

    def end(self, status: str = "FINISHED", reason: str | None = None) -> None:
        """End the run: FINISHED, FAILED or KILLED; ``reason`` goes to the ``end_reason`` tag."""
        if status not in RUN_STATUSES:
            raise ValueError(f"status={status!r}: must be one of {', '.join(RUN_STATUSES)}")
        if self.ended:
            return
        self._finish_model(None)  # its metrics never came: FAILED
        if reason:
            self.set_tags({"end_reason": redact(reason)})
        self._write("set_terminated", self._run_id, status=status)
        self.ended = True

    # -- context manager ---------------------------------------------------------------------------
    def __enter__(self) -> "RunTracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end("KILLED", "interrupted")
        else:
            self.end("FAILED", f"{exc_type.__name__}: {exc}")

    # -- the single seam for writes ----------------------------------------------------------------
    def _write(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``ResilientClient.<method>(*args, **kwargs)``: every MLflow write of a run passes here."""
        return getattr(self.client, method)(*args, **kwargs)


def _tag_value(value: Any) -> str:
    text = redact(str(value))
    return text if len(text) <= MAX_TAG_LENGTH else text[:MAX_TAG_LENGTH - 3] + "..."
