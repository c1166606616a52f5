"""A lock shared by every worker of one study, whatever machine it runs on.

Workers hold it only while they count the study's trials and ask Optuna for the next one, which
makes "run until the study holds N finished trials" exact even with many workers. It is the
store lock of :mod:`bench.tracking.store_lock` named after the study: it lives where the study
lives (an advisory lock of PostgreSQL or MySQL, ``flock`` on ``<file>.<key>.lock`` next to an SQLite
or journal file, a threading lock for an in-memory study), so it needs no service of its own.
"""

from __future__ import annotations

from bench.tracking.store_lock import StoreLock as StudyLock
from bench.tracking.store_lock import store_lock


def study_lock(storage_url: str | None, study_name: str) -> StudyLock:
    """The lock of study ``study_name`` on a storage URL (as accepted by ``studies.storage``)."""
    return store_lock(storage_url, study_name)


__all__ = ["StudyLock", "study_lock"]
