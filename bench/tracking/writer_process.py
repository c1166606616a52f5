"""The writer process: ``python -m bench.tracking.writer_process REPLY_FD NICENESS``.

Started by :class:`bench.tracking.writer.TrackingWriter`. Reads records (:mod:`bench.tracking.ops`) from
stdin, length-prefixed pickles, and writes them to the store in order. A write that fails for a
transient reason opens a circuit: that record and every later one go to the spool
(:mod:`bench.tracking.spool`) until a replay succeeds, tried after a back-off of 1 s, 2 s, 4 s ... 60 s.
Replies go back on ``REPLY_FD``: the store's id of each local id as it becomes known, the results of
records that asked for one, errors, and, at the end, how many writes are left spooled.

It ignores SIGINT (Ctrl-C reaches the whole process group: the command decides how its runs end).
SIGTERM (the command's bounded wait at its end ran out, e.g. a hung server) stops it promptly: the
record in flight and everything still unread are spooled, and ``cvae-bench sync`` sends them. End of
input without a ``close`` means the command died: what it sent is written, then the runs it left
open are ended KILLED and its unfinished models marked FAILED.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

HEADER = struct.Struct("<I")
MAX_BACKOFF_S = 60.0
TIMEOUT = object()


def frame(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload)) + payload


class Inbox:
    """Frames from a pipe, read with an optional timeout (:data:`TIMEOUT`); None at end of input."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer, self.eof = fd, bytearray(), False

    def get(self, timeout: float | None = None) -> Any:
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
            if deadline is not None and not select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                return TIMEOUT
            chunk = os.read(self.fd, 1 << 16)
            self.eof = not chunk
            self.buffer += chunk


class _Stop(BaseException):
    """SIGTERM arrived while a write waited on the store."""


