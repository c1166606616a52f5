"""A lock shared by every worker of one study, whatever machine it runs on.

Workers hold it only while they count the study's trials and ask Optuna for the next one, which
makes "run until the study holds N finished trials" exact even with many workers. The lock lives
where the study lives, so it needs no service of its own:

- PostgreSQL storage: a session-level advisory lock (``pg_advisory_lock``), released by the server
  if the worker dies;
- MySQL storage: ``GET_LOCK`` / ``RELEASE_LOCK``, likewise tied to the session;
- SQLite and journal files (one machine): ``fcntl.flock`` on ``<file>.lock``, released by the kernel
  if the worker dies;
- in-memory storage (one process): a threading lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
from pathlib import Path

_MEMORY_LOCKS: dict[str, threading.Lock] = {}


def _key(study_name: str) -> int:
    """A stable signed 63-bit key for advisory locks."""
    return int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big") >> 1


class StudyLock:
    """Context manager; ``acquire()``/``release()`` may also be called directly (release is idempotent)."""

    def acquire(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "StudyLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class FileLock(StudyLock):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        fcntl.flock(fh, fcntl.LOCK_EX)
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


class SQLAdvisoryLock(StudyLock):
    """Advisory lock on a dedicated connection of the study's own database server."""

    def __init__(self, url: str, study_name: str) -> None:
        import sqlalchemy

        self.engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        self.dialect = self.engine.dialect.name
        self.key = _key(study_name)
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


class ThreadLock(StudyLock):
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


def study_lock(storage_url: str | None, study_name: str) -> StudyLock:
    """The lock that fits a storage URL (as accepted by ``studies.storage``); a new one per caller/thread."""
    if not storage_url:
        return ThreadLock(study_name)
    if storage_url.startswith("sqlite:///"):
        db = Path(storage_url[len("sqlite:///"):].split("?")[0])
        return FileLock(db.with_name(f"{db.name}.{_key(study_name)}.lock"))
    if storage_url.startswith(("postgresql", "mysql")):
        return SQLAdvisoryLock(storage_url, study_name)
    if "://" not in storage_url:  # a journal file path
        path = Path(storage_url)
        return FileLock(path.with_name(f"{path.name}.{_key(study_name)}.lock"))
    return ThreadLock(study_name)
