"""The tracking process of ``cvae-bench train``: a child process that owns the run's MLflow writes.

Tracking inside the training process added ~60 % to a digits run: importing MLflow (~1 s), opening
the store (~0.5 s), a write per epoch and five matplotlib figures. Here the child imports MLflow and
opens the store while the training process loads data, and does every write; the training process
pickles small messages onto a pipe (microseconds; a thread does the writing, so a slow store never
blocks training) and imports neither mlflow nor matplotlib.

Timing, on a machine with few cores: CPU training keeps every core busy (its OpenMP workers spin
between kernels) and loses more time to a concurrent write than the write takes (~1.5x at niceness
19, ~3x at 5). So the child runs at the lowest priority (:data:`NICENESS`) and holds its writes
while training runs, sending at most one burst per :data:`LIVE_INTERVAL_S` (epochs slower than that
are written as they arrive); what is held is written once the training process ends the run and
waits. For a 20-epoch digits run that tail is ~0.15 s: 20 SQLite requests of ~5 ms (the spool's
``log_batch`` takes one step per request), five figures (~25 ms), the end of the run.

Messages, training process -> tracking process (stdin, length-prefixed pickles)::

    ("start", tracking_uri, experiment, run_name, tags, params)   open the store, create the run
    ("metrics", metrics, step)                                     one log_batch
    ("figures", {name: bench.figures.FigureData})                  draw and log each figure
    ("end", status, reason)                                        end the run; the last message

and back (a pipe of its own)::

    ("run", run_id)                  the run exists
    ("error", phase, message)        phase "open": the store could not be opened, no run exists;
                                     "run": a write failed, the run is incomplete (ended FAILED if possible)
    ("done", run_id, note)           everything is written (note: None, or how many writes wait in
                                     the local spool because the server is down); the process exits

The child writes through :class:`bench.tracking.RunTracker` (so through its write seam,
``RunTracker._write``, and the spool behind it), exactly as an in-process tracker would. The URI
travels in the first message, not on the command line, where ``ps`` would show its password. The
child ignores SIGINT (Ctrl-C reaches the whole process group): the training process decides how the
run ends (KILLED). If the training process vanishes, the child sees end-of-file, writes what it
holds and ends the run KILLED.
"""

from __future__ import annotations

import gc
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import SimpleQueue
from typing import Any, BinaryIO, Mapping

from .cli_errors import CLIError
from .redaction import redact_url

_HEADER = struct.Struct("!I")  # payload length in bytes
#: Niceness of the tracking process: the lowest priority, so that its start-up (imports, opening
#: the store) never slows training; at niceness 0 it slowed the data loading of a digits run by ~80 ms.
NICENESS = 19
#: While training runs, the tracking process writes at most one burst per this many seconds.
LIVE_INTERVAL_S = 2.0
#: Longest error detail passed on, in characters (one line).
MAX_DETAIL = 300


class TrackingStoreError(CLIError):
    """The tracking store could not be opened: no run exists (the one-line error of a bad URI)."""


class TrackingError(CLIError):
    """Tracking failed after the run was created, or the tracking process died: the run is incomplete."""


def _frame(message: tuple) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


