"""Writes that wait for the store: the writer's spool file (one JSON record a line, the files records hand
over beside it in ``<file>.files/``), its replay, and ``cvae-bench sync``.

A spooled checkpoint replaces the one of the same run and artifact path spooled before it; a replay drops
the records it has sent from the file as it goes; the file names its tracking URI redacted and replays only
to a matching one; a living writer holds ``<file>.lock`` (a ``flock``), so a sync takes only the files of
ended processes. Why and how: docs/tracking.md ("Outages").
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench.tracking.ops import DEAD_PROCESS_REASON, FILE_OPS, Store, dumps, is_transient, now_ms, one_line
from bench.tracking.redaction import redact_url

#: ``on_applied(record, result, error)``: called after each record a replay sent (``error``: why it failed for good).
Applied = Callable[[dict, Any, "str | None"], None]


def default_spool_dir() -> Path:
    root = os.environ.get("CVAE_BENCH_SPOOL")
    if root:
        return Path(root)
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache) if cache and os.path.isabs(cache) else Path.home() / ".cache") / "cvae-bench" / "mlflow-spool"


def try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


@dataclass
class Sent:
    """What a replay sent: records, and bytes (the JSON records and the files they carried)."""

    records: int = 0
    bytes: int = 0

    def __iadd__(self, other: "Sent") -> "Sent":
        self.records += other.records
        self.bytes += other.bytes
        return self


class Spool:
    """One writer's spool file (created with its first record) and the files its records carry."""

    def __init__(self, directory: Path, tracking_uri: str) -> None:
        self.dir, self.tracking_uri = Path(directory), tracking_uri
        self.path = self.dir / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self.files_dir = self.path.with_suffix(".files")
        self.pending = 0
        self._lock_fd: int | None = None
        self._spooled_files: dict[tuple[str, str, str], Path] = {}  # (run, artifact path, name) -> its copy

    def append(self, record: dict[str, Any]) -> None:
        """Spool ``record``: its file (if it hands one over) moves into the spool, replacing the spooled copy
        of the same artifact of the same run, if any (then no new line is written)."""
        if self._lock_fd is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = try_lock(self.path.with_suffix(".lock"))
        if record["op"] == "delete_artifacts":
            self._spooled_files = {k: v for k, v in self._spooled_files.items()
                                   if k[:2] != (record["run_id"], record["artifact_path"])}
        elif record["op"] in FILE_OPS:
            src = Path(record["local_path"])
            key = (record["run_id"], record.get("artifact_path") or "", src.name)
            if record["op"] == "log_artifact" and key in self._spooled_files:
                _replace(self._spooled_files[key], src)
                return
            dst = self.files_dir / uuid.uuid4().hex[:8] / src.name  # the artifact keeps its name
            dst.parent.mkdir(parents=True)
            shutil.move(str(src), dst)
            record = {**record, "local_path": str(dst)}
            if record["op"] == "log_artifact":
                self._spooled_files[key] = dst
        if not self.path.exists():
            self.path.write_text(dumps({"op": "header", "tracking_uri": redact_url(self.tracking_uri)}) + "\n")
        with open(self.path, "a") as fh:
            fh.write(dumps(record) + "\n")
        self.pending += 1

    def replay(self, store: Store, on_applied: Applied | None = None) -> Sent:
        """Send the spooled records in order (raises on the first failure; what was sent stays sent)."""
        self._spooled_files.clear()  # a record may go now: a later checkpoint is spooled anew
        try:
            sent = replay_file(store, self.path, on_applied=on_applied)
        finally:
            self.pending = _count(self.path)
        return sent

    def close(self) -> None:
        """Give up the file (the process's end does too): what is left becomes ``cvae-bench sync``'s. The lock
        file goes whatever is left: a sync locks a file anew (ours is held until the fd closes)."""
        if self._lock_fd is not None:
            self.path.with_suffix(".lock").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None


def _replace(old: Path, new: Path) -> None:
    shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    shutil.move(str(new), old)


