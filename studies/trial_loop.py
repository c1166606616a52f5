"""Run trials until a study holds N finished trials in total, from any number of workers.

``--trials N`` means the total wanted, not the number this process runs: a rerun after an
interruption only runs what is missing, and N workers on one study stop together. Each round a
worker takes the study lock (``studies.lock``), fails stale trials (heartbeat), counts
finished (COMPLETE, PRUNED) and running trials, and only if there is room asks Optuna for the next
trial -- a retry of a failed trial first, since ``study.ask`` pops WAITING trials before sampling.
The lock is released as soon as the trial exists (the objective's first act), so trials run in
parallel; only the count-and-ask is serialised. Optuna's ``MaxTrialsCallback`` stops a worker once
the total is reached.
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import Callable, Sequence

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from studies.lock import StudyLock

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def count_trials(study: optuna.Study) -> dict[str, int]:
    """Number of trials per state name, e.g. {"COMPLETE": 3, "RUNNING": 1, ...}."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def fail_stale(study: optuna.Study) -> None:
    """Fail trials whose heartbeat stopped (killed workers); no-op without heartbeats."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    if is_heartbeat_enabled(study._storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def open_slots(study: optuna.Study, total: int) -> tuple[int | None, dict[str, int]]:
    """Trials a worker may start now for ``total`` finished ones (``total`` minus finished minus running;
    0 or less: the rest are running elsewhere), None once ``total`` have finished; and the trial counts
    per state. Fails stale trials first, so that a dead worker's trial frees its slot. Call it under the
    study's lock."""
    fail_stale(study)
    counts = count_trials(study)
    finished = sum(counts.get(s.name, 0) for s in FINISHED)
    if finished >= total:
        return None, counts
    return total - finished - counts.get(TrialState.RUNNING.name, 0), counts


def run_until_total(study: optuna.Study, objective: Callable[[optuna.Trial], object], total: int,
                    make_lock: Callable[[], StudyLock], *, timeout: float | None = None,
                    callbacks: Sequence[Callable] = (), poll_seconds: float = 2.0,
                    stop_event: threading.Event | None = None,
                    on_wait: Callable[[dict[str, int]], None] | None = None) -> int:
    """Run trials of ``study`` until it holds ``total`` finished trials; returns how many this call ran.

    ``make_lock()`` gives this caller its own handle on the shared study lock. ``timeout`` (s) stops
    starting new trials after that long. While the study is full but trials are still running
    elsewhere, the worker waits (they may fail and need a retry) and calls ``on_wait(counts)``.
    """
    lock = make_lock()
    ran = 0
    start = time.monotonic()
    max_trials = MaxTrialsCallback(total, states=FINISHED)

    def claimed_objective(trial: optuna.Trial):
        lock.release()  # the trial exists now: let the other workers count it
        return objective(trial)

    while True:
        if stop_event is not None and stop_event.is_set():
            return ran
        if timeout is not None and time.monotonic() - start > timeout:
            return ran
        lock.acquire()
        try:
            slots, counts = open_slots(study, total)
            if slots is None:
                return ran
            room = slots > 0
            if room:
                # optimize(n_trials=1) asks (a WAITING retry first) and runs under Optuna's heartbeat.
                study.optimize(claimed_objective, n_trials=1, callbacks=[*callbacks, max_trials],
                               catch=(Exception,), gc_after_trial=False)
                ran += 1
        finally:
            lock.release()
        if not room:
            if on_wait is not None:
                on_wait(counts)
            time.sleep(poll_seconds)
