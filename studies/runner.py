"""Run one Optuna study of one CVAE variant, tracked in MLflow: what ``cvae-bench study`` does.

- The study lives in an Optuna storage (:mod:`studies.storage`); rerunning resumes it. ``trials``
  is the total of finished (COMPLETE or PRUNED) trials wanted: a rerun runs only what is missing,
  and a trial left RUNNING by a killed process is failed by heartbeat and retried
  (:func:`studies.trial_loop.run_until_total`).
- One study = one MLflow parent run, its id kept in ``study.user_attrs["mlflow_parent_run_id"]``
  so that reruns and other workers reuse it; each trial is a child run (:mod:`studies.objective`).
  At the end the parent gets the study's plots and trials table (:mod:`studies.plots`).
- ``batch_trials`` K > 1: each job asks up to K trials at a time and trains those whose models share
  their shapes as one vmapped model (:mod:`studies.batch_runner`); each stays its own trial and run.
- ``jobs`` threads run trials side by side, each with its own sampler (seeded differently);
  ``cvae-bench worker`` processes on other machines join the same study (:mod:`studies.cli.worker`):
  what defines the study is kept in its user attributes (:func:`studies.spec.study_attrs`).
- MLflow writes go through one writer process per invocation (:class:`bench.tracking.TrackingWriter`):
  no trial waits on the store, an outage of the tracking server is spooled and replayed, never fatal to
  a trial. The writer first sends what ended processes left spooled for the same store; the invocation
  waits for it at most :data:`bench.tracking.FLUSH_BOUND_S` at its end. Runs the store had no id for
  when a trial ended keep their local id in Optuna; :func:`studies.registry.record_run_ids` records
  the store's ids once known.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from bench import CLIError, DataSplits, environment_tags, load_dataset, resolve_device, resolve_tracking_uri, ui_hint
from bench.errors import interrupt_reason
from bench.data.memory import check_iw_fits
from bench.tracking import RunHandle, TrackingWriter, check_tracking_uri, redact_url
from bench.tracking.dataset_inputs import dataset_inputs
from bench.tracking.ops import now_ms
from bench.tracking.ui_links import registered_model_link, run_link
from studies.feasibility import best_trial, completed, record_selection, selection_note
from studies.batch_runner import run_batches_until_total
from studies.lock import study_lock
from studies.objective import INTERRUPTED, WORKER_ID, ChildRuns, Objective, TrialSettings
from studies.registry import (
    ALIAS,
    Registration,
    record_run_ids,
    register_study_models,
    run_id_of,
    unresolved_run_ids,
)
from studies.search_space import shape_params, suggest
from studies.spec import Role, StudySpec, attr_name, fields_of, setting_of, settings_from_attrs, study_attrs
from studies.storage import dashboard_hint, is_journal, normalize_url, open_storage, retry_stale_trial
from studies.trial_loop import FINISHED, count_trials, run_until_total

#: This many failed trials in a row (in one invocation) stop the study: something is wrong.
MAX_FAILURES_IN_A_ROW = 10


@dataclass
class StudyOutcome:
    """What one invocation did: the study, how many trials it ran, the parent run (None untracked)."""

    study: optuna.Study
    ran: int
    seconds: float
    parent_run_id: str | None
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    registration: Registration | None = None  # the registered models (tracked studies that log models)
    experiment_id: str | None = None  # the MLflow experiment of the parent run (None untracked)


def pruner_settings(name: str, epochs: int, trials: int) -> tuple[str, dict[str, int]]:
    """The Optuna pruner class and its arguments for ``name``.

    ``median``: stop a trial whose val_neg_elbo is worse than the median of the completed trials at
    the same epoch, once a quarter of the trials (2 to 5) have completed, from half the epochs on: a
    model that uses its latent pays KL from the start and catches up on reconstruction later, so
    earlier comparisons favour the ones that gave it up. ``hyperband``: resources are epochs."""
    if name == "median":
        return "MedianPruner", {"n_startup_trials": min(5, max(2, trials // 4)), "n_warmup_steps": epochs // 2}
    if name == "hyperband":
        return "HyperbandPruner", {"min_resource": 1, "max_resource": epochs, "reduction_factor": 3}
    return "NopPruner", {}


def sampler_settings(name: str, trials: int) -> tuple[str, dict[str, Any]]:
    """The Optuna sampler class and its arguments (but the seed) for ``name``, sized for short studies:
    TPE's random start-up is a third of the trials (3 to 10)."""
    if name == "tpe":
        # constant_liar: trials running elsewhere count as bad guesses, so parallel workers spread out
        return "TPESampler", {"n_startup_trials": max(3, min(10, trials // 3)), "constant_liar": True}
    if name == "nsga2":
        return "NSGAIISampler", {"population_size": max(4, min(50, trials // 3))}
    return "RandomSampler", {}


def describe(settings: tuple[str, dict[str, Any]]) -> str:
    """``MedianPruner(n_startup_trials=5, n_warmup_steps=12)``: what a study stores to say what ran."""
    cls, kwargs = settings
    return f"{cls}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"


def make_pruner(name: str, epochs: int, trials: int) -> optuna.pruners.BasePruner:
    """The pruner of :func:`pruner_settings`."""
    cls, kwargs = pruner_settings(name, epochs, trials)
    return getattr(optuna.pruners, cls)(**kwargs)


def make_sampler(name: str, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    """The sampler of :func:`sampler_settings`, seeded. Each completed trial's feasibility (its
    constraints, :mod:`studies.feasibility`) steers TPE and NSGA-II away from collapsed models."""
    cls, kwargs = sampler_settings(name, trials)
    return getattr(optuna.samplers, cls)(seed=seed, **kwargs)


def load_data(spec: StudySpec) -> DataSplits:
    return load_dataset(spec.dataset, spec.data_root, download=spec.download, image_size=spec.image_size,
                        seed=spec.seed, limit=spec.limit)


def _lock_url(storage: str) -> str:
    return storage if is_journal(storage) else normalize_url(storage)


class _Progress:
    """Study callback: a tqdm bar over the finished trials and one line per trial."""

    def __init__(self, spec: StudySpec, finished: int, enabled: bool, stream: TextIO) -> None:
        from tqdm.auto import tqdm

        self.names = spec.objective_names
        self.stream = stream
        self.lock = threading.Lock()
        self.failures_in_a_row = 0
        self.last_failure = ""
        self.bar = tqdm(total=spec.trials, initial=min(finished, spec.trials), desc=spec.name, unit="trial",
                        disable=None if enabled else True, leave=False, file=sys.stderr)  # None: off unless a tty

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        with self.lock:
            if trial.state in FINISHED:
                self.bar.update(1)
            if trial.state == TrialState.FAIL:
                self.failures_in_a_row += 1
                self.last_failure = trial.user_attrs.get("fail_reason", "see the log above")
            else:
                self.failures_in_a_row = 0
            self.bar.write(describe_trial(trial, self.names), file=self.stream)

    def close(self) -> None:
        self.bar.close()


def _format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def describe_trial(trial: FrozenTrial, names: tuple[str, ...]) -> str:
    """One line: number, state, value(s) or reason, parameters."""
    head = f"trial {trial.number:>3} {trial.state.name:<8}"
    if trial.state == TrialState.COMPLETE:
        head += " " + " ".join(f"{n}={v:.3f}" for n, v in zip(names, trial.values))
    elif trial.state == TrialState.PRUNED:
        last = max(trial.intermediate_values) if trial.intermediate_values else 0
        head += f" at epoch {last}"
    elif trial.state == TrialState.FAIL:
        head += f" {trial.user_attrs.get('fail_reason', '')}"
    return f"{head}  {_format_params(trial.params)}"


class StudyRun:
    """One invocation on one study: opening it, its parent run, the trial loop, the final artifacts."""

    def __init__(self, spec: StudySpec, data: DataSplits, *, progress: bool = True, stream: TextIO | None = None,
                 sampler_salt: int = 0, writer: TrackingWriter | None = None):
        self.spec = spec
        self.sampler_salt = sampler_salt  # workers on one study must not share sampler seeds
        self.data = data
        self.progress = progress
        self.stream = stream or sys.stdout
        self.writer = writer  # given: the caller's (the suite's), flushed at the end, not closed
        self.own_writer = writer is None
        self.tracking_uri = resolve_tracking_uri(spec.tracking_uri) if spec.track else None

    # -- setup -------------------------------------------------------------------------------------
    def _open_tracking(self) -> None:
        """The invocation's writer; it first sends what ended processes left spooled for this store."""
        assert self.tracking_uri is not None
        if self.writer is None:
            check_tracking_uri(self.tracking_uri)
            self.writer = TrackingWriter(self.tracking_uri, sync=True)

    def _close_tracking(self) -> list[str]:
        """Let the writer finish (at most FLUSH_BOUND_S); a note for the user if writes are left spooled."""
        if self.writer is None:
            return []
        note = self.writer.close() if self.own_writer else self.writer.flush()
        return [note] if note else []

    def _on_stale(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A trial failed by heartbeat: retry it (Optuna) and end its orphaned MLflow run FAILED."""
        retry_stale_trial()(study, trial)
        run_id = trial.user_attrs.get("mlflow_run_id")
        if self.writer is not None and run_id:  # a run no store has yet: the dead process's spool ends it
            self.writer.submit({"op": "end_if_running", "run_id": run_id, "status": "FAILED", "end_time": now_ms(),
                                "tags": {"trial_state": "FAIL"},
                                "reason": f"heartbeat lost: the process running trial {trial.number} stopped; "
                                          "the trial is retried as a new trial"})

    def _open_study(self, storage: optuna.storages.BaseStorage) -> optuna.Study:
        """Create or load the study; its defining settings must match ``spec``'s (:class:`CLIError` if not).

        A new study gets every defining and stored setting as a user attribute; one marked ``rewrite``
        (``trials_total``) is written by every invocation.
        """
        spec = self.spec
        directions = ["minimize"] * len(spec.objective_names)
        study = optuna.create_study(storage=storage, study_name=spec.name, directions=directions,
                                    load_if_exists=True)
        wanted = study_attrs(spec)
        attrs = study.user_attrs
        for f in fields_of(Role.DEFINES):
            key = attr_name(f)
            if key in attrs and attrs[key] != wanted[key]:
                option = setting_of(f).flag or "--" + f.name.replace("_", "-")
                raise CLIError(f"study {spec.name!r} was made with {key}={attrs[key]!r}, not {wanted[key]!r}; "
                               f"rerun with the same settings ({option}) or pick another --study-name")
        for f in fields_of(Role.DEFINES, Role.STORED):
            key = attr_name(f)
            if key not in attrs or (setting_of(f).rewrite and attrs[key] != wanted[key]):
                study.set_user_attr(key, wanted[key])
        # What the latest invocation runs, in Optuna's words, and the names of the objective values.
        ran = {"pruner_settings": describe(pruner_settings(spec.resolved_pruner, spec.epochs, spec.trials)),
               "sampler_settings": describe(sampler_settings(spec.sampler, spec.trials))}
        for key, text in ran.items():
            if attrs.get(key) != text:
                study.set_user_attr(key, text)
        if study.metric_names != list(spec.objective_names):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(spec.objective_names))
        return study

    def _open_parent(self, study: optuna.Study) -> RunHandle:
        """The study's parent run: the one the study recorded, if the store still has it active, else a new one."""
        spec = self.spec
        stored = study.user_attrs.get("mlflow_parent_run_id")
        parent = self.writer.start_run(
            spec.resolved_experiment, spec.name, reuse=stored,
            tags={"study_name": spec.name, "run_kind": "study", "variant": spec.variant, "dataset": self.data.name,
                  **environment_tags(resolve_device(spec.device))})
        if not stored:
            parent.log_params({"study_name": spec.name, "variant": spec.variant, "dataset": spec.dataset,
                               "objective": spec.objective, "epochs": spec.epochs})
            study.set_user_attr("mlflow_parent_run_id", parent.local_id)
        return parent

    # -- the run -----------------------------------------------------------------------------------
    def run(self) -> StudyOutcome:
        spec = self.spec
        start = time.perf_counter()
        if spec.track:
            self._open_tracking()
        try:
            storage = open_storage(spec.storage, heartbeat=spec.heartbeat, on_stale=self._on_stale)
            lock_url = _lock_url(spec.storage)
            with study_lock(lock_url, spec.name):  # one study and one parent run, even when workers start together
                study = self._open_study(storage)
                parent = self._open_parent(study) if spec.track else None
            if parent is not None and (unresolved := unresolved_run_ids(study)):  # runs of an earlier outage
                self.writer.submit({"op": "resolve", "ids": unresolved})
        except BaseException:
            if self.writer is not None and self.own_writer:
                self.writer.abandon()
            raise
        try:
            outcome = self._optimize(study, storage, parent, lock_url)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the trial in flight is queued again (_optimize)
            if parent:
                parent.end("KILLED", interrupt_reason(exc))
            self._close_tracking()
            raise
        except BaseException as exc:
            if parent:
                parent.end("FAILED", f"{type(exc).__name__}: {exc}")
            self._close_tracking()
            raise
        notes = self._close_tracking()
        if outcome.registration is not None:
            outcome.notes += outcome.registration.collect(self.writer).notes
        outcome.notes += notes
        if parent is not None:
            outcome.parent_run_id, outcome.experiment_id = parent.run_id, parent.experiment_id
            with study_lock(lock_url, spec.name):  # workers merge their ids into one study attribute
                record_run_ids(study, self.writer.ids, parent.local_id)
        outcome.seconds = time.perf_counter() - start
        return outcome

    def _optimize(self, study: optuna.Study, storage, parent: RunHandle | None, lock_url: str) -> StudyOutcome:
        spec = self.spec
        if parent is not None:
            parent.set_tags({"trials_total": spec.trials, "sampler": spec.sampler, "pruner": spec.resolved_pruner,
                             "optuna_storage": redact_url(spec.storage), "jobs": spec.jobs,
                             "batch_trials": spec.batch_trials})
        existing = len(study.get_trials(deepcopy=False))
        finished_before = len(study.get_trials(deepcopy=False, states=FINISHED))
        runs = ChildRuns(self.writer, spec.resolved_experiment, parent.local_id) if parent is not None else None
        settings = TrialSettings(variant=spec.variant, objective=spec.objective, epochs=spec.epochs, seed=spec.seed,
                                 device=spec.device, iw_samples=spec.iw_samples, study_name=spec.name,
                                 log_model=spec.log_model, cuda_graphs=spec.cuda_graphs, compile=spec.compile,
                                 amp=spec.amp, checkpoint_every=spec.checkpoint_every,
                                 keep_checkpoints=spec.keep_checkpoints)
        data_options = {"dataset": self.data.name, "limit": spec.limit or "none",
                        "image_size": spec.image_size or "native", "n_train": len(self.data.train),
                        "n_val": len(self.data.val), "n_test": len(self.data.test)}
        datasets = dataset_inputs(self.data) if runs is not None else []
        stop = threading.Event()
        objective = Objective(settings, self.data, runs=runs, data_options=data_options, datasets=datasets,
                              stop=stop)
        if finished_before < spec.trials:
            # the judge of test_cond_acc, trained once per process (cached): before the first trial, not inside
            # its final metrics, so that no trial's duration holds it
            from bench.evaluation import train_classifier

            train_classifier(self.data.to(resolve_device(spec.device)), seed=spec.seed)
        progress = _Progress(spec, finished_before, self.progress, self.stream)

        def guard(study: optuna.Study, trial: FrozenTrial) -> None:
            if progress.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
                stop.set()

        ran = [0] * spec.jobs
        errors: list[BaseException] = []

        def work(j: int) -> None:
            # Each job has its own Study object and sampler; seeds differ per job and per rerun.
            sampler = make_sampler(spec.sampler, spec.seed + existing + 1000 * j + self.sampler_salt, spec.trials)
            own = optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler,
                                    pruner=make_pruner(spec.resolved_pruner, spec.epochs, spec.trials))
            try:
                if spec.batch_trials > 1:
                    ran[j] = run_batches_until_total(
                        own, objective, spec.trials, lambda: study_lock(lock_url, spec.name),
                        batch_trials=spec.batch_trials, sample=lambda t: suggest(t, spec.variant, spec.epochs),
                        shared_params=shape_params(spec.variant), timeout=spec.timeout, callbacks=[progress, guard],
                        stop_event=stop, poll_seconds=1.0)
                else:
                    ran[j] = run_until_total(own, objective, spec.trials, lambda: study_lock(lock_url, spec.name),
                                             timeout=spec.timeout, callbacks=[progress, guard], stop_event=stop,
                                             poll_seconds=1.0)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM (in a job thread: the main thread's, passed on)
                if threading.current_thread() is threading.main_thread():
                    raise
            except BaseException as exc:  # noqa: BLE001 -- re-raised by the main thread
                errors.append(exc)
                stop.set()

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            threads: list[threading.Thread] = []
            try:
                if spec.jobs == 1:
                    work(0)
                else:
                    threads = [threading.Thread(target=work, args=(j,), daemon=True) for j in range(spec.jobs)]
                    for t in threads:
                        t.start()
                    for t in threads:
                        while t.is_alive():
                            t.join(timeout=0.5)
            except KeyboardInterrupt as exc:
                # The main thread's trial has stopped; the jobs' trials stop at their next epoch (Objective.stop).
                objective.interrupted_by = exc
                stop.set()
                for t in threads if spec.jobs > 1 else ():
                    t.join(timeout=60)
                retry_interrupted(study)
                raise
            finally:
                progress.close()
        if errors:
            raise errors[0]
        if not spec.keep_checkpoints:
            remove_finished_checkpoints(study, spec.name, self.writer)
        counts = count_trials(study)
        record_selection(study, spec.objective_names)
        notes: list[str] = []
        registration = None
        if parent is not None:
            notes, registration = self._finish_parent(parent, study)
        selection = selection_note(study)
        if selection:
            notes.insert(0, selection)
        if progress.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            raise CLIError(f"study {spec.name!r} stopped: {progress.failures_in_a_row} trials in a row failed "
                           f"(last: {progress.last_failure}); finished trials are kept")
        return StudyOutcome(study=study, ran=sum(ran), seconds=0.0, parent_run_id=parent.run_id if parent else None,
                            counts=counts, notes=notes, registration=registration)

    def _finish_parent(self, parent: RunHandle, study: optuna.Study) -> tuple[list[str], Registration | None]:
        """The study's metrics, plots and trials table on the parent run, the models registered, the run ended."""
        from studies.plots import log_study_artifacts

        counts = count_trials(study)
        metrics = {f"n_{state.lower()}": float(n) for state, n in counts.items()}
        metrics["n_infeasible"] = float(len(completed(study)[1]))
        best = best_trial(study, self.spec.objective_names)
        if best is not None:
            metrics.update({f"best_{k}": v for k, v in best.user_attrs.items() if isinstance(v, float)})
            parent.set_tags({"best_trial": best.number,
                             "best_run_id": self.writer.run_id(run_id_of(study, best.user_attrs.get("mlflow_run_id", "")))})
        parent.log_metrics(metrics, step=len(study.get_trials(deepcopy=False)))
        notes = log_study_artifacts(parent, study, self.spec.objective_names)
        registration = None
        if self.spec.log_model:
            registration = register_study_models(self.writer, study, self.spec)
            if registration.best_asked is not None:
                parent.set_tags({"registered_model": f"models:/{registration.name}@{ALIAS}"})
        parent.end("FINISHED")
        return notes, registration  # the registration is collected once the writer is done


def retry_interrupted(study: optuna.Study) -> list[int]:
    """Queue a retry (WAITING, same parameters and user attributes) of each trial this process ran that Ctrl-C
    or SIGTERM stopped, so that the next invocation resumes it from its checkpoint as a heartbeat retry is
    (``resumed_from_epoch``). Returns the interrupted trials' numbers."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    stopped = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get(INTERRUPTED)
               and t.user_attrs.get("worker") == WORKER_ID and t.number not in retried]
    for trial in stopped:
        retry_stale_trial()(study, trial)
    return [t.number for t in stopped]


def remove_finished_checkpoints(study: optuna.Study, name: str, writer: Any = None) -> bool:
    """Once no trial is RUNNING or WAITING, remove what checkpoints are left (True if a local one was):
    the study's local checkpoint folder and, through ``writer``, the ``checkpoint/`` artifacts of the
    runs of failed trials (a worker that died with its retries used up). Finished trials have
    removed their own; nothing is left to resume."""
    import shutil

    from bench.tracking.checkpoints import delete_run_checkpoints
    from bench.training.checkpoint_store import checkpoint_root, safe_part

    if study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        return False
    folder = checkpoint_root() / "study" / safe_part(name)
    existed = folder.exists()
    shutil.rmtree(folder, ignore_errors=True)
    if writer is not None:
        failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        delete_run_checkpoints(writer, [r for t in failed for r in t.user_attrs.get("checkpoint_runs", [])])
    return existed


def stored_settings(storage_url: str, study_name: str, heartbeat: int) -> dict[str, Any] | None:
    """The defining and stored settings of an existing study, by StudySpec field name (None: no such study)."""
    storage = open_storage(storage_url, heartbeat=heartbeat)
    try:
        attrs = optuna.load_study(study_name=study_name, storage=storage).user_attrs
    except KeyError:
        return None
    return settings_from_attrs(attrs)


def _quiet_failed_trials() -> None:
    """Drop Optuna's "Trial N failed ..." warnings (an interrupted trial's come with a traceback): the study's
    own line per trial says how each ended and why (:func:`describe_trial`)."""
    import logging

    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _FailedTrialFilter) for f in logger.filters):
        logger.addFilter(_FailedTrialFilter())


class _FailedTrialFilter:
    def filter(self, record) -> bool:
        return not str(record.msg).startswith("Trial ")


def run_study(spec: StudySpec, data: DataSplits | None = None, *, progress: bool = True,
              stream: TextIO | None = None, sampler_salt: int = 0, writer: TrackingWriter | None = None) -> StudyOutcome:
    """Run (or resume) the study ``spec`` on ``data`` (loaded from the spec when None).

    ``sampler_salt`` is added to the sampler seeds (distinct per worker process); ``writer``: the tracking
    writer to use (the suite shares one among its studies), else the study starts and closes its own.
    """
    from bench.training.config import torch_threads

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet_failed_trials()
    data = data if data is not None else load_data(spec)
    check_iw_fits(spec.iw_samples, data.input_shape, resolve_device(spec.device))  # before any trial trains
    with torch_threads(spec.resolved_threads):
        return StudyRun(spec, data, progress=progress, stream=stream, sampler_salt=sampler_salt, writer=writer).run()


def summary_lines(spec: StudySpec, outcome: StudyOutcome) -> list[str]:
    """The short report a study invocation prints at the end."""
    c = outcome.counts
    finished = c.get("COMPLETE", 0) + c.get("PRUNED", 0)
    lines = [f"study {spec.name!r}: {finished}/{spec.trials} finished ({c.get('COMPLETE', 0)} complete, "
             f"{c.get('PRUNED', 0)} pruned), {c.get('FAIL', 0)} failed; this run ran {outcome.ran} trials "
             f"in {outcome.seconds:.1f} s"]
    best = best_trial(outcome.study, spec.objective_names)
    if best is not None:
        values = " ".join(f"{n}={v:.3f}" for n, v in zip(spec.objective_names, best.values))
        lines.append(f"best trial {best.number}: {values} nats  {_format_params(best.params)}")
    if len(spec.objective_names) == 2 and best is not None:
        front = sorted(outcome.study.best_trials, key=lambda t: t.values[1])
        points = ", ".join(f"#{t.number} ({t.values[1]:.2f}, {t.values[0]:.2f})" for t in front)
        lines.append(f"rate-distortion front of the feasible trials (val_kl, val_recon): {points}")
    lines += [f"note: {n}" for n in outcome.notes]
    reg = outcome.registration
    uri = resolve_tracking_uri(spec.tracking_uri)
    if reg is not None and reg.best_uri:
        registered = ", ".join(f"trial {n} as {reg.uri(n)}" for n in sorted(reg.versions))
        lines.append(f"registered model {reg.name!r}: {registered}; {reg.best_uri} is trial {reg.best_trial} "
                     f"(`cvae-bench sample --model {reg.best_uri} --out samples.png`): "
                     f"{registered_model_link(uri, reg.name, reg.versions[reg.best_trial])}")
    if outcome.parent_run_id:
        link = f": {run_link(uri, outcome.parent_run_id, outcome.experiment_id)}" if outcome.experiment_id else ""
        lines.append(f"MLflow: parent run {outcome.parent_run_id} in experiment {spec.resolved_experiment!r}"
                     f"{link}")
        lines.append(f"MLflow UI: {ui_hint(uri)}")
    lines.append(f"Optuna: {dashboard_hint(spec.storage)}")
    return lines

