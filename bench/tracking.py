"""MLflow tracking for one run: params, per-epoch metrics, final metrics, tags and figures.

Runs are made with :class:`mlflow.MlflowClient` (``create_run`` with an ``mlflow.parentRunId`` tag),
not with the fluent active-run stack, so child runs can be created from any thread or process.
Every write to MLflow goes through :meth:`RunTracker._write`, and from there through a
:class:`bench.tracking_spool.ResilientClient`: when the tracking server cannot be reached, writes
back off and are spooled locally, training goes on, and the spool is replayed later (by the same
process on its next successful write, or by ``cvae-bench sync``).

Credentials never reach MLflow or the logs: :func:`redact` (:func:`bench.redaction.redact_url`)
masks the password of any URL (``scheme://user:PASSWORD@host``, ``?password=...``); params, tags
and end reasons pass through it, and commands use it wherever a tracking or storage URL is printed.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .redaction import redact_url
from .tracking_spool import MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, MAX_TAGS_PER_BATCH  # noqa: F401

if TYPE_CHECKING:  # mlflow costs ~1.5 s to import: only commands that track pay for it
    from matplotlib.figure import Figure
    from mlflow import MlflowClient
    from PIL.Image import Image as PILImage

    from .tracking_spool import ResilientClient

#: MLflow's own default since 3.7; the retired file store (``./mlruns``) is never used.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: MLflow truncates nothing for us: tag values above this length are rejected by some stores.
MAX_TAG_LENGTH = 5000

RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")


def redact(text: str | None) -> str:
    """``text`` with the password of every URL in it masked (see :func:`bench.redaction.redact_url`)."""
    return redact_url(text) if text else ""


def resolve_tracking_uri(cli_value: str | None = None) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else :data:`DEFAULT_TRACKING_URI`."""
    return cli_value or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def ui_hint(tracking_uri: str) -> str:
    """How a user opens the MLflow UI on ``tracking_uri`` (password redacted)."""
    uri = redact(tracking_uri)
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri}"


def make_client(tracking_uri: str) -> "MlflowClient":
    """An :class:`mlflow.MlflowClient` for ``tracking_uri``; a URI MLflow cannot use is a :class:`CLIError`.

    MLflow prints "View run ... at <tracking URL>" when a run ends on a server; that URL may hold a
    password, so the printing is switched off (``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``).
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from .cli_errors import CLIError

    try:
        return MlflowClient(tracking_uri=tracking_uri)
    except MlflowException as exc:  # an unsupported scheme: a one-line error, not a traceback
        detail = redact(" ".join(str(exc).split()))[:300]
        raise CLIError(f"tracking store {redact(tracking_uri)}: {detail}") from None


def open_experiment(tracking_uri: str, experiment: str) -> tuple["ResilientClient", str]:
    """A spooling client (:class:`bench.tracking_spool.ResilientClient`) on ``tracking_uri`` and the
    id of ``experiment`` (created if needed).

    The store must answer now: an unreachable or unusable tracking store is a one-line
    :class:`CLIError` (password masked). Later outages are spooled, not raised.
    """
    from mlflow.exceptions import MlflowException

    from .cli_errors import CLIError
    from .tracking_spool import ResilientClient

    try:
        client = ResilientClient(tracking_uri, client=make_client(tracking_uri))
        return client, RunTracker.experiment_id(client, experiment)
    except (MlflowException, OSError) as exc:
        detail = redact(" ".join(str(exc).split()))[:300]
        raise CLIError(f"tracking store {redact(tracking_uri)}: {detail}") from None


# --------------------------------------------------------------------------------------------------
# What a run records about its environment


@functools.lru_cache(maxsize=1)
def git_commit(path: str | None = None) -> str | None:
    """Commit checked out in the working tree holding ``path`` (default: this code), or None."""
    cwd = path or str(Path(__file__).resolve().parent)
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=2)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


@functools.lru_cache(maxsize=1)
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: Any) -> str:
    """Human name of a torch device: the GPU model for CUDA, the CPU model otherwise."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_name()


