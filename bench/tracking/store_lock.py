"""A named lock that lives where a store lives, shared by every process that opens the store.

Studies take one per study (``studies.lock``) and one while they create Optuna's tables; MLflow's SQLite
store takes one while MLflow creates its tables (:func:`mlflow_schema_lock`), which two processes opening a
new file together would otherwise both migrate. PostgreSQL and MySQL: an advisory lock of the session;
SQLite and journal files: ``flock`` on ``<file>.<key>.lock`` beside the file, removed on release;
in-memory storage: a threading lock. The server or the kernel drops the lock of a worker that dies.
"""

from __future__ import annotations

import fcntl
import os
import hashlib
import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from bench.errors import CLIError

#: The name of the lock :func:`mlflow_schema_lock` takes on an SQLite file.
MLFLOW_SCHEMA_LOCK = "mlflow-schema"

_MEMORY_LOCKS: dict[str, threading.Lock] = {}


def sqlite_file(url: str | None) -> Path | None:
    """The file behind a ``sqlite:///`` URL (query string dropped); None for any other URL or an
    in-memory database."""
    if url and url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        return Path(url[len("sqlite:///"):].split("?")[0])
    return None


def _key(name: str) -> int:
    """A stable signed 63-bit key for advisory locks."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") >> 1


class StoreLock:
    """Context manager; ``acquire()``/``release()`` may also be called directly (release is idempotent)."""

    def acquire(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "StoreLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class FileLock(StoreLock):
    """``flock`` on a lock file that exists only while someone holds or waits for it: the holder removes it
    when it releases. A waiter that then gets the lock on the removed file sees that the path no longer
    names its file and tries again, so two processes never both hold the lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = None

    def acquire(self) -> None:
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fh = open(self.path, "a+")
            except OSError as exc:  # a read-only folder: a store there cannot be written either
                raise CLIError(f"cannot create the lock file {self.path} ({exc.strerror or exc}); the folder of "
                               "the store must be writable") from None
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                if os.stat(self.path).st_ino == os.fstat(fh.fileno()).st_ino:
                    self._fh = fh
                    return
            except FileNotFoundError:
                pass
            fh.close()  # the holder before removed it: lock the file at the path now

    def release(self) -> None:
        if self._fh is not None:
            self.path.unlink(missing_ok=True)  # while still held: a waiter on it then tries again
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


class SQLAdvisoryLock(StoreLock):
    """Advisory lock on a dedicated connection of the store's own database server."""

    def __init__(self, url: str, name: str) -> None:
        import sqlalchemy

        self.engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        self.dialect = self.engine.dialect.name
        self.key = _key(name)
        self._conn = None

    def _statements(self) -> tuple[str, str]:
        if self.dialect == "postgresql":
            return f"SELECT pg_advisory_lock({self.key})", f"SELECT pg_advisory_unlock({self.key})"
        return f"SELECT GET_LOCK('cvae_bench_{self.key}', -1)", f"SELECT RELEASE_LOCK('cvae_bench_{self.key}')"

    def acquire(self) -> None:
        import sqlalchemy

        lock_sql, _ = self._statements()
        conn = self.engine.connect()
        conn.execute(sqlalchemy.text(lock_sql))
        conn.commit()
        self._conn = conn

    def release(self) -> None:
        import sqlalchemy

        if self._conn is not None:
            _, unlock_sql = self._statements()
            try:
                self._conn.execute(sqlalchemy.text(unlock_sql))
                self._conn.commit()
            finally:
                self._conn.close()  # closing the session drops the lock in any case
                self._conn = None


class ThreadLock(StoreLock):
    def __init__(self, name: str) -> None:
        self._lock = _MEMORY_LOCKS.setdefault(name, threading.Lock())
        self._held = threading.local()

    def acquire(self) -> None:
        self._lock.acquire()
        self._held.value = True

    def release(self) -> None:
        if getattr(self._held, "value", False):
            self._held.value = False
            self._lock.release()


def store_lock(storage_url: str | None, name: str) -> StoreLock:
    """The lock called ``name`` that fits a store's URL: an SQLAlchemy URL or a journal file path
    (``None``: this process only); a new one per caller/thread."""
    db = sqlite_file(storage_url)
    if db is not None:
        return FileLock(db.with_name(f"{db.name}.{_key(name)}.lock"))
    if not storage_url or storage_url.startswith("sqlite:"):  # in-memory
        return ThreadLock(name)
    if storage_url.startswith(("postgresql", "mysql")):
        return SQLAdvisoryLock(storage_url, name)
    if "://" not in storage_url:  # a journal file path
        path = Path(storage_url)
        return FileLock(path.with_name(f"{path.name}.{_key(name)}.lock"))
    return ThreadLock(name)


def mlflow_schema_lock(tracking_uri: str | None) -> AbstractContextManager:
    """The lock held while MLflow opens ``tracking_uri``: on an SQLite file, which MLflow creates and
    migrates when it opens it, two processes opening a new file together (workers, or ``train`` and
    a reader) would both migrate it and leave it broken; the second waits and finds the tables made.
    No lock where the file's folder is missing: MLflow says so, and the lock would create the folder."""
    db = sqlite_file(tracking_uri)
    return store_lock(tracking_uri, MLFLOW_SCHEMA_LOCK) if db is not None and db.parent.is_dir() else nullcontext()
