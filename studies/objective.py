"""One Optuna trial = one :func:`bench.fit` run = one MLflow child run of the study's parent run.

Objectives (:data:`studies.spec.OBJECTIVES`; nats per example, on the validation split, last epoch):

- ``neg-elbo``: minimise ``val_neg_elbo``; it is reported every epoch, so the pruner can stop a
  trial early (Optuna's ``TrialPruned``; the run ends KILLED, tag ``trial_state=PRUNED``).
- ``rate-distortion``: minimise (``val_recon``, ``val_kl``); the Pareto front is the
  rate-distortion curve. Multi-objective trials cannot be pruned.

A loss that turns NaN fails the trial, not the study: the objective returns NaN (Optuna marks the
trial FAIL without a traceback), the reason is kept as the trial's ``fail_reason`` user attribute
and as the run's ``end_reason`` tag, and the run ends FAILED.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import optuna

from bench import DataSplits, NonFiniteLossError, TrainConfig, fit, model_config
from bench.tracking import NullTracker, RunTracker, config_params, log_fit, run_tags
from studies.search_space import suggest
from studies.spec import OBJECTIVES

#: Which process ran a trial (host:pid): a trial user attribute and a tag of its run.
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"

#: The trial user attributes a completed trial gets (last-epoch val metrics, medians of speed,
#: every final test metric): what the suite's summary table is made of, with or without MLflow.
SUMMARY_ATTRS = ("val_neg_elbo", "val_recon", "val_kl", "samples_per_s", "step_ms", "train_seconds")


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


@dataclass
class ChildRuns:
    """Makes the MLflow child runs of one study's parent run."""

    client: Any
    experiment_id: str
    parent_run_id: str

    def start(self, trial: optuna.Trial, tags: Mapping[str, Any]) -> RunTracker:
        return RunTracker.start(self.client, self.experiment_id, f"trial-{trial.number}",
                                parent_run_id=self.parent_run_id, tags=tags)


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
                 data_options: Mapping[str, Any] | None = None,
                 make_callbacks: Callable[[optuna.Trial], list] | None = None) -> None:
        self.settings = settings
        self.data = data
        self.runs = runs
        self.data_options = dict(data_options or {})
        self.make_callbacks = make_callbacks
        self.names = OBJECTIVES[settings.objective]

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        s = self.settings
        sampled = suggest(trial, s.variant, s.epochs)
        model_cfg = model_config(s.variant, self.data, **sampled.model_kwargs)
        train_cfg = TrainConfig(epochs=s.epochs, seed=s.seed, device=s.device, iw_samples=s.iw_samples,
                                **sampled.train_kwargs)
        # A heartbeat retry starts with a copy of the stale trial's user attributes.
        first = trial.user_attrs.get("trial_number", trial.number)
        trial.set_user_attr("trial_number", trial.number)
        trial.set_user_attr("worker", WORKER_ID)
        tracker = self._start_run(trial, model_cfg, train_cfg, retry_of=first if first != trial.number else None)
        callbacks: list = [tracker]
        if len(self.names) == 1:
            callbacks.append(PruningReporter(trial, s.epochs, self.names[0]))
        if self.make_callbacks:
            callbacks += self.make_callbacks(trial)
        try:
            result = fit(model_cfg, train_cfg, self.data, callbacks=callbacks, progress=False)
            log_fit(tracker, result)
        except optuna.TrialPruned as exc:
            self._end(trial, tracker, "PRUNED", "KILLED", str(exc))
            raise
        except NonFiniteLossError as exc:
            self._end(trial, tracker, "FAIL", "FAILED", str(exc))
            return math.nan if len(self.names) == 1 else tuple(math.nan for _ in self.names)
        except KeyboardInterrupt:
            self._end(trial, tracker, "FAIL", "KILLED", "interrupted")
            raise
        except Exception as exc:
            self._end(trial, tracker, "FAIL", "FAILED", f"{type(exc).__name__}: {exc}")
            raise
        last = result.history[-1]
        summary = {"val_neg_elbo": last["val_neg_elbo"], "val_recon": last["val_recon"], "val_kl": last["val_kl"],
                   "samples_per_s": statistics.median(h["samples_per_s"] for h in result.history),
                   "step_ms": statistics.median(h["step_ms"] for h in result.history),
                   "train_seconds": result.train_seconds, **result.final}
        for key, value in summary.items():
            trial.set_user_attr(key, float(value))
        self._end(trial, tracker, "COMPLETE", "FINISHED", None)
        values = tuple(float(last[name]) for name in self.names)
        return values[0] if len(values) == 1 else values

    def _start_run(self, trial: optuna.Trial, model_cfg, train_cfg, retry_of: int | None) -> RunTracker | NullTracker:
        if self.runs is None:
            return NullTracker()
        s = self.settings
        tags = run_tags(model_cfg, self.data, train_cfg.resolve_device(), study_name=s.study_name,
                        objective=s.objective, trial_number=trial.number, trial_state="RUNNING", worker=WORKER_ID)
        if retry_of is not None:
            tags["retry_of_trial"] = retry_of
        tracker = self.runs.start(trial, tags)
        trial.set_user_attr("mlflow_run_id", tracker.run_id)
        tracker.log_params({**config_params(model_cfg, train_cfg, self.data_options), "trial_number": trial.number})
        return tracker

    @staticmethod
    def _end(trial: optuna.Trial, tracker: RunTracker | NullTracker, state: str, status: str,
             reason: str | None) -> None:
        if reason and state == "FAIL":
            trial.set_user_attr("fail_reason", reason)
        tracker.set_tags({"trial_state": state})
        tracker.end(status, reason)
        if tracker.run_id and tracker.run_id != trial.user_attrs.get("mlflow_run_id"):
            trial.set_user_attr("mlflow_run_id", tracker.run_id)  # the real id, once an outage's spool is sent