def environment_tags(device: Any) -> dict[str, str]:
    """Tags describing where a run ran: device, torch/CUDA versions, git commit, host."""
    import torch

    tags = {"device": str(device), "device_name": device_name(device), "torch_version": torch.__version__,
            "cuda_version": torch.version.cuda or "none", "python_version": platform.python_version(),
            "host": platform.node()}
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    return tags


def config_params(model_cfg: Any, train_cfg: Any, data_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The whole resolved configuration as one flat mapping (MLflow params).

    Keys of :meth:`CVAEConfig.to_flat_dict`, :meth:`TrainConfig.to_flat_dict` and the data options
    must not collide (a collision would silently drop a value); a collision raises ValueError.
    """
    params: dict[str, Any] = {}
    for part in (model_cfg.to_flat_dict(), train_cfg.to_flat_dict(), dict(data_options or {})):
        clash = params.keys() & part.keys()
        if clash:
            raise ValueError(f"config keys logged twice: {', '.join(sorted(clash))}")
        params.update(part)
    return params


def run_tags(model_cfg: Any, data: Any, device: Any, **extra: Any) -> dict[str, str]:
    """Tags of a training run: variant, dataset, the environment (:func:`environment_tags`), extras."""
    return {"variant": model_cfg.variant, "dataset": data.name, **environment_tags(device),
            **{k: str(v) for k, v in extra.items()}}


def log_fit_result(tracker: "RunTracker | NullTracker", result: Any) -> None:
    """A :class:`bench.fit.FitResult`'s final metrics (``step`` = last epoch) and figures."""
    if isinstance(tracker, NullTracker):
        return
    from .figures import log_fit_figures

    step = int(result.history[-1]["epoch"]) if result.history else 0
    tracker.log_metrics({**result.final, "train_seconds": result.train_seconds}, step=step)
    log_fit_figures(tracker, result)


# --------------------------------------------------------------------------------------------------
# Trackers


class RunTracker:
    """One MLflow run, written through a :class:`bench.tracking_spool.ResilientClient`.

    Usable as a :func:`bench.fit.fit` callback (``tracker(epoch, metrics)`` logs that epoch's
    metrics in one ``log_batch`` call with ``step=epoch``) and as a context manager (an exception
    ends the run FAILED with the reason in the ``end_reason`` tag; KeyboardInterrupt ends it KILLED).

    ``client`` is a ResilientClient (share one among the runs of a process: one spool, one
    back-off) or a plain ``MlflowClient``, which gets a ResilientClient of its own. While the server
    is unreachable a run created meanwhile has a local id (``local-...``); :attr:`run_id` is the
    real id as soon as the spool has been replayed.
    """

    def __init__(self, client: "ResilientClient | MlflowClient", run_id: str) -> None:
        from .tracking_spool import ResilientClient

        self.client = client if isinstance(client, ResilientClient) else ResilientClient(client=client)
        self._run_id = run_id
        self.ended = False

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
    def experiment_id(cls, client: "ResilientClient | MlflowClient", name: str) -> str:
        """Id of the experiment ``name``, created (or restored, if deleted) when needed.

        Needs the store to answer: experiments are not spooled.
        """
        from mlflow.exceptions import MlflowException

        writer = cls(client, run_id="")
        experiment = writer.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return writer._write("create_experiment", name)
            except MlflowException:  # another process created it between the two calls
                experiment = writer.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            writer._write("restore_experiment", experiment.experiment_id)
        return experiment.experiment_id

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

    def log_image(self, image: "PILImage", artifact_file: str) -> None:
        """A Pillow image saved as PNG at ``artifact_file`` (the run figures, :mod:`bench.figures`);
        zlib's fastest level: half the encoding time, files ~15 % larger."""
        self._log_file(artifact_file, lambda path: image.save(path, format="PNG", compress_level=1))

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


class NullTracker:
    """:class:`RunTracker`'s interface, doing nothing (``--no-track``)."""

    run_id: str | None = None
    ended = False

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> None:
        pass

    def log_figure(self, figure: "Figure", artifact_file: str) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_image(self, image: "PILImage", artifact_file: str) -> None:
        pass

    def end(self, status: str = "FINISHED", reason: str | None = None) -> None:
        self.ended = True

    def __enter__(self) -> "NullTracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end()
