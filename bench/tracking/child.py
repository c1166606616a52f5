"""The tracking process itself: ``python -m bench.tracking.child REPLY_FD WAKE_FD NICENESS``.

Started by :class:`bench.tracking.process.TrackingProcess`; reads the messages of
:mod:`bench.tracking.messages` on stdin and writes the run through one
:class:`bench.tracking.run_tracker.RunTracker`.
"""

from __future__ import annotations

import gc
import os
import pickle
import select
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

from bench.errors import CLIError
from bench.tracking.messages import HEADER, frame, one_line
from bench.tracking.mlflow_env import configure_mlflow_environment
from bench.tracking.redaction import redact_url

#: While training runs, the tracking process writes at most one burst per this many seconds.
LIVE_INTERVAL_S = 2.0
#: Processes that draw a run's figures side by side (:mod:`bench.figures.draw_pool`).
DRAW_WORKERS = min(3, os.cpu_count() or 1)


class _Inbox:
    """Messages from the training process (stdin), read with an optional timeout.

    ``wake_fd``: the read end of the training process's wake pipe. While training runs the child
    dozes on it (:meth:`get` with ``doze``) rather than waking at each message: a niced process woken
    on the other core at every epoch costs the training process's OpenMP threads more than the read
    takes. The training process writes a byte to it at "release" and "end"; its exit closes it. Either
    ends the dozing for good.
    """

    TIMEOUT = ("timeout",)

    def __init__(self, fd: int, wake_fd: int | None = None) -> None:
        self.fd, self.wake_fd = fd, wake_fd
        self.buffer = bytearray()
        self.eof = False
        self.woken = wake_fd is None  # no wake pipe: never doze

    def ready(self) -> bool:
        """True if a message (or end-of-file) can be read without waiting."""
        if self.eof or len(self.buffer) >= HEADER.size:
            return True
        ready, _, _ = select.select([self.fd], [], [], 0)
        return bool(ready)

    def get(self, timeout: float | None = None, *, doze: bool = False) -> tuple | None:
        """The next message; None at end-of-file; :attr:`TIMEOUT` if none came within ``timeout`` s.

        ``doze`` (with a ``timeout``, until the wake pipe is woken): wait on the wake pipe, not on
        stdin, so a message that arrives meanwhile is read only at the timeout or at the wake."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if len(self.buffer) >= HEADER.size:
                (size,) = HEADER.unpack_from(self.buffer)
                if len(self.buffer) >= HEADER.size + size:
                    payload = bytes(self.buffer[HEADER.size:HEADER.size + size])
                    del self.buffer[:HEADER.size + size]
                    return pickle.loads(payload)
            if self.eof:
                return None
            if doze and deadline is not None and not self.woken and not select.select([self.fd], [], [], 0)[0]:
                # Nothing to read: doze till the deadline, then read what came (a wake byte or the
                # training process's exit: read as usual from now on, for good).
                left = max(0.0, deadline - time.monotonic())
                self.woken = bool(select.select([self.wake_fd], [], [], left)[0])
                doze = False
                continue
            if deadline is not None:
                ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    return self.TIMEOUT
            chunk = os.read(self.fd, 1 << 16)
            self.eof = not chunk
            self.buffer += chunk


def _merge_steps(messages: list[tuple]) -> list[tuple]:
    """``messages`` with each run of "metrics" messages of one step merged into one."""
    merged: list[tuple] = []
    for message in messages:
        last = merged[-1] if merged else None
        if last and message[0] == last[0] == "metrics" and message[2] == last[2]:
            merged[-1] = ("metrics", {**last[1], **message[1]}, message[2])
        else:
            merged.append(message)
    return merged


def _drop_superseded_files(messages: list[tuple]) -> list[tuple]:
    """``messages`` without the "file" messages a later one makes moot: a later "file" of the same
    artifact path, or a later "delete" of its folder (a run's checkpoints, held back while training
    ran: each replaces the one before, and a finished run deletes them). Their copies are removed."""
    kept: list[tuple] = []
    deleted: set[str] = set()
    written: set[tuple[str, str]] = set()
    for message in reversed(messages):
        if message[0] == "delete":
            deleted.add(message[1])
        elif message[0] == "file":
            target = (message[2], Path(message[1]).name)
            if message[2] in deleted or target in written:
                shutil.rmtree(Path(message[1]).parent, ignore_errors=True)
                continue
            written.add(target)
        kept.append(message)
    return kept[::-1]


class _Child:
    """Reads messages from the training process and writes them through one RunTracker.

    Between "hold" and "release" (while training runs) writes are held and sent in bursts at most
    every :data:`LIVE_INTERVAL_S` seconds: a CPU-bound training process loses more time to a
    concurrent SQLite write than the write takes. With a wake pipe (:class:`_Inbox`) the messages
    are read only then too, so an epoch reaches the run at most :data:`LIVE_INTERVAL_S` after it
    ends; without one, epochs slower than that are written as they arrive.
    Otherwise (before training: the training process sets up on one core; after it: the test metrics
    are computed with a core left to this process) each message is written as it comes, but for
    checkpoint files and deletes after "release": those wait for the end of the run, where the
    run's delete makes its checkpoints moot (:func:`_drop_superseded_files`).
    """

    def __init__(self, inbox: _Inbox, outbox: BinaryIO, pool: Any = None) -> None:
        self.inbox, self.outbox = inbox, outbox
        self.tracker: Any = None
        self.tracking_uri = ""
        self.pool = pool  # a bench.figures.draw_pool.DrawPool, or None: figures are drawn here
        self._drawing: str | None = None  # the folder the pool draws the submitted figures into
        self._file_dirs: set[str] = set()  # artifact folders this process has written files to
        self.holding = False  # between "hold" and "release"
        self.released = False  # after "release"
        self._deferred: list[tuple] = []  # "file" and "delete" messages after "release", for the end

    def reply(self, *message: Any) -> None:
        try:
            self.outbox.write(frame(message))
            self.outbox.flush()
        except OSError:  # the training process is gone; keep writing the run regardless
            pass

    def serve(self) -> int:
        try:
            import mlflow  # noqa: F401 - the slow import, done while the training process loads data
        except ImportError as exc:
            missing: ImportError | None = exc
        else:
            missing = None
        steps = self._warm_up_steps() if missing is None else []
        while steps and not self.inbox.ready():  # warm up until the run starts; the rest after
            _run_step(steps.pop(0))
        start = self.inbox.get()
        if start is None or start[0] != "start":
            return 0  # abandoned before the run existed: write nothing
        _, tracking_uri, experiment, run_name, tags, params = start
        self.tracking_uri = tracking_uri
        try:
            if missing:
                raise missing
            from bench.tracking.run_tracker import RunTracker
            from bench.tracking.store import open_experiment

            client, experiment_id = open_experiment(tracking_uri, experiment)
            self.tracker = RunTracker.start(client, experiment_id, run_name, tags=tags)
        except Exception as exc:  # noqa: BLE001 - any failure here means the store is unusable
            detail = one_line(exc)
            if not isinstance(exc, CLIError):
                detail = f"tracking store {redact_url(tracking_uri)}: {detail}"
            self.reply("error", "open", detail)
            return 1
        self.reply("run", self.tracker.run_id, experiment_id)
        try:
            for step in steps:
                _run_step(step)
            self.tracker.log_params(params)
            self._warm_store()
            # Everything allocated so far (mlflow's modules: ~1e6 objects) lives as long as the process;
            # without this, the first full collection stalls one write for ~0.1 s.
            gc.freeze()
            return self._serve_run()
        except Exception as exc:  # noqa: BLE001 - reported to the training process, which reports it
            self.reply("error", "run", one_line(exc))
            try:
                self.tracker.end("FAILED", f"tracking: {one_line(exc)}")
            except Exception:  # noqa: BLE001 - the store is likely what failed
                pass
            return 1

    def _warm_up_steps(self) -> list:
        """What the end of a run needs, done ahead: while the training process imports torch and loads
        data (seconds, on one core) this process has a core to itself, and the run does not exist yet;
        once training runs, this niced process is starved. What opening a SQL store imports (~0.8 s of
        CPU), then MLflow's model-writing modules. The run is created as soon as it is asked for,
        between two steps."""

        def sql_store() -> None:
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

        from bench.tracking.logged_model import warm_up as model_logging

        return [sql_store, model_logging]

    def _submit_figures(self, figure_data: dict) -> None:
        """Start drawing the figures in the pool (logged by :meth:`_log_drawn_figures`); without one, now."""
        if self.pool is None or not self.pool.size:
            self.tracker.log_figures(figure_data)
            return
        import tempfile

        from bench.figures.kinds import FIGURE_FILES

        self._log_drawn_figures()  # one batch at a time
        self._drawing = tempfile.mkdtemp(prefix="cvae-bench-figures-")
        self.pool.submit(figure_data, self._drawing, {name: FIGURE_FILES[name].rpartition("/")[2]
                                                      for name in figure_data})

    def _log_drawn_figures(self) -> None:
        if self._drawing is None:
            return
        from bench.figures.kinds import FIGURE_FILES

        try:
            for name, path in self.pool.collect().items():
                self.tracker.log_file(path, FIGURE_FILES[name].rpartition("/")[0])
        finally:
            shutil.rmtree(self._drawing, ignore_errors=True)
            self._drawing = None

    def _warm_store(self) -> None:
        """Read the run and the experiment's logged models once: the store compiles its queries now
        rather than at the first artifact and the logged model (tens of ms at the end, where it counts).
        A read may fail (a spooled run): then nothing is warmed."""
        try:
            client = self.tracker.client
            experiment_id = client.get_run(self.tracker.run_id).info.experiment_id
            client.search_logged_models(experiment_ids=[experiment_id], max_results=1)  # the logged-model tables
        except Exception:  # noqa: BLE001 - only a warm-up
            pass

    def _serve_run(self) -> int:
        held: list[tuple] = []
        held_since = last_burst = time.monotonic()
        while True:
            dozing = self.holding and not self.inbox.woken
            if dozing:  # the next burst is due at last_burst + LIVE_INTERVAL_S, held or not
                wait = max(0.0, last_burst + LIVE_INTERVAL_S - time.monotonic())
            else:
                wait = None if not held else max(0.0, held_since + LIVE_INTERVAL_S - time.monotonic())
            message = self.inbox.get(wait, doze=dozing)
            if message is None:  # the training process is gone without ending the run
                self._write(self._deferred + held)
                self.tracker.end("KILLED", "the training process exited before ending the run")
                self._settle()
                return 1
            kind = None if message is _Inbox.TIMEOUT else message[0]
            if kind == "figures":
                self._submit_figures(message[1])  # drawn now, while the training process evaluates
                continue
            if kind == "hold":  # what came before it is written first: training has not started yet
                self._write(held)
                self.holding = True
                continue
            if kind == "release":  # held checkpoints wait for the end too; the rest is written now
                self.holding, self.released = False, True
                self._deferred += [m for m in held if m[0] in ("file", "delete")]
                held = [m for m in held if m[0] not in ("file", "delete")]
            elif kind in ("file", "delete") and self.released:
                self._deferred.append(message)
                continue
            elif kind is not None:
                if not held:
                    held_since = time.monotonic()
                held.append(message)
                if kind == "end":
                    return self._write(self._deferred + held)
                if self.holding and time.monotonic() - last_burst < LIVE_INTERVAL_S:
                    continue
                if not self.holding and self.inbox.ready():
                    continue  # more is waiting: written together
            self._write(held)
            last_burst = time.monotonic()

    def _write(self, messages: list[tuple]) -> int:
        """Write ``messages`` in order (and empty the list); after an "end", reply "done". ("figures" are
        never held: :meth:`_serve_run` hands them to the drawing pool as they come.)

        Metrics of one step that follow each other (the last epoch's and the final test metrics)
        go in one request."""
        tracker = self.tracker
        rows: list[tuple[str, float, int]] = []  # consecutive metrics messages, sent as one request
        for message in _merge_steps(_drop_superseded_files(messages)):
            kind = message[0]
            if kind == "metrics":
                rows += [(k, v, message[2]) for k, v in message[1].items()]
                continue
            tracker.log_metric_steps(rows)
            rows = []
            if kind == "params":
                tracker.log_params(message[1])
            elif kind == "tags":
                tracker.set_tags(message[1])
            elif kind == "text":
                tracker.log_text(message[1], message[2])
            elif kind == "file":
                try:
                    tracker.log_file(message[1], message[2])
                    self._file_dirs.add(message[2])
                finally:
                    shutil.rmtree(Path(message[1]).parent, ignore_errors=True)
            elif kind == "delete":
                if message[1] in self._file_dirs:  # else nothing of this run is there (held files were dropped)
                    tracker.delete_artifacts(message[1])
                    self._file_dirs.discard(message[1])
            elif kind == "datasets":
                tracker.log_datasets(message[1])
            elif kind == "model":
                tracker.log_model(message[1], **message[2])
            elif kind == "model_metrics":
                tracker.log_model_metrics(message[1])
            elif kind == "end":
                self._log_drawn_figures()
                tracker.end(message[1], message[2])
                self.reply("done", tracker.run_id, self._settle())
            else:
                raise ValueError(f"unknown message {kind!r}")
        tracker.log_metric_steps(rows)
        self._log_drawn_figures()
        messages.clear()
        return 0

    def _settle(self) -> str | None:
        """Send what the spool holds; a note for the user if the server is still unreachable."""
        return self.tracker.client.settle()


def _drawing_pool() -> Any:
    """matplotlib and the figures' frames warmed up (:func:`bench.figures.draw.warm_up`, ~0.4 s of CPU),
    then the processes that draw a run's figures (:mod:`bench.figures.draw_pool`), forked now, while no
    thread runs yet; they wait until the run's figures come, after training. They inherit this
    process's lowest priority: drawing at niceness 0 beside the test-metric evaluation slowed it by
    ~0.15 s on a 2-core VM (its two OpenMP threads lose more than the drawing takes); at 19 they draw
    in the idle time it leaves and finish while the command waits. None if matplotlib cannot be set up
    (figures are then drawn, or fail to, where they are logged)."""
    try:
        from bench.figures.draw import warm_up
        from bench.figures.draw_pool import DrawPool

        warm_up()
        return DrawPool(DRAW_WORKERS)
    except Exception:  # noqa: BLE001 -- only a warm-up
        return None


def _run_step(step) -> None:
    try:
        step()
    except Exception:  # noqa: BLE001 -- only a warm-up: what it prepares is done later if need be
        pass


def main(argv: list[str]) -> int:
    """``python -m bench.tracking.child REPLY_FD WAKE_FD NICENESS`` (started by :class:`TrackingProcess`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reply_fd, wake_fd, niceness = int(argv[0]), int(argv[1]), int(argv[2])
    if niceness:
        os.nice(niceness)
    pool = _drawing_pool()
    configure_mlflow_environment()
    with os.fdopen(reply_fd, "wb") as outbox:
        child = _Child(_Inbox(sys.stdin.fileno(), wake_fd), outbox, pool)
        code = child.serve()
    # The reply pipe is closed first: the training process stops waiting at its end-of-file.
    if child.pool is not None:
        child.pool.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the interpreter's teardown of mlflow's modules (~0.1 s): every write is committed by now.
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
