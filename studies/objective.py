"""One Optuna trial = one :func:`bench.fit` run = one MLflow child run of the study's parent run.

Objectives (:data:`studies.spec.OBJECTIVES`; nats per example, on the validation split, last epoch):

- ``neg-elbo``: minimise ``val_neg_elbo``; it is reported every epoch, so the pruner can stop a
  trial early (Optuna's ``TrialPruned``; the run ends FINISHED, named ``pruned: <variant>-trial-<n>``,
  tag ``trial_state=PRUNED``).
- ``rate-distortion``: minimise (``val_recon``, ``val_kl``); the Pareto front is the
  rate-distortion curve. Multi-objective trials cannot be pruned.

A completed trial's model is judged on the validation split (:func:`studies.feasibility.judge_trial`):
one that leaves its latent unused is infeasible (Optuna constraints; run tags ``feasible`` and
``infeasible_reason``, metric ``val_active_units``) and is never selected.

Lost workers: every ``checkpoint_every`` epochs a trial saves its training state
(:class:`bench.tracking.checkpoints.RunCheckpoints`: a local file keyed by study name and the first
trial number of its retry chain, and the artifact ``checkpoint/state.pt`` of its run). A heartbeat
retry (a new trial with the dead one's params and user attributes) looks for that checkpoint --
local first, then the dead trial's run (``mlflow_run_id``) -- and resumes at epoch k+1: it sets
``resumed_from_epoch`` (user attribute and run tag), reports the checkpoint's values of epochs 1..k
to its own trial (the pruner sees the same curve), and logs the checkpoint's history 1..k into its
own run, so the run has every epoch 1..E once. A checkpoint that cannot be read, or one made under
other hyper-parameters, is not used: the retry starts at epoch 1 and prints why, in one line. A
finished trial's checkpoints are removed unless ``keep_checkpoints``: the local file and the
``checkpoint/`` artifacts of every run of its retry chain (user attribute ``checkpoint_runs``).

A loss that turns NaN fails the trial, not the study: the objective returns NaN (Optuna marks the
trial FAIL without a traceback), the reason is kept as the trial's ``fail_reason`` user attribute
and as the run's ``end_reason`` tag, and the run ends FAILED.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import optuna

from bench import DataSplits, FitResult, NonFiniteLossError, TrainConfig, fit, model_config
from bench.errors import interrupt_reason
from bench.tracking import NullTracker, RunHandle, config_params, log_fit, log_trained, run_tags
from bench.tracking.checkpoints import RunCheckpoints
from bench.training.checkpoint_store import trial_key
from bench.training.loop import run_fingerprint
from studies.feasibility import judge_trial
from studies.search_space import suggest
from studies.spec import OBJECTIVES

#: Which process ran a trial (host:pid): a trial user attribute and a tag of its run.
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
#: The user attribute of a trial stopped by Ctrl-C or SIGTERM (its study queues a retry that resumes it).
INTERRUPTED = "interrupted"

#: The trial user attributes a completed trial gets (last-epoch val metrics, medians of speed,
#: every final test metric): what the suite's summary table is made of, with or without MLflow.
SUMMARY_ATTRS = ("val_neg_elbo", "val_recon", "val_kl", "samples_per_s", "step_ms", "train_seconds")


def run_name(variant: str, number: int) -> str:
    """A trial's run (and logged model) name: ``<variant>-trial-<n>``; a pruned trial's run is renamed
    ``pruned: <variant>-trial-<n>``."""
    return f"{variant}-trial-{number}"


@dataclass(frozen=True)
class TrialSettings:
    """Everything a trial needs besides its sampled hyperparameters."""

    variant: str
    objective: str
    epochs: int
    seed: int = 0
    device: str = "auto"
    iw_samples: int = 100
    study_name: str = ""
    log_model: bool = True
    cuda_graphs: bool | None = None
    compile: bool = False
    amp: str = "none"
    checkpoint_every: int = 0  # epochs; 0: no checkpoints
    keep_checkpoints: bool = False


@dataclass
class ChildRuns:
    """Makes the MLflow child runs of one study's parent run, through the invocation's writer."""

    writer: Any  # bench.tracking.TrackingWriter
    experiment: str
    parent_run_id: str  # the parent's local id (or the store's id)

    def start(self, trial: optuna.Trial, tags: Mapping[str, Any]) -> RunHandle:
        return self.writer.start_run(self.experiment, run_name(tags["variant"], trial.number),
                                     parent=self.parent_run_id, tags=tags)


class PruningReporter:
    """Fit callback: reports ``val_neg_elbo`` each epoch and raises ``TrialPruned`` when told to.

    The last epoch is reported but never pruned: the trial has done all its training by then.
    """

    def __init__(self, trial: optuna.Trial, last_epoch: int, metric: str = "val_neg_elbo") -> None:
        self.trial, self.last_epoch, self.metric = trial, last_epoch, metric

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> None:
        value = float(metrics[self.metric])
        self.trial.report(value, epoch)
        if epoch < self.last_epoch and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}: {self.metric}={value:.3f}")


class Objective:
    """``objective(trial)`` for ``study.optimize``: samples, trains, logs, returns the value(s)."""

    def __init__(self, settings: TrialSettings, data: DataSplits, *, runs: ChildRuns | None = None,
                 data_options: Mapping[str, Any] | None = None, datasets: Sequence[Mapping[str, str]] = (),
                 make_callbacks: Callable[[optuna.Trial], list] | None = None,
                 stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.data = data
        self.datasets = list(datasets)  # the run inputs (bench.tracking.dataset_inputs)
        self.runs = runs
        self.data_options = dict(data_options or {})
        self.make_callbacks = make_callbacks
        self.names = OBJECTIVES[settings.objective]
        #: Set when Ctrl-C or SIGTERM stops the study: trials in other threads (``--jobs``) stop at their next
        #: epoch with the same exception (``interrupted_by``) as the main thread's.
        self.stop = stop
        self.interrupted_by: BaseException | None = None
        #: Where the one-line notes go (a retry that cannot resume says why).
        self.notify: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)

    def __call__(self, trial: optuna.Trial, fit_fn: Callable[..., FitResult] = fit) -> float | tuple[float, ...]:
        """``fit_fn``: what trains the trial, with :func:`bench.fit`'s signature (a batch of trials gives
        its rendezvous, :mod:`studies.batch_runner`)."""
        s = self.settings
        sampled = suggest(trial, s.variant, s.epochs)
        model_cfg = model_config(s.variant, self.data, **sampled.model_kwargs)
        train_cfg = TrainConfig(epochs=s.epochs, seed=s.seed, device=s.device, iw_samples=s.iw_samples,
                                cuda_graphs=s.cuda_graphs, compile=s.compile, amp=s.amp, **sampled.train_kwargs)
        # A heartbeat retry starts with a copy of the stale trial's user attributes.
        first = trial.user_attrs.get("trial_number", trial.number)
        retry_of = first if first != trial.number else None
        dead_run_id = trial.user_attrs.get("mlflow_run_id") if retry_of is not None else None
        chain = int(trial.user_attrs.get("checkpoint_trial", first))  # the first trial of the retry chain
        trial.set_user_attr("trial_number", trial.number)
        trial.set_user_attr("checkpoint_trial", chain)
        trial.set_user_attr("worker", WORKER_ID)
        if trial.user_attrs.get("batch_group_size", 1) != 1:  # a retry's copy of its batch's; a group sets its own
            trial.set_user_attr("batch_group_size", 1)
        tracker, params = self._start_run(trial, model_cfg, train_cfg, retry_of=retry_of)
        checkpoints = self._checkpoints(trial, tracker, chain)
        resume = self._resume(trial, tracker, checkpoints, model_cfg, train_cfg, dead_run_id) \
            if retry_of is not None else None
        callbacks: list = [tracker, self._stop_if_interrupted]
        if len(self.names) == 1:
            callbacks.append(PruningReporter(trial, s.epochs, self.names[0]))
        if self.make_callbacks:
            callbacks += self.make_callbacks(trial)
        logged = dict(log_model=s.log_model, params=params, datasets=self.datasets,
                      tags={"variant": s.variant, "study_name": s.study_name, "trial_number": trial.number})
        try:
            interrupted = False
            try:
                # the figures and the model go to the writer once trained, while the test metrics are computed
                result = fit_fn(model_cfg, train_cfg, self.data, callbacks=callbacks, progress=False,
                                checkpoint=checkpoints, checkpoint_every=s.checkpoint_every, resume=resume,
                                on_trained=lambda trained: log_trained(tracker, trained, **logged))
            except KeyboardInterrupt:
                interrupted = True  # its retry resumes from the last checkpoint
                raise
            finally:
                if not s.keep_checkpoints and not interrupted:
                    checkpoints.remove()  # a finished trial (complete, pruned or failed) needs none
            log_fit(tracker, result, log_model=s.log_model)
        except optuna.TrialPruned as exc:
            # FINISHED, not KILLED: in the runs table KILLED and FAILED show the same red cross. The name
            # starts with what happened (the table cuts long names short); a crashed trial keeps its cross.
            tracker.set_tags({"mlflow.runName": f"pruned: {run_name(s.variant, trial.number)}"})
            self._end(trial, tracker, "PRUNED", "FINISHED", str(exc))
            raise
        except NonFiniteLossError as exc:
            self._end(trial, tracker, "FAIL", "FAILED", str(exc))
            return math.nan if len(self.names) == 1 else tuple(math.nan for _ in self.names)
        except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM: the study retries the trial (studies.runner)
            trial.set_user_attr(INTERRUPTED, True)
            self._end(trial, tracker, "FAIL", "KILLED", interrupt_reason(exc))
            raise
        except Exception as exc:
            self._end(trial, tracker, "FAIL", "FAILED", f"{type(exc).__name__}: {exc}")
            raise
        last = result.history[-1]
        infeasible = judge_trial(trial, result.model, self.data, float(last["val_kl"]))
        tracker.log_metrics({"val_active_units": trial.user_attrs["val_active_units"]}, step=int(last["epoch"]))
        tracker.set_tags({"feasible": "false" if infeasible else "true",
                          **({"infeasible_reason": infeasible} if infeasible else {})})
        summary = {"val_neg_elbo": last["val_neg_elbo"], "val_recon": last["val_recon"], "val_kl": last["val_kl"],
                   "samples_per_s": statistics.median(h["samples_per_s"] for h in result.history),
                   "step_ms": statistics.median(h["step_ms"] for h in result.history),
                   "train_seconds": result.train_seconds, **result.final}
        for key, value in summary.items():
            trial.set_user_attr(key, float(value))
        self._end(trial, tracker, "COMPLETE", "FINISHED", None)
        values = tuple(float(last[name]) for name in self.names)
        return values[0] if len(values) == 1 else values

    def _stop_if_interrupted(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Fit callback: raise the study's interrupt in a trial of another thread."""
        if self.stop is not None and self.stop.is_set() and self.interrupted_by is not None:
            raise type(self.interrupted_by)()

    def _checkpoints(self, trial: optuna.Trial, tracker: RunHandle | NullTracker, chain: int) -> RunCheckpoints:
        """The trial's checkpoint sink. ``checkpoint_runs`` (user attribute, copied to a heartbeat retry)
        lists the runs of the retry chain that may hold a ``checkpoint/`` artifact: the chain's end removes all."""
        s = self.settings
        if self.runs is None:
            return RunCheckpoints(trial_key(s.study_name, chain))
        earlier = [str(r) for r in trial.user_attrs.get("checkpoint_runs", [])]
        if s.checkpoint_every:
            trial.set_user_attr("checkpoint_runs", [*earlier, tracker.run_id])
        return RunCheckpoints(trial_key(s.study_name, chain), tracker, writer=self.runs.writer, earlier_runs=earlier)

    def _resume(self, trial: optuna.Trial, tracker: RunHandle | NullTracker, checkpoints: RunCheckpoints,
                model_cfg, train_cfg, dead_run_id: str | None) -> dict | None:
        """The dead trial's checkpoint, with its epochs 1..k reported to ``trial`` and logged to ``tracker``
        (None: start at epoch 1; a one-line note says why when a checkpoint was there but not usable)."""
        found = checkpoints.find(run_fingerprint(model_cfg, train_cfg, self.data), train_cfg.epochs,
                                 tracking_uri=self.runs.writer.tracking_uri if self.runs is not None else None,
                                 dead_run_id=dead_run_id)
        if found.message:
            self.notify(f"trial {trial.number}: {found.message}")
        if found.state is None:
            return None
        k = found.epoch
        trial.set_user_attr("resumed_from_epoch", k)
        tracker.set_tags({"resumed_from_epoch": k, "resumed_from": found.source})
        for row in found.state["history"]:
            epoch = int(row["epoch"])
            metrics = {key: value for key, value in row.items() if key != "epoch"}
            if len(self.names) == 1:
                trial.report(float(metrics[self.names[0]]), epoch)  # the pruner's curve goes on from epoch k
            tracker.log_metrics(metrics, step=epoch)
        return found.state

    def _start_run(self, trial: optuna.Trial, model_cfg, train_cfg,
                   retry_of: int | None) -> tuple[RunHandle | NullTracker, dict[str, Any]]:
        """The trial's run (a NullTracker untracked) and its params."""
        params = {**config_params(model_cfg, train_cfg, self.data_options), "trial_number": trial.number}
        if self.runs is None:
            return NullTracker(), params
        s = self.settings
        tags = run_tags(model_cfg, self.data, train_cfg.resolve_device(), study_name=s.study_name,
                        objective=s.objective, trial_number=trial.number, trial_state="RUNNING", worker=WORKER_ID)
        if retry_of is not None:
            tags["retry_of_trial"] = retry_of
        tracker = self.runs.start(trial, tags)
        trial.set_user_attr("mlflow_run_id", tracker.run_id)
        tracker.log_params(params)
        tracker.log_datasets(self.datasets)
        return tracker, params

    @staticmethod
    def _end(trial: optuna.Trial, tracker: RunHandle | NullTracker, state: str, status: str,
             reason: str | None) -> None:
        """End the trial's run (queued: nothing waits for the store) and record its id as the store knows it
        by now; a run the store has no id for yet keeps its local id, which ``studies.run_ids`` resolves."""
        if reason and state == "FAIL":
            trial.set_user_attr("fail_reason", reason)
        tracker.set_tags({"trial_state": state})
        tracker.end(status, reason)
        if tracker.run_id and tracker.run_id != trial.user_attrs.get("mlflow_run_id"):
            trial.set_user_attr("mlflow_run_id", tracker.run_id)
