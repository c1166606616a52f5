"""The tracking process of ``cvae-bench train``: a child process that owns the run's MLflow writes.

Tracking inside the training process added ~60 % to a digits run: importing MLflow (~1 s), opening
the store (~0.5 s), a write per epoch and five matplotlib figures. Here the child imports MLflow and
opens the store while the training process loads data, and does every write; the training process
pickles small messages onto a pipe (microseconds; a thread does the writing, so a slow store never
blocks training) and imports neither mlflow nor matplotlib.

Timing, on a machine with few cores: CPU training keeps every core busy (its OpenMP workers spin
between kernels) and loses more time to a concurrent write than the write takes (~1.5x at niceness
19, ~3x at 5). So the child runs at the lowest priority (:data:`NICENESS`), starts before the
training process imports torch, and does its slow work while the training process imports torch and
loads data (one core): importing MLflow and a SQL store, matplotlib and the figures' frames, forking
the processes that draw the figures (at that priority too), MLflow's model-writing modules -- then
creates the run the moment it is asked to, and writes what comes before training starts (the
datasets) while the training process sets up. While training runs (:meth:`TrackingProcess.hold`)
it dozes: it reads its stdin and writes what it read in one burst per :data:`LIVE_INTERVAL_S`, and
sleeps on a wake pipe in between rather than waking at each epoch's message (a niced process woken on
the other core at every epoch cost the training threads ~1 ms each time). A held checkpoint that a
later one replaces, or that the finished run deletes, is never written. Once the last epoch is done
(:meth:`TrackingProcess.release` wakes it: a byte on the wake pipe, as the end of the run does; the
training process's exit closes the pipe) the
training process hands over the figures and the trained model and computes its test metrics with
one torch thread fewer (``bench.cli.train.spare_a_core``): meanwhile the child writes the epochs,
writes the model (PENDING) and its drawing processes draw the figures. What is left when the
training process ends the run and waits -- the final metrics linked to the model, which becomes
READY, and the end of the run -- takes ~30 ms for a 20-epoch digits run on a 2-core VM (it was
0.3-0.4 s while all of it waited for the end).

The child (:mod:`bench.tracking.child`, message formats in :mod:`bench.tracking.messages`) writes through :class:`bench.tracking.run_tracker.RunTracker` (so through its write seam,
``RunTracker._write``, and the spool behind it), exactly as an in-process tracker would. The URI
travels in the first message, not on the command line, where ``ps`` would show its password. The
child ignores SIGINT (Ctrl-C reaches the whole process group): the training process decides how the
run ends (KILLED). If the training process vanishes, the child sees end-of-file, writes what it
holds and ends the run KILLED.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
from pathlib import Path
from queue import SimpleQueue
from typing import Any, BinaryIO, Mapping, Sequence

from bench.errors import CLIError
from bench.tracking.messages import frame, read_message
from bench.tracking.redaction import redact_url

#: Niceness of the tracking process: the lowest priority, so that its start-up (imports, opening
#: the store) never slows training; at niceness 0 it slowed the data loading of a digits run by ~80 ms.
NICENESS = 19


class TrackingStoreError(CLIError):
    """The tracking store could not be opened: no run exists (the one-line error of a bad URI)."""


class TrackingError(CLIError):
    """Tracking failed after the run was created, or the tracking process died: the run is incomplete."""


class TrackingProcess:
    """Handle on a tracking process; started at once, so its imports overlap the caller's work.

    Quacks like :class:`bench.tracking.run_tracker.RunTracker` where ``fit`` and the train command need it
    (``tracker(epoch, metrics)``, :meth:`log_metrics`, :meth:`end`, context manager), but every call
    only queues a message. :meth:`finish` waits until the run is written and returns its id.
    Errors surface as :class:`TrackingStoreError` (store unusable: from the first epoch callback
    after the child reports it, or from :meth:`finish`) or :class:`TrackingError` (from
    :meth:`finish`: a failed write or a dead child), each a one-line message.
    """

    def __init__(self, *, niceness: int = NICENESS) -> None:
        reply_read, reply_write = os.pipe()
        wake_read, self._wake_fd = os.pipe()  # a byte at release and end; closed when this process exits
        os.set_blocking(self._wake_fd, False)
        root = str(Path(__file__).resolve().parents[2])  # the child imports this same code
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.tracking.child", str(reply_write), str(wake_read), str(niceness)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(reply_write, wake_read), env=env)
        finally:
            os.close(reply_write)
            os.close(wake_read)
        self._replies = os.fdopen(reply_read, "rb")
        _widen(self.proc.stdin.fileno())
        self._writer = PipeWriter(self.proc.stdin)
        self.run_id: str | None = None
        self.experiment_id: str | None = None  # the run's experiment, once the child has made the run
        self.error: tuple[str, str] | None = None  # (phase, message) reported by the child
        self.done = False
        self.note: str | None = None  # from the child when done: writes left in the spool (server down)
        self.ended = False
        self._closed = threading.Event()  # the child closed its reply pipe (finished or died)
        self._reader = threading.Thread(target=self._read_loop, name="tracking-read", daemon=True)
        self._reader.start()

    # -- messages ----------------------------------------------------------------------------------
    def start_run(self, tracking_uri: str, experiment: str, run_name: str, *, tags: Mapping[str, Any],
                  params: Mapping[str, Any]) -> None:
        """Open ``experiment`` on ``tracking_uri`` and create the run (in the child).

        Tags and params are sent as strings (MLflow stores them so anyway): a value of a torch type
        (``torch.__version__`` is one) would make the child import torch (~1 s) to unpickle it.
        """
        self._send(("start", tracking_uri, experiment, run_name, {str(k): str(v) for k, v in tags.items()},
                    {str(k): str(v) for k, v in params.items()}))

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        self._send(("metrics", {str(k): float(v) for k, v in metrics.items()}, int(step)))

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Fit callback: queue the epoch's metrics (``step=epoch``); stop if the store is unusable."""
        self.log_metrics(metrics, step=epoch)
        self.raise_if_store_unusable()

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._send(("params", {str(k): str(v) for k, v in params.items()}))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._send(("tags", {str(k): str(v) for k, v in tags.items()}))

    def log_figures(self, figure_data: Mapping[str, Any]) -> None:
        """Figures as data (:mod:`bench.figures`), drawn and logged by the child."""
        self._send(("figures", dict(figure_data)))

    def log_text(self, text: str, artifact_file: str) -> None:
        self._send(("text", str(text), str(artifact_file)))

    def log_file(self, local_path: str, artifact_dir: str) -> None:
        """A copy of ``local_path`` (in a temporary folder the child removes once it is logged)."""
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="cvae-bench-file-"))
        copy = folder / Path(local_path).name
        shutil.copy2(local_path, copy)
        self._send(("file", str(copy), str(artifact_dir)))

    def delete_artifacts(self, artifact_dir: str) -> None:
        """The child deletes ``artifact_dir`` after writing everything sent before."""
        self._send(("delete", str(artifact_dir)))

    def log_datasets(self, inputs: Sequence[Mapping[str, str]]) -> None:
        self._send(("datasets", [{str(k): str(v) for k, v in d.items()} for d in inputs]))

    def log_model(self, saved_folder: str, *, step: int, metrics: Mapping[str, float] | None,
                  params: Mapping[str, str], tags: Mapping[str, str], requirements: Sequence[str],
                  dataset: Mapping[str, str] | None = None) -> None:
        """The child logs the folder, then removes it (it outlives this call: the child writes later).
        ``metrics`` None: pending until :meth:`log_model_metrics`."""
        self._send(("model", str(saved_folder), {
            "step": int(step), "metrics": None if metrics is None else {str(k): float(v) for k, v in metrics.items()},
            "params": {str(k): str(v) for k, v in params.items()}, "tags": {str(k): str(v) for k, v in tags.items()},
            "requirements": [str(r) for r in requirements],
            "dataset": {str(k): str(v) for k, v in dataset.items()} if dataset else None}))

    def log_model_metrics(self, metrics: Mapping[str, float]) -> None:
        self._send(("model_metrics", {str(k): float(v) for k, v in metrics.items()}))

    def hold(self) -> None:
        """Training starts: from now the child holds its writes (one burst per ``LIVE_INTERVAL_S`` at most)."""
        self._send(("hold",))

    def release(self) -> None:
        """Training is over: the child (woken, if it dozes) writes what it holds now, and what comes as
        it comes (checkpoint files and deletes wait for the end of the run, where a delete makes the
        files moot)."""
        self._send(("release",))
        self._wake()

    def end(self, status: str = "FINISHED", reason: str | None = None) -> None:
        """Queue the end of the run (FINISHED, FAILED or KILLED); nothing can be logged after it."""
        if not self.ended:
            self.ended = True
            self._send(("end", status, redact_url(reason) if reason else None))
            self._writer.close()  # the child's stdin, once everything is written
            self._wake()

    def raise_if_store_unusable(self) -> None:
        """Raise :class:`TrackingStoreError` if the child reported that the store cannot be opened."""
        if self.error and self.error[0] == "open":
            raise TrackingStoreError(self.error[1])

    # -- the end ---------------------------------------------------------------------------------
    def finish(self) -> str | None:
        """Wait until the child has written everything (it reports "done"); the run's id.

        Raises :class:`TrackingStoreError` or :class:`TrackingError` (one line) if tracking failed.
        """
        self.end()
        self._closed.wait()
        self._close_wake()
        self.raise_if_store_unusable()
        if self.error:
            raise TrackingError(f"MLflow run {self.run_id} is incomplete: {self.error[1]}")
        if not self.done:
            run = f"MLflow run {self.run_id}" if self.run_id else "the MLflow run"
            raise TrackingError(f"the tracking process exited with status {self.proc.wait()} before it had "
                                f"written everything: {run} is incomplete or missing")
        return self.run_id  # not waiting for the child's exit (~8 ms): _read_loop reaps it

    def abandon(self) -> None:
        """Stop the child before any run exists (e.g. bad options): nothing is written."""
        self.ended = True
        self._writer.close()
        self._wake()
        if self.proc.poll() is None:
            self.proc.terminate()
        self._closed.wait()
        self._close_wake()
        self.proc.wait()

    def __enter__(self) -> "TrackingProcess":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """No exception: queue FINISHED (the caller calls :meth:`finish` later). An exception: end
        the run FAILED (KILLED on KeyboardInterrupt) with the reason, wait for it, let it propagate."""
        if exc_type is None:
            self.end("FINISHED")
            return
        if issubclass(exc_type, KeyboardInterrupt):
            self.end("KILLED", "interrupted")
        else:
            self.end("FAILED", f"{exc_type.__name__}: {exc}")
        try:
            self.finish()
        except CLIError:
            pass  # the training error is the one to report

    # -- machinery -------------------------------------------------------------------------------
    def _wake(self) -> None:
        """Wake the child if it dozes (:class:`bench.tracking.child._Inbox`): it reads its stdin again.
        A frame still queued in the writer's thread is read when it comes."""
        if self._wake_fd < 0:
            return
        try:
            os.write(self._wake_fd, b"w")
        except OSError:  # the child is gone, or its pipe is full of bytes: either way it is awake
            pass

    def _close_wake(self) -> None:
        if self._wake_fd >= 0:
            os.close(self._wake_fd)
            self._wake_fd = -1

    def _send(self, message: tuple) -> None:
        if not self.ended or message[0] == "end":
            self._writer.send(frame(message))

    def _read_loop(self) -> None:
        try:
            while (message := read_message(self._replies)) is not None:
                kind = message[0]
                if kind == "run":
                    self.run_id, self.experiment_id = message[1], message[2]
                elif kind == "error":
                    self.error = (message[1], message[2])
                elif kind == "done":
                    self.run_id, self.note, self.done = message[1], message[2], True
        finally:
            self._replies.close()
            self._closed.set()
            self.proc.wait()


