"""Trials asked K at a time and trained as one vmapped model: ``cvae-bench study --batch-trials K``.

Each round a worker does what :func:`studies.trial_loop.run_until_total` does -- take the study lock,
fail stale trials, count finished and running trials -- but asks up to K trials, as many as the study
still has room for (so N workers still stop at exactly N finished trials), WAITING retries first, and
samples each one's parameters right away, so that TPE's constant liar sees the batch's earlier trials
as running. The first trial of the batch samples the shape parameters
(:data:`studies.search_space.SHAPE_PARAMS`: latent size, hidden layers, flow type and length, batch
size); the others take its values through Optuna's ``PartialFixedSampler`` and sample the rest (lr,
beta, schedule) as usual, so a batch forms one group. Then the lock is released and the batch runs:

- every trial runs in its own thread through the ordinary objective (:class:`studies.objective.Objective`):
  its Optuna trial with heartbeat, per-epoch reports and pruning, its MLflow run, checkpoints, retry
  resume, final metrics and logged model, its tell and the study callbacks -- except that its call to
  ``fit`` goes to a :class:`FitRendezvous`;
- once every trial of the batch has called ``fit`` (or ended before it), the worker's own thread
  groups the fits by :func:`bench.training.group_key` (a heartbeat retry with another shape, or one
  resuming from a checkpoint, makes a group of its own) and trains each group with
  :func:`bench.training.batched_fit` (a group of one is an ordinary ``fit``; a group's per-epoch
  callbacks -- reports, pruning, MLflow -- run beside its training), and each trial's thread gets
  its own outcome: its FitResult, or the exception (``TrialPruned``, ``NonFiniteLossError``, ...)
  that ``fit`` would have raised;
- the trials of a group finish (figures, logging, summary attributes, tell) in their threads while
  the next group trains; nothing there draws from or resets torch's global RNG, which the training
  thread draws its noise from. The next batch is asked once every trial of this one is told, so
  that its sampler (and the pruner) know their values, as they would one trial at a time.

``--batch-trials 1`` does not come here: it is :func:`studies.trial_loop.run_until_total`.
"""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import optuna
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.trial import FrozenTrial, TrialState

from bench.training import BatchMember, batched_fit, group_key
from studies.lock import StudyLock
from studies.trial_loop import open_slots

_logger = optuna.logging.get_logger("optuna.study._optimize")  # Optuna's own: the study quiets both alike

#: ``objective(trial, fit_fn=...)``: an objective whose fit is called through ``fit_fn``.
BatchObjective = Callable[..., Any]


@dataclass
class _Request:
    """One trial's call to ``fit``, waiting for its outcome."""

    trial: optuna.Trial
    member: BatchMember
    data: Any
    final_eval: bool
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Any = None
    group_size: int = 1

    def deliver(self, outcome: Any) -> None:
        self.outcome = outcome
        self.done.set()


class FitRendezvous:
    """Where the ``fit`` calls of a batch's trial threads meet, to be trained together.

    ``slots`` threads each either call :meth:`fit` (which blocks until their outcome is there) or
    :meth:`leave` (their trial ended without training). :meth:`train`, in the worker's thread, waits
    for all of them, then trains the groups one after another.
    """

    def __init__(self, slots: int) -> None:
        self._cond = threading.Condition()
        self._pending = slots
        self._requests: list[_Request] = []

    def fit(self, trial: optuna.Trial, model_cfg, train_cfg, data, *, callbacks=(), progress: bool = True,
            final_eval: bool = True, checkpoint=None, checkpoint_every: int = 0, resume: dict | None = None,
            on_trained=None):
        """:func:`bench.training.loop.fit`'s signature (after ``trial``): returns the FitResult or raises."""
        member = BatchMember(model_cfg, train_cfg, callbacks=tuple(callbacks), checkpoint=checkpoint,
                             checkpoint_every=checkpoint_every, resume=resume, on_trained=on_trained)
        request = _Request(trial, member, data, final_eval)
        with self._cond:
            self._requests.append(request)
            self._pending -= 1
            self._cond.notify_all()
        request.done.wait()
        trial.set_user_attr("batch_group_size", request.group_size)  # here: the training thread does not wait on it
        if isinstance(request.outcome, BaseException):
            raise request.outcome
        return request.outcome

    def leave(self) -> None:
        """A trial thread that will not call :meth:`fit`."""
        with self._cond:
            self._pending -= 1
            self._cond.notify_all()

    def train(self) -> None:
        """Wait for every slot, then train each group (in order of arrival) and deliver the outcomes."""
        with self._cond:
            while self._pending > 0:
                self._cond.wait(timeout=0.5)  # a timeout: the main thread stays interruptible
            requests = list(self._requests)
        groups: dict[Any, list[_Request]] = {}
        for r in requests:
            groups.setdefault((group_key(r.member), id(r.data), r.final_eval), []).append(r)
        try:
            for group in groups.values():
                for r in group:
                    r.group_size = len(group)
                try:
                    outcomes = batched_fit([r.member for r in group], group[0].data, progress=False,
                                           final_eval=group[0].final_eval)
                except Exception as exc:  # noqa: BLE001 -- the group's trials fail, the other groups go on
                    outcomes = [exc] * len(group)
                for r, outcome in zip(group, outcomes):
                    r.deliver(outcome)
        except BaseException as exc:  # interrupted: every trial still waiting ends with it
            for r in requests:
                if not r.done.is_set():
                    r.deliver(exc)
            raise