def _count(path: Path) -> int:
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def replay_file(store: Store, path: Path, *, end_open_runs: bool = False, on_applied: Applied | None = None) -> Sent:
    """Send the records of one spool file in order through ``store``, then delete the file.

    Progress is kept: records sent are dropped from the file, and the local ids mapped so far are kept
    beside it (``.ids.json``), so an interrupted replay resumes where it stopped. ``end_open_runs`` (the
    file's process has ended): runs the file created but never ended are ended FAILED afterwards, and
    models it began but never finished are marked FAILED.
    """
    sent = Sent()
    if not path.exists():
        return sent
    lines = path.read_text().splitlines()
    header, records = json.loads(lines[0]), [json.loads(line) for line in lines[1:] if line.strip()]
    if header.get("tracking_uri") != redact_url(store.tracking_uri):
        raise ValueError(f"{path} was spooled for {header.get('tracking_uri')}, not {redact_url(store.tracking_uri)}")
    ids_file = path.with_suffix(".ids.json")
    if ids_file.exists():
        store.ids.update(json.loads(ids_file.read_text()))
    store.replaying = True
    done = 0
    try:
        for record in records:
            try:
                result, error = store.apply(record), None
            except Exception as exc:  # noqa: BLE001 -- a transient failure stops the replay; others skip the record
                if is_transient(exc):
                    raise
                result, error = None, one_line(exc)
                print(f"warning: spooled MLflow write {record['op']} failed: {error}", file=sys.stderr, flush=True)
            done += 1
            if error is None:
                sent += Sent(1, len(dumps(record)) + (_size(Path(record["local_path"])) if record["op"] in FILE_OPS
                                                       else 0))
            if on_applied is not None:
                on_applied(record, result, error)
    finally:
        store.replaying = False
        if done < len(records):
            path.write_text("\n".join(dumps(r) for r in [header, *records[done:]]) + "\n")
            ids_file.write_text(json.dumps(store.ids))
    if end_open_runs:
        created = {r["local_id"] for r in records if r["op"] in ("create_run", "open_run")}
        ended = {r["run_id"] for r in records if r["op"] == "set_terminated"}
        begun = {r["local_id"]: r["run_id"] for r in records if r["op"] == "begin_model"}
        finished = {r["model_id"] for r in records if r["op"] == "finish_model"}
        for local in sorted(created - ended):
            store.apply({"op": "end_if_running", "run_id": local, "status": "FAILED", "end_time": now_ms(),
                         "reason": DEAD_PROCESS_REASON + " (its writes were sent by cvae-bench sync)"})
        for local in sorted(set(begun) - finished):
            store.apply({"op": "fail_if_pending", "model_id": local})
    path.unlink()
    ids_file.unlink(missing_ok=True)
    shutil.rmtree(path.with_suffix(".files"), ignore_errors=True)
    return sent


@dataclass
class SyncReport:
    """What :func:`sync_spool` did: files sent, what they held; files left to a live process or another URI."""

    files: int = 0
    sent: Sent = field(default_factory=Sent)
    busy: list[str] = field(default_factory=list)
    other_uri: list[str] = field(default_factory=list)


def sync_spool(store: Store, spool_dir: Path | None = None, on_applied: Applied | None = None) -> SyncReport:
    """Replay every spool file of an ended process meant for ``store``'s tracking URI, oldest first.

    Files whose process still runs (it holds the file's lock) are left to it; files spooled for another
    tracking URI are left alone. Raises on a failure (e.g. the server is still down): what was sent stays
    sent, the rest stays spooled.
    """
    spool_dir = Path(spool_dir) if spool_dir else default_spool_dir()
    report = SyncReport()
    if not spool_dir.is_dir():
        return report
    for path in sorted(spool_dir.glob("*.jsonl"), key=lambda p: p.stat().st_mtime):
        lock_path = path.with_suffix(".lock")
        fd = try_lock(lock_path)
        if fd is None:
            report.busy.append(path.name)
            continue
        try:
            if not path.exists():  # another sync sent it between the glob and the lock
                continue
            header = json.loads(path.read_text().splitlines()[0])
            if header.get("tracking_uri") != redact_url(store.tracking_uri):
                report.other_uri.append(path.name)
                continue
            report.sent += replay_file(store, path, end_open_runs=True, on_applied=on_applied)
            report.files += 1
        finally:
            lock_path.unlink(missing_ok=True)
            os.close(fd)
    return report