#: The capacity asked for the child's stdin (bytes; Linux's limit for unprivileged processes by
#: default): the figures' data of a run (~60 kB on digits) then goes in at once, from the caller.
PIPE_BYTES = 1 << 20


def _widen(fd: int) -> None:
    """Ask for a pipe of :data:`PIPE_BYTES` (best effort: Linux only, capped by ``pipe-max-size``)."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):  # not Linux, or refused: the pipe keeps its size
        pass


class PipeWriter:
    """Writes frames to a pipe (the child's stdin) without ever blocking the caller.

    A frame the pipe takes whole (an epoch's metrics: a few hundred bytes) is written by the caller at
    once; the rest of one it does not (the figures' data, or a pipe the child has not emptied) goes to
    a thread that waits for the pipe. Writing in the caller rather than always in the thread spares
    training a hand-over of the GIL per message (~0.7 ms an epoch on a 2-core VM). Order is kept:
    the caller writes nothing while the thread has frames left. A reader that is gone (EPIPE) drops
    every later frame; whoever reads the other pipe notices.
    """

    def __init__(self, pipe: BinaryIO) -> None:
        self.pipe, self.fd = pipe, pipe.fileno()
        os.set_blocking(self.fd, False)
        self._outbox: SimpleQueue[bytes | None] = SimpleQueue()
        self._queued = 0  # frames in _outbox not yet written whole; guarded by _lock
        self._lock = threading.Lock()
        self._broken = False
        self._thread = threading.Thread(target=self._write_queued, name="tracking-send", daemon=True)
        self._thread.start()

    def send(self, data: bytes) -> None:
        with self._lock:
            if self._broken:
                return
            if not self._queued:
                try:
                    data = self._write_some(data)
                except OSError:
                    self._broken = True
                    return
                if not data:
                    return
            self._queued += 1
            self._outbox.put(data)

    def close(self) -> None:
        """Close the pipe once everything sent before is written (returns at once)."""
        self._outbox.put(None)

    def _write_some(self, data: bytes) -> bytes:
        """What the pipe did not take of ``data`` now (raises OSError but for a full pipe)."""
        try:
            return data[os.write(self.fd, data):]
        except BlockingIOError:
            return data

    def _write_queued(self) -> None:
        while (data := self._outbox.get()) is not None:
            try:
                while data and not self._broken:
                    select.select([], [self.fd], [])
                    data = self._write_some(data)
            except OSError:
                self._broken = True
            with self._lock:
                self._queued -= 1
        try:
            self.pipe.close()
        except OSError:
            pass
