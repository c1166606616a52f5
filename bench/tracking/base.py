"""The one interface every tracker implements: :class:`Tracker`, and :class:`NullTracker`, which records nothing.

The harness talks to :class:`Tracker` only: :class:`bench.tracking.writer.RunHandle` (one MLflow run, written
by the command's writer process) and :class:`NullTracker` (``--no-track``). A tracker is also a
:func:`bench.training.loop.fit` callback: ``tracker(epoch, metrics)`` logs that epoch's metrics with
``step=epoch``. The base records nothing; a backend overrides every method.
"""

from __future__ import annotations

import shutil
from typing import Any, Mapping, Sequence

from bench.errors import interrupt_reason

RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")


class Tracker:
    """One tracked run. ``run_id``: the store's id, a local id (``local-...``) until the store has given one,
    None when nothing is tracked."""

    run_id: str | None = None
    ended = False

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Params (stringified, URLs redacted)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Metrics at ``step`` (an epoch), one request."""

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Tags (stringified, URLs redacted)."""

    def log_figures(self, figure_data: Mapping[str, Any]) -> None:
        """Figures as data (:mod:`bench.figures`), keyed like ``FIGURE_FILES``: drawn and logged as PNGs."""

    def log_text(self, text: str, artifact_file: str) -> None:
        """A text artifact at ``artifact_file`` (e.g. ``study/trials.csv``)."""

    def log_file(self, local_path: str, artifact_dir: str) -> None:
        """The file ``local_path`` as artifact ``artifact_dir/<its name>`` (e.g. ``checkpoint/state.pt``).
        The tracker keeps a copy where it writes later: the caller may change or delete the file."""

    def delete_artifacts(self, artifact_dir: str) -> None:
        """Delete the run's artifacts under ``artifact_dir`` (e.g. ``checkpoint``), after every earlier write.
        Best effort: a store that refuses is warned about, never an error of the run."""

    def log_datasets(self, inputs: Sequence[Mapping[str, str]]) -> None:
        """The data the run read (:func:`bench.tracking.dataset_inputs.dataset_inputs`), as MLflow inputs."""

    def log_model(self, saved_folder: str, *, step: int, metrics: Mapping[str, float] | None,
                  params: Mapping[str, str], tags: Mapping[str, str], requirements: Sequence[str],
                  dataset: Mapping[str, str] | None = None) -> None:
        """A saved CVAE folder (:mod:`models.saved_model`) as a logged model of the run, ``metrics`` linked to
        it (and to ``dataset``). The tracker takes the folder over and removes it once it is written.
        ``metrics`` None: the model is written now and stays PENDING until :meth:`log_model_metrics`
        (a fit logs its model while the test metrics are computed); ending the run first marks it FAILED."""
        shutil.rmtree(saved_folder, ignore_errors=True)

    def log_model_metrics(self, metrics: Mapping[str, float]) -> None:
        """Link ``metrics`` to the model ``log_model(metrics=None)`` left pending, which becomes READY."""

    def end(self, status: str = "FINISHED", reason: str | None = None) -> None:
        """End the run (one of :data:`RUN_STATUSES`); ``reason`` goes to the ``end_reason`` tag."""
        self.ended = True

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Fit callback: the epoch's metrics, ``step=epoch``."""
        self.log_metrics(metrics, step=epoch)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Ends the run FINISHED, KILLED (Ctrl-C, SIGTERM) or FAILED (the exception, as its reason)."""
        if exc_type is None:
            self.end("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end("KILLED", interrupt_reason(exc))
        else:
            self.end("FAILED", f"{exc_type.__name__}: {exc}")


class NullTracker(Tracker):
    """A :class:`Tracker` that records nothing (``--no-track``)."""
