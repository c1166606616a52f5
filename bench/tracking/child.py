"""The tracking process itself: ``python -m bench.tracking.child REPLY_FD NICENESS``.

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
            if len(self.buffer) >= HEADER.size:
                (size,) = HEADER.unpack_from(self.buffer)
                if len(self.buffer) >= HEADER.size + size:
                    payload = bytes(self.buffer[HEADER.size:HEADER.size + size])
                    del self.buffer[:HEADER.size + size]
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
        self.reply("run", self.tracker.run_id)
        try:
            self.tracker.log_params(params)
            from bench.figures.draw import warm_up

            warm_up()  # fonts and the PNG encoder, while training runs: drawing at the end is then fast
            self._warm_store()
            from bench.tracking.logged_model import warm_up as warm_up_model_logging

            warm_up_model_logging()  # MLflow's model modules, while training runs
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
                tracker.log_figures(message[1])
            elif kind == "params":
                tracker.log_params(message[1])
            elif kind == "tags":
                tracker.set_tags(message[1])
            elif kind == "text":
                tracker.log_text(message[1], message[2])
            elif kind == "file":
                try:
                    tracker.log_file(message[1], message[2])
                finally:
                    shutil.rmtree(Path(message[1]).parent, ignore_errors=True)
            elif kind == "delete":
                tracker.delete_artifacts(message[1])
            elif kind == "datasets":
                tracker.log_datasets(message[1])
            elif kind == "model":
                tracker.log_model(message[1], **message[2])
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
    """``python -m bench.tracking.child REPLY_FD NICENESS`` (started by :class:`TrackingProcess`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reply_fd, niceness = int(argv[0]), int(argv[1])
    if niceness:
        os.nice(niceness)
    configure_mlflow_environment()
    with os.fdopen(reply_fd, "wb") as outbox:
        code = _Child(_Inbox(sys.stdin.fileno()), outbox).serve()
        outbox.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the interpreter's teardown of mlflow's modules (~0.1 s): every write is committed by now.
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
