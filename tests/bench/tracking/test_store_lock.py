"""Store locks: named locks that live next to (or inside) a store, and the one MLflow holds on a new SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.tracking.store_lock import MLFLOW_SCHEMA_LOCK, FileLock, ThreadLock, mlflow_schema_lock, sqlite_file, store_lock

REPO = Path(__file__).resolve().parents[3]


def test_store_lock_fits_the_url(tmp_path):
    sqlite = store_lock(f"sqlite:///{tmp_path / 'mlflow.db'}", MLFLOW_SCHEMA_LOCK)
    assert isinstance(sqlite, FileLock) and sqlite.path.parent == tmp_path
    assert sqlite.path.name.startswith("mlflow.db.") and sqlite.path.suffix == ".lock"
    journal = store_lock(str(tmp_path / "study.journal"), "s")
    assert isinstance(journal, FileLock) and journal.path.name.startswith("study.journal.")
    assert store_lock(f"sqlite:///{tmp_path / 'mlflow.db'}", "other").path != sqlite.path
    assert isinstance(store_lock(None, "s"), ThreadLock)


def test_mlflow_takes_a_schema_lock_on_sqlite_files_only(tmp_path):
    assert isinstance(mlflow_schema_lock(f"sqlite:///{tmp_path / 'mlflow.db'}"), FileLock)
    for uri in ("http://127.0.0.1:5000", "sqlite:///:memory:", None, f"sqlite:///{tmp_path / 'missing' / 'm.db'}"):
        assert not isinstance(mlflow_schema_lock(uri), FileLock), uri
    assert not (tmp_path / "missing").exists()  # MLflow says the folder is missing; the lock does not make it


def test_a_file_lock_excludes_another_holder(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    order: list[str] = []
    with store_lock(url, "n"):
        waiter = threading.Thread(target=lambda: (store_lock(url, "n").acquire(), order.append("second")))
        waiter.start()
        time.sleep(0.3)
        order.append("first released")
    waiter.join(10)
    assert order == ["first released", "second"]


OPEN_STORE = ("import sys; from bench.tracking.store import make_client; "
              "make_client(sys.argv[1]).search_experiments(); print('opened')")


@pytest.mark.slow
def test_processes_that_open_a_new_sqlite_store_together_all_open_it(tmp_path):
    """Without the schema lock two processes migrating one new file fail (table exists, alembic
    version row missing) and leave it broken: with it, the rest wait and find the tables made."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for attempt in range(2):
        uri = f"sqlite:///{tmp_path / f'mlflow{attempt}.db'}"
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_STORE, uri], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env) for _ in range(3)]
        results = [proc.communicate(timeout=120) for proc in procs]
        for proc, (out, err) in zip(procs, results):
            assert proc.returncode == 0 and "opened" in out, err[-2000:]


def test_sqlite_file_is_the_file_behind_a_sqlite_url(tmp_path):
    assert sqlite_file(f"sqlite:///{tmp_path / 'm.db'}?timeout=5") == tmp_path / "m.db"
    assert sqlite_file("sqlite:///mlflow.db") == Path("mlflow.db")
    for url in ("sqlite:///:memory:", "postgresql://u@h/db", "http://127.0.0.1:5000", "study.journal", None):
        assert sqlite_file(url) is None, url
    assert isinstance(store_lock("sqlite:///:memory:", "s"), ThreadLock)