class Writer:
    """Applies records in order, spooling them while the store cannot be reached (see the module docstring)."""

    def __init__(self, inbox: Inbox, replies: BinaryIO) -> None:
        self.inbox, self.replies = inbox, replies
        self.store: Any = None
        self.spool: Any = None
        self.failures, self.retry_at = 0, 0.0
        self.open_runs: dict[str, None] = {}  # runs created here and not ended (ordered)
        self.open_models: dict[str, str] = {}  # models begun here and not finished -> their run
        self.in_request = self.in_wait = self.stopping = False

    # -- replies -------------------------------------------------------------------------------------
    def reply(self, *message: Any) -> None:
        try:
            self.replies.write(frame(message))
            self.replies.flush()
        except OSError:  # the command is gone; the writes go on regardless
            pass

    def applied(self, record: dict[str, Any], result: Any, error: str | None = None) -> None:
        """After ``record`` reached the store (or failed for good): tell the command what it needs."""
        local = record.get("local_id")
        if local and local in self.store.ids:
            self.reply("id", local, self.store.ids[local])
        for local, real in (result.items() if record["op"] == "resolve" and result else ()):
            self.reply("id", local, real)
        if "reply" in record:
            self.reply("reply", record["reply"], result, error)

    # -- the loop ------------------------------------------------------------------------------------
    def serve(self) -> int:
        hello = self.inbox.get()
        if not hello or hello.get("op") != "hello":
            return 0
        from bench.tracking.ops import Store, one_line
        from bench.tracking.spool import Spool, default_spool_dir, sync_spool
        from bench.tracking.store import make_client

        uri = hello["tracking_uri"]
        try:
            self.store = Store(make_client(uri), uri)
        except Exception as exc:  # noqa: BLE001 -- a store MLflow cannot use: nothing can be written
            self.reply("fatal", one_line(exc) if "tracking store" in str(exc) else f"tracking store: {one_line(exc)}")
            return 1
        self.spool = Spool(Path(hello.get("spool_dir") or default_spool_dir()), uri)
        if hello.get("sync"):  # what ended processes left for this store (best effort: sync retries)
            try:
                sync_spool(self.store, self.spool.dir, on_applied=self.applied)
            except Exception:  # noqa: BLE001
                pass
        while True:
            wait = None if not self.spool.pending else max(0.0, self.retry_at - time.monotonic())
            try:
                self.in_wait = True
                record = TIMEOUT if self.stopping else self.inbox.get(wait)
            except _Stop:
                record = TIMEOUT
            finally:
                self.in_wait = False
            if self.stopping:
                return self.stop()
            if record is TIMEOUT:
                self.try_replay()
            elif record is None:
                return self.parent_gone()
            elif record["op"] == "flush":
                self.try_replay(force=True)
                self.reply("reply", record["reply"], self.spool.pending, None)
            elif record["op"] == "close":
                self.try_replay(force=True)
                self.reply("done", self.spool.pending)
                self.spool.close()
                return 0
            elif record["op"] == "log_figures":
                for figure in drawn(record):
                    self.write(figure)
            else:
                self.write(record)

    def write(self, record: dict[str, Any]) -> None:
        """Apply ``record`` now, or spool it (while the circuit is open, or on a transient failure). A
        record's handed-over file is gone afterwards either way (written, or moved into the spool)."""
        from bench.tracking.ops import FILE_OPS

        self.track(record)
        try:
            if self.stopping or (self.spool.pending and not self.try_replay()) or time.monotonic() < self.retry_at:
                self.spool.append(record)
            else:
                self.apply(record)
        finally:
            if record["op"] in FILE_OPS:
                _remove(Path(record["local_path"]))

    def apply(self, record: dict[str, Any]) -> None:
        from bench.tracking.ops import is_transient, one_line

        try:
            self.in_request = True
            result = self.store.apply(record)
        except _Stop:
            self.stopping = True
            self.spool.append(record)
        except Exception as exc:  # noqa: BLE001 -- sorted right below
            if is_transient(exc):
                self.open_circuit()
                self.spool.append(record)
                return
            message = one_line(exc)
            print(f"warning: MLflow write {record['op']} failed: {message}", file=sys.stderr, flush=True)
            self.reply("error", record.get("run_id") or record.get("local_id"), f"{record['op']}: {message}")
            self.applied(record, None, message)
        else:
            self.failures = 0
            self.applied(record, result)
        finally:
            self.in_request = False

    def track(self, record: dict[str, Any]) -> None:
        op = record["op"]
        if op in ("create_run", "open_run"):
            self.open_runs[record["local_id"]] = None
        elif op == "set_terminated":
            self.open_runs.pop(record["run_id"], None)
        elif op == "begin_model":
            self.open_models[record["local_id"]] = record["run_id"]
        elif op == "finish_model":
            self.open_models.pop(record["model_id"], None)

    def open_circuit(self) -> None:
        self.failures += 1
        self.retry_at = time.monotonic() + min(MAX_BACKOFF_S, 2.0 ** (self.failures - 1))

    def try_replay(self, force: bool = False) -> bool:
        """Replay the spool if the back-off allows (``force``: now); True when it is empty afterwards."""
        from bench.tracking.ops import is_transient

        if not self.spool.pending:
            return True
        if self.stopping or (not force and time.monotonic() < self.retry_at):
            return False
        try:
            self.in_request = True
            self.spool.replay(self.store, on_applied=self.applied)
        except _Stop:
            self.stopping = True
            return False
        except Exception as exc:  # noqa: BLE001
            if not is_transient(exc):
                raise
            self.open_circuit()
            return False
        finally:
            self.in_request = False
        self.failures = 0
        return True

    # -- endings -------------------------------------------------------------------------------------
    def parent_gone(self) -> int:
        """The command ended without closing: end what it left open, then send what can be sent."""
        from bench.tracking.ops import DEAD_PROCESS_REASON, now_ms

        for model, run in list(self.open_models.items()):
            self.write({"op": "finish_model", "run_id": run, "model_id": model, "step": 0, "metrics": None,
                        "dataset": None})
        for run in list(self.open_runs):
            self.write({"op": "set_terminated", "run_id": run, "status": "KILLED", "end_time": now_ms(),
                        "reason": DEAD_PROCESS_REASON})
        self.try_replay(force=True)
        self.spool.close()
        return 1

    def stop(self) -> int:
        """SIGTERM: spool everything still unread (the command's bounded wait is over)."""
        while (record := self.inbox.get(0)) not in (None, TIMEOUT):
            if record["op"] == "log_figures":
                for figure in drawn(record):
                    self.write(figure)
            elif record["op"] not in ("flush", "close"):
                self.write(record)
        self.reply("done", self.spool.pending)
        self.spool.close()
        return 0

    def on_sigterm(self, signum: int, frame_: Any) -> None:
        self.stopping = True
        if self.in_request or self.in_wait:  # else the loop sees ``stopping`` at its next step
            raise _Stop()


def drawn(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A ``log_figures`` record as ``log_artifact`` records of PNGs drawn here (:mod:`bench.figures.draw`)."""
    from bench.figures.draw import save_png
    from bench.figures.kinds import FIGURE_FILES

    records = []
    for name, data in record["figures"].items():
        folder, _, file_name = FIGURE_FILES[name].rpartition("/")
        path = Path(tempfile.mkdtemp(prefix="cvae-bench-figure-")) / file_name
        try:
            save_png(data, path)
        except Exception as exc:  # noqa: BLE001 -- a figure that cannot be drawn is not the run's failure
            print(f"warning: figure {name} was not drawn: {type(exc).__name__}: {exc}", file=sys.stderr)
            _remove(path)
            continue
        records.append({"op": "log_artifact", "run_id": record["run_id"], "local_path": str(path),
                        "artifact_path": folder})
    return records


def _remove(path: Path) -> None:
    """Remove a handed-over file or folder, and the temporary folder the command put it in."""
    import shutil

    target = path.parent if path.parent.name.startswith("cvae-bench-") else path
    shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reply_fd, niceness = int(argv[0]), int(argv[1])
    if niceness:
        os.nice(niceness)
    from bench.tracking.mlflow_env import configure_mlflow_environment

    configure_mlflow_environment()
    with os.fdopen(reply_fd, "wb") as replies:
        writer = Writer(Inbox(sys.stdin.fileno()), replies)
        signal.signal(signal.SIGTERM, writer.on_sigterm)
        code = writer.serve()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip tearing down MLflow's modules: every write is committed or spooled


if __name__ == "__main__":
    main(sys.argv[1:])