def ask_batch(study: optuna.Study, k: int, sample: Callable[[optuna.Trial], object],
              shared_params: Sequence[str]) -> list[optuna.Trial]:
    """Ask ``k`` trials and sample each (``sample(trial)`` suggests every parameter); from the second
    on, ``shared_params`` take the first trial's values (a retry keeps its own: fixed params come first).

    A failure fails the trials asked so far and is raised.
    """
    base = study.sampler
    trials: list[optuna.Trial] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # PartialFixedSampler
            # each trial gets its heartbeat in run_trial, as optimize gives it
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
            for i in range(k):
                trial = study.ask()
                trials.append(trial)
                sample(trial)
                if i == 0 and shared_params:
                    fixed = {name: trial.params[name] for name in shared_params if name in trial.params}
                    study.sampler = optuna.samplers.PartialFixedSampler(fixed, base)
    except BaseException:
        for trial in trials:
            study.tell(trial, state=TrialState.FAIL)
        raise
    finally:
        study.sampler = base
    return trials


def run_trial(study: optuna.Study, trial: optuna.Trial, body: Callable[[optuna.Trial], Any],
              catch: tuple[type[Exception], ...] = (Exception,)) -> FrozenTrial:
    """Run an asked trial as ``study.optimize`` runs one: under its heartbeat, then told COMPLETE,
    PRUNED or FAIL (a NaN value fails it); an exception outside ``catch`` is raised after the tell."""
    state: TrialState | None = None
    value: Any = None
    error: BaseException | None = None
    with get_heartbeat_thread(trial._trial_id, study._storage):
        try:
            value = body(trial)
        except optuna.TrialPruned as exc:
            state, error = TrialState.PRUNED, exc
        except (Exception, KeyboardInterrupt) as exc:
            state, error = TrialState.FAIL, exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a NaN value's warning: logged below, as optimize logs it
        frozen = study.tell(trial, None if state is not None else value, state=state)
    if frozen.state == TrialState.FAIL:
        reason = repr(error) if error is not None else f"the objective returned {value!r}"
        _logger.warning(f"Trial {frozen.number} failed with parameters: {frozen.params} because of the following "
                        f"error: {reason}.", exc_info=error if isinstance(error, Exception) else None)
    if frozen.state == TrialState.FAIL and error is not None and not isinstance(error, catch):
        raise error
    return frozen


class TrialBatch:
    """Asked trials running together (see the module docstring): each in its own thread, started here;
    :meth:`train` trains their groups in the calling thread; :meth:`join` waits for the trials to end.

    ``callbacks(study, frozen_trial)`` run after each trial's tell, in its thread (they must be
    thread-safe).
    """

    def __init__(self, study: optuna.Study, trials: Sequence[optuna.Trial], objective: BatchObjective,
                 callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = ()) -> None:
        self.study, self.objective, self.callbacks = study, objective, list(callbacks)
        self.rendezvous = FitRendezvous(len(trials))
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run_one, args=(t,), name=f"cvae-bench-trial-{t.number}",
                                         daemon=True) for t in trials]
        for t in self.threads:
            t.start()

    def _body(self, trial: optuna.Trial) -> Any:
        called = False

        def fit_fn(*args: Any, **kwargs: Any):
            nonlocal called
            called = True
            return self.rendezvous.fit(trial, *args, **kwargs)

        try:
            return self.objective(trial, fit_fn=fit_fn)
        finally:
            if not called:
                self.rendezvous.leave()

    def _run_one(self, trial: optuna.Trial) -> None:
        try:
            frozen = run_trial(self.study, trial, self._body)
            for callback in self.callbacks:
                callback(self.study, frozen)
        except BaseException as exc:  # noqa: BLE001 -- raised by join, in the worker's thread
            self.errors.append(exc)

    def train(self) -> None:
        """Train the batch's fits once all have arrived (:meth:`FitRendezvous.train`)."""
        try:
            self.rendezvous.train()
        except BaseException:
            self.join(raise_errors=False)
            raise

    def join(self, raise_errors: bool = True) -> None:
        """Wait until every trial of the batch has ended; then raise the first error outside the trials'
        own (``KeyboardInterrupt``)."""
        for t in self.threads:
            while t.is_alive():
                t.join(timeout=0.5)  # a timeout: the main thread stays interruptible
        if self.errors and raise_errors:
            raise self.errors[0]


def run_trial_batch(study: optuna.Study, trials: Sequence[optuna.Trial], objective: BatchObjective,
                    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = ()) -> int:
    """Run the asked ``trials`` together, to their end (:class:`TrialBatch`); returns how many ran."""
    batch = TrialBatch(study, trials, objective, callbacks)
    batch.train()
    batch.join()
    return len(trials)


def run_batches_until_total(study: optuna.Study, objective: BatchObjective, total: int,
                            make_lock: Callable[[], StudyLock], *, batch_trials: int,
                            sample: Callable[[optuna.Trial], object], shared_params: Sequence[str] = (),
                            timeout: float | None = None, callbacks: Sequence[Callable] = (),
                            poll_seconds: float = 2.0, stop_event: threading.Event | None = None,
                            on_wait: Callable[[dict[str, int]], None] | None = None) -> int:
    """:func:`studies.trial_loop.run_until_total` with up to ``batch_trials`` trials per round; returns
    how many trials this call ran. ``sample(trial)`` suggests all of a trial's parameters;
    ``shared_params`` are those a batch's trials share (the first trial's values)."""
    if batch_trials < 1:
        raise ValueError(f"batch_trials={batch_trials!r}: must be >= 1")
    lock = make_lock()
    ran = 0
    start = time.monotonic()
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
            trials = ask_batch(study, min(batch_trials, slots), sample, shared_params) if slots > 0 else []
        finally:
            lock.release()
        if trials:
            ran += run_trial_batch(study, trials, objective, callbacks)
            continue
        if on_wait is not None:
            on_wait(counts)
        time.sleep(poll_seconds)
