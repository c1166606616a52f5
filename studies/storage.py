"""Where a study lives: an Optuna storage from one URL.

- An RDB URL (``sqlite:///optuna.db``, the default; ``postgresql://user:pw@host/db``;
  ``mysql+pymysql://...``) opens :class:`optuna.storages.RDBStorage` with heartbeats: a trial whose
  process stops beating for ``2 * heartbeat`` seconds (killed, machine lost) is failed at the next
  trial start of any worker and re-queued once as a WAITING copy with the same parameters
  (:class:`optuna.storages.RetryHeartbeatStaleTrialCallback`). ``postgresql://`` uses the psycopg 3
  driver (``postgresql+psycopg://``).
- A file path ending in ``.journal`` or ``.log`` opens ``JournalStorage(JournalFileBackend(path))``
  (safe for several processes on one machine; Optuna's journal storage has no heartbeat, so a
  trial left RUNNING by a killed process stays RUNNING there).

Both are files ``optuna-dashboard`` opens: ``optuna-dashboard sqlite:///optuna.db`` or
``optuna-dashboard study.journal``. Messages never show a URL's password.

Optuna is imported when a storage is opened, not before: :mod:`studies.spec` checks URLs with
:func:`check_url` while the command line builds ``--help``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from bench.errors import CLIError
from bench.tracking import redact_url, sqlite_file
from bench.tracking.store import check_database_reachable
from studies.lock import study_lock

if TYPE_CHECKING:
    import optuna

DEFAULT_STORAGE = "sqlite:///optuna.db"
#: Seconds between heartbeats of a running trial; it is failed after 2x this without one.
DEFAULT_HEARTBEAT_S = 10
#: How many times a trial failed by heartbeat is re-queued.
MAX_RETRY = 3
JOURNAL_SUFFIXES = (".journal", ".log")
SCHEMA_LOCK = "optuna-schema"  # the study_lock name that guards creating Optuna's tables
_SQLITE_TIMEOUT_S = 30  # several threads/processes share one SQLite file: wait for the lock, not fail

StaleTrialCallback = Callable[["optuna.Study", "optuna.trial.FrozenTrial"], None]


def is_journal(url: str) -> bool:
    return "://" not in url and url.endswith(JOURNAL_SUFFIXES)


def normalize_url(url: str) -> str:
    """The URL SQLAlchemy is given: ``postgres(ql)://`` -> ``postgresql+psycopg://`` (psycopg 3)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def check_url(url: str) -> None:
    """Raise :class:`CLIError` unless ``url`` is an RDB URL or a journal file path."""
    if not url or not isinstance(url, str):
        raise CLIError("--storage: empty storage URL")
    if "://" in url or is_journal(url):
        return
    raise CLIError(f"--storage {redact_url(url)!r}: give an RDB URL (sqlite:///optuna.db, "
                   f"postgresql://user:password@host/db) or a journal file ending in .journal")


def retry_stale_trial(max_retry: int = MAX_RETRY) -> StaleTrialCallback:
    """Optuna's own retry of heartbeat-stale trials (a WAITING copy with the same params)."""
    import optuna

    return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)


def open_storage(url: str = DEFAULT_STORAGE, *, heartbeat: int = DEFAULT_HEARTBEAT_S,
                 on_stale: StaleTrialCallback | None = None) -> optuna.storages.BaseStorage:
    """Open (creating if needed) the storage at ``url``.

    ``heartbeat`` (s) applies to RDB storages; ``on_stale(study, trial)`` runs for each trial failed
    by heartbeat (default :func:`retry_stale_trial`). Errors (bad URL, unreachable server, missing
    driver, missing folder) raise :class:`CLIError` with the password masked.
    """
    import optuna

    check_url(url)
    if isinstance(heartbeat, bool) or not isinstance(heartbeat, int) or heartbeat < 1:
        raise CLIError(f"--heartbeat {heartbeat!r}: must be an integer >= 1 (seconds)")
    if is_journal(url):
        return _open_journal(Path(url).expanduser())
    from sqlalchemy.exc import SQLAlchemyError

    engine_kwargs = {"connect_args": {"timeout": _SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
    check_database_reachable(url, "--storage")  # an unreachable server: one line in seconds, not a long hang
    db = sqlite_file(url)
    if db is not None:
        folder = db.expanduser().parent
        if not folder.is_dir():
            raise CLIError(f"--storage {redact_url(url)}: folder {folder} does not exist")
    try:
        # Workers that start together on a fresh database would race to create Optuna's tables
        # (a duplicate-type error on PostgreSQL): the first creates them under the lock, the rest find them.
        with study_lock(normalize_url(url), SCHEMA_LOCK), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: "experimental"
            return optuna.storages.RDBStorage(
                normalize_url(url), engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                heartbeat_stale_trial_callback=on_stale or retry_stale_trial())
    except (SQLAlchemyError, ImportError, ValueError, OSError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CLIError(f"--storage {redact_url(url)}: cannot open it ({type(exc).__name__}: "
                       f"{redact_url(detail)})") from None


def _open_journal(path: Path) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if not path.parent.is_dir():
        raise CLIError(f"--storage {path}: folder {path.parent} does not exist")
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except (OSError, ValueError) as exc:
        raise CLIError(f"--storage {path}: cannot open the journal ({type(exc).__name__}: {exc})") from None


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """Names of the studies in ``storage``, sorted."""
    return sorted(s.study_name for s in storage.get_all_studies())


def dashboard_hint(url: str) -> str:
    """The command that opens ``optuna-dashboard`` on this storage (password masked)."""
    return f"optuna-dashboard {redact_url(url)}"
