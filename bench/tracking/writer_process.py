"""The writer process: ``python -m bench.tracking.writer_process INBOX_FD REPLY_FD``.

Started by :class:`bench.tracking.writer.TrackingWriter`: applies the records (:mod:`bench.tracking.ops`) it
reads from its inbox in order, spools them (:mod:`bench.tracking.spool`) while the store cannot be reached,
and replies with the store's ids, results, errors and, at its end, how many writes are left spooled.
Outages, SIGTERM and a command that dies: docs/tracking.md.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

MAX_BACKOFF_S = 60.0
#: After SIGTERM, how long the writer waits for more of what the command sent before its end of input (s).
DRAIN_WAIT_S = 2.0


class _Stop(BaseException):
    """SIGTERM, raised only where the writer waits (on the store, or for input)."""


class Writer:
    """Applies records in order, spooling them while the store cannot be reached."""

    def __init__(self, inbox: Connection, replies: Connection) -> None:
        self.replies = replies
        # Records are taken off the pipe as they come, even while MLflow is imported or a write waits:
        # a command killed then loses none that it had sent.
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=_pump, args=(inbox, self.inbox), name="inbox", daemon=True).start()
        self.store: Any = None
        self.spool: Any = None
        self.failures, self.retry_at = 0, 0.0
        self.open_runs: dict[str, None] = {}  # runs created here and not ended, in order
        self.open_models: dict[str, str] = {}  # models begun here and not finished -> their run
        self.waiting = self.stopping = False

    def reply(self, *message: Any) -> None:
        try:
            self.replies.send(message)
        except OSError:  # the command is gone; the writes go on regardless
            pass

    def applied(self, record: dict[str, Any], result: Any, error: str | None = None) -> None:
        """After ``record`` reached the store (or failed for good): what the command waits to know."""
        found = dict(result) if record["op"] == "resolve" and result else {}
        if record.get("local_id") in self.store.ids:
            found[record["local_id"]] = self.store.ids[record["local_id"]]
        for local, real in found.items():
            self.reply("id", local, real)
        if "reply" in record:
            self.reply("reply", record["reply"], result, error)

    # -- the loop ------------------------------------------------------------------------------------
    def serve(self) -> int:
        from bench.tracking.ops import Store, one_line
        from bench.tracking.spool import Spool, default_spool_dir, sync_spool
        from bench.tracking.store import make_client

        hello = self.next()
        if not hello or hello.get("op") != "hello":
            return 0
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 -- the slow imports, while the command sets up
        from bench.figures.draw import warm_up

        warm_up()  # ~0.4 s of CPU now rather than at the end of the run, where the command waits for it

        first = self.next()  # the store is opened for the first record: a command that fails before touches none
        if first is None or first == "timeout":
            return 0
        uri = hello["tracking_uri"]
        try:
            self.store = Store(make_client(uri), uri)
        except Exception as exc:  # noqa: BLE001 -- a store MLflow cannot use: nothing can be written
            self.reply("fatal", one_line(exc) if "tracking store" in str(exc) else f"tracking store: {one_line(exc)}")
            return 1
        self.spool = Spool(Path(hello.get("spool_dir") or default_spool_dir()), uri)
        if hello.get("sync"):  # what ended processes left for this store (best effort: sync retries)
            try:
                self.waiting = True
                sync_spool(self.store, self.spool.dir, on_applied=self.applied)
            except (Exception, _Stop):  # noqa: BLE001
                pass
            finally:
                self.waiting = False
        record = first
        while not self.stopping:
            if record == "timeout":
                self.try_replay()
            elif record is None:
                return self.end_of_input()
            elif record["op"] in ("flush", "close"):
                self.try_replay(force=True)
                if record["op"] == "close":
                    break
                self.reply("reply", record["reply"], self.spool.pending, None)
            else:
                self.take(record)
            record = self.next(None if not self.spool.pending else max(0.0, self.retry_at - time.monotonic()))
        # SIGTERM: everything the command sent goes to the spool, to its end of input, starting with the
        # record in hand (the loop above read it, then saw ``stopping``; "timeout": the read was cut short)
        while self.stopping and record is not None:
            if record != "timeout" and record["op"] not in ("flush", "close"):
                self.take(record)
            if (record := self.next(DRAIN_WAIT_S)) == "timeout":
                break
        self.reply("done", self.spool.pending)
        self.spool.close()
        return 0

    def next(self, timeout: float | None = None) -> Any:
        """The next record; ``"timeout"``; None at the end of input (the command is gone)."""
        try:
            self.waiting = True
            return self.inbox.get(timeout=timeout)
        except (queue.Empty, _Stop):
            return "timeout"
        finally:
            self.waiting = False

    def take(self, record: dict[str, Any]) -> None:
        """Write a record now, or spool it; a handed-over file is gone afterwards either way."""
        from bench.tracking.ops import FILE_OPS

        if record["op"] == "log_figures":
            for figure in drawn(record):
                self.take(figure)
            return
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
            self.waiting = True
            result = self.store.apply(record)
        except _Stop:
            self.spool.append(record)
            return
        except Exception as exc:  # noqa: BLE001 -- sorted right below
            if is_transient(exc):
                self.open_circuit()
                self.spool.append(record)
                return
            message = one_line(exc)
            print(f"warning: MLflow write {record['op']} failed: {message}", file=sys.stderr, flush=True)
            self.reply("error", record.get("run_id") or record.get("local_id"), f"{record['op']}: {message}")
            self.applied(record, None, message)
            return
        finally:
            self.waiting = False
        self.failures = 0
        self.applied(record, result)

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
            self.waiting = True
            self.spool.replay(self.store, on_applied=self.applied)
        except _Stop:
            return False
        except Exception as exc:  # noqa: BLE001
            if not is_transient(exc):
                raise
            self.open_circuit()
            return False
        finally:
            self.waiting = False
        self.failures = 0
        return True

    def end_of_input(self) -> int:
        """The command ended without closing: end what it left open, then send what can be sent."""
        from bench.tracking.ops import DEAD_PROCESS_REASON, now_ms

        for model, run in list(self.open_models.items()):
            self.take({"op": "finish_model", "run_id": run, "model_id": model, "step": 0, "metrics": None,
                       "dataset": None})
        for run in list(self.open_runs):
            self.take({"op": "set_terminated", "run_id": run, "status": "KILLED", "end_time": now_ms(),
                       "reason": DEAD_PROCESS_REASON})
        self.try_replay(force=True)
        self.spool.close()
        return 1

    def on_sigterm(self, signum: int, frame: Any) -> None:
        self.stopping = True
        if self.waiting:  # elsewhere the loop sees ``stopping`` at its next step
            raise _Stop()


def _pump(connection: Connection, records: queue.SimpleQueue) -> None:
    """Move records from the pipe to ``records``; None once the command has closed it (or died)."""
    try:
        while True:
            records.put(connection.recv())
    except (EOFError, OSError):
        records.put(None)


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
    target = path.parent if path.parent.name.startswith("cvae-bench-") else path
    shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inbox_fd, reply_fd = map(int, argv)
    from bench.tracking.mlflow_env import configure_mlflow_environment

    configure_mlflow_environment()
    writer = Writer(Connection(inbox_fd, writable=False), Connection(reply_fd, readable=False))
    signal.signal(signal.SIGTERM, writer.on_sigterm)
    code = writer.serve()
    writer.replies.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip tearing down MLflow's modules: every write is committed or spooled


if __name__ == "__main__":
    main(sys.argv[1:])