def _read_message(stream: BinaryIO) -> tuple | None:
    """The next message, or None at end-of-file (also on a truncated message)."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    return pickle.loads(payload) if len(payload) == size else None


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, passwords masked, at most :data:`MAX_DETAIL` characters
    (SQLAlchemy's echo of the failed statement left out)."""
    text = " ".join(str(exc).split()).split(" [SQL: ")[0]
    if not isinstance(exc, CLIError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return redact_url(text)[:MAX_DETAIL]


# --------------------------------------------------------------------------------------------------
# The training process's side


class TrackingProcess:
    """Handle on a tracking process; started at once, so its imports overlap the caller's work.

    Quacks like :class:`bench.tracking.RunTracker` where ``fit`` and the train command need it
    (``tracker(epoch, metrics)``, :meth:`log_metrics`, :meth:`end`, context manager), but every call
    only queues a message. :meth:`finish` waits until the run is written and returns its id.
    Errors surface as :class:`TrackingStoreError` (store unusable: from the first epoch callback
    after the child reports it, or from :meth:`finish`) or :class:`TrackingError` (from
    :meth:`finish`: a failed write or a dead child), each a one-line message.
    """

    def __init__(self, *, niceness: int = NICENESS) -> None:
        reply_read, reply_write = os.pipe()
        root = str(Path(__file__).resolve().parents[1])  # the child imports this same code
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.tracking_process", str(reply_write), str(niceness)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(reply_write,), env=env)
        finally:
            os.close(reply_write)
        self._replies = os.fdopen(reply_read, "rb")
        self._outbox: SimpleQueue[bytes | None] = SimpleQueue()
        self.run_id: str | None = None
        self.error: tuple[str, str] | None = None  # (phase, message) reported by the child
        self.done = False
        self.note: str | None = None  # from the child when done: writes left in the spool (server down)
        self.ended = False
        self._closed = threading.Event()  # the child closed its reply pipe (finished or died)
        self._sender = threading.Thread(target=self._send_loop, name="tracking-send", daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name="tracking-read", daemon=True)
        self._sender.start()
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

    def log_figures(self, figure_data: Mapping[str, Any]) -> None:
        """Figures as data (:mod:`bench.figures`), drawn and logged by the child."""
        self._send(("figures", dict(figure_data)))

    def end(self, status: str = "FINISHED", reason: str | None = None) -> None:
        """Queue the end of the run (FINISHED, FAILED or KILLED); nothing can be logged after it."""
        if not self.ended:
            self.ended = True
            self._send(("end", status, redact_url(reason) if reason else None))
            self._outbox.put(None)  # closes the child's stdin once everything is written

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
        self._outbox.put(None)
        if self.proc.poll() is None:
            self.proc.terminate()
        self._closed.wait()
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
    def _send(self, message: tuple) -> None:
        if not self.ended or message[0] == "end":
            self._outbox.put(_frame(message))

    def _send_loop(self) -> None:
        stdin = self.proc.stdin
        while (frame := self._outbox.get()) is not None:
            try:
                stdin.write(frame)
                stdin.flush()
            except OSError:  # the child is gone; _read_loop notices and finish() reports it
                break
        try:
            stdin.close()
        except OSError:
            pass

    def _read_loop(self) -> None:
        try:
            while (message := _read_message(self._replies)) is not None:
                kind = message[0]
                if kind == "run":
                    self.run_id = message[1]
                elif kind == "error":
                    self.error = (message[1], message[2])
                elif kind == "done":
                    self.run_id, self.note, self.done = message[1], message[2], True
        finally:
            self._replies.close()
            self._closed.set()
            self.proc.wait()


# --------------------------------------------------------------------------------------------------
# The tracking process's side


class _Inbox:
    """Messages from the training process (stdin), read with an optional timeout."""

    TIMEOUT = ("timeout",)

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.eof = False

    def get(self, timeout: float | None = None) -> tuple | None:
        """The next message; None at end-of-file; :attr:`TIMEOUT` if none came within ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if len(self.buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self.buffer)
                if len(self.buffer) >= _HEADER.size + size:
                    payload = bytes(self.buffer[_HEADER.size:_HEADER.size + size])
                    del self.buffer[:_HEADER.size + size]
                    return pickle.loads(payload)
            if self.eof:
                return None
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


class _Child:
    """Reads messages from the training process and writes them through one RunTracker.

    While training runs, writes are held and sent in bursts at most every :data:`LIVE_INTERVAL_S`
    seconds: a CPU-bound training process loses more time to a concurrent SQLite write than the
    write takes. Epochs slower than that are written as they arrive; everything still held is
    written when the training process ends the run.
    """

    def __init__(self, inbox: _Inbox, outbox: BinaryIO) -> None:
        self.inbox, self.outbox = inbox, outbox
        self.tracker: Any = None
        self.tracking_uri = ""

    def reply(self, *message: Any) -> None:
        try:
            self.outbox.write(_frame(message))
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
        start = self.inbox.get()
        if start is None or start[0] != "start":
            return 0  # abandoned before the run existed: write nothing
        _, tracking_uri, experiment, run_name, tags, params = start
        self.tracking_uri = tracking_uri
        try:
            if missing:
                raise missing
            from .tracking import RunTracker, open_experiment

            client, experiment_id = open_experiment(tracking_uri, experiment)
            self.tracker = RunTracker.start(client, experiment_id, run_name, tags=tags)
        except Exception as exc:  # noqa: BLE001 - any failure here means the store is unusable
            detail = one_line(exc)
            if not isinstance(exc, CLIError):
                detail = f"tracking store {redact_url(tracking_uri)}: {detail}"
            self.reply("error", "open", detail)
            return 1
        self.reply("run", self.tracker.run_id)
        try:
            self.tracker.log_params(params)
            from .figures import warm_up

            warm_up()  # fonts and the PNG encoder, while training runs: drawing at the end is then fast
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

    def _warm_store(self) -> None:
        """Read the run once: the store compiles its queries now rather than at the first artifact
        (~10 ms at the end, where it counts). A read may fail (a spooled run): then nothing is warmed."""
        try:
            self.tracker.client.get_run(self.tracker.run_id)
        except Exception:  # noqa: BLE001 - only a warm-up
            pass

    def _serve_run(self) -> int:
        held: list[tuple] = []
        held_since = last_burst = time.monotonic()
        while True:
            wait = None if not held else max(0.0, held_since + LIVE_INTERVAL_S - time.monotonic())
            message = self.inbox.get(wait)
            if message is None:  # the training process is gone without ending the run
                self._write(held)
                self.tracker.end("KILLED", "the training process exited before ending the run")
                self._settle()
                return 1
            if message is not _Inbox.TIMEOUT:
                if not held:
                    held_since = time.monotonic()
                held.append(message)
                if message[0] == "end":
                    return self._write(held)
                if time.monotonic() - last_burst < LIVE_INTERVAL_S:
                    continue
            self._write(held)
            last_burst = time.monotonic()

    def _write(self, messages: list[tuple]) -> int:
        """Write ``messages`` in order (and empty the list); after an "end", reply "done".

        Metrics of one step that follow each other (the last epoch's and the final test metrics)
        go in one request."""
        from .figures import log_figures

        tracker = self.tracker
        rows: list[tuple[str, float, int]] = []  # consecutive metrics messages, sent as one request
        for message in _merge_steps(messages):
            kind = message[0]
            if kind == "metrics":
                rows += [(k, v, message[2]) for k, v in message[1].items()]
                continue
            tracker.log_metric_steps(rows)
            rows = []
            if kind == "figures":
                log_figures(tracker, message[1])
            elif kind == "end":
                tracker.end(message[1], message[2])
                self.reply("done", tracker.run_id, self._settle())
            else:
                raise ValueError(f"unknown message {kind!r}")
        tracker.log_metric_steps(rows)
        messages.clear()
        return 0

    def _settle(self) -> str | None:
        """Send what the spool holds; a note for the user if the server is still unreachable."""
        return self.tracker.client.settle()


def main(argv: list[str]) -> int:
    """``python -m bench.tracking_process REPLY_FD NICENESS`` (started by :class:`TrackingProcess`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reply_fd, niceness = int(argv[0]), int(argv[1])
    if niceness:
        os.nice(niceness)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with os.fdopen(reply_fd, "wb") as outbox:
        code = _Child(_Inbox(sys.stdin.fileno()), outbox).serve()
        outbox.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the interpreter's teardown of mlflow's modules (~0.1 s): every write is committed by now.
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
