"""Train one configuration and measure it: the harness's single training loop.

The whole dataset sits on the training device; each epoch draws one ``randperm`` there and slices
batches from it (no DataLoader, no per-sample Python). The last partial batch is dropped so that
every step has the same shape (what torch.compile and CUDA graphs want). Per-step statistics stay
on the device and are read once per epoch, so a CUDA run synchronises once per epoch.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from bench.data import DataSplits
from bench.errors import CLIError
from bench.evaluation import elbo_terms, final_metrics
from bench.training.config import TrainConfig
from bench.training.step import make_optimizer, make_train_step
from bench.training.step_timer import StepTimer
from models import CVAE, CVAEConfig, schedule_table

EpochCallback = Callable[[int, dict[str, float]], None]


class NonFiniteLossError(CLIError, RuntimeError):
    """The training loss became NaN or infinite; the message names the epoch and step."""

    def __init__(self, value: float, epoch: int, step: int) -> None:
        super().__init__(f"loss became {value} at epoch {epoch}, step {step} (try a lower --lr or --grad-clip)")
        self.epoch, self.step = epoch, step


@dataclass
class FitResult:
    model: CVAE
    data: DataSplits
    history: list[dict[str, float]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device


def fit(model_cfg: CVAEConfig, train_cfg: TrainConfig, data: DataSplits, *,
        callbacks: Sequence[EpochCallback] = (), progress: bool = True, final_eval: bool = True) -> FitResult:
    """Train ``model_cfg`` on ``data.train``; evaluate on val each epoch and on test at the end.

    Each epoch's metrics (see :data:`bench.evaluation.metric_names.EPOCH_METRICS`) go to every callback as
    ``callback(epoch, metrics)``; a callback may raise to stop the run (Optuna pruning does).
    """
    device = train_cfg.resolve_device()
    seed_everything(train_cfg.seed)
    data = data.to(device)
    model = CVAE(model_cfg).to(device)
    optimizer = make_optimizer(model, train_cfg.lr, train_cfg.weight_decay)
    step_fn = make_train_step(model, optimizer, grad_clip=train_cfg.grad_clip, amp=train_cfg.amp,
                              compile=train_cfg.compile)

    n = len(data.train)
    batch = min(train_cfg.batch_size, n)
    steps = n // batch
    table = schedule_table(model_cfg.beta, steps, train_cfg.epochs, device)
    gen = torch.Generator(device=device).manual_seed(train_cfg.seed)
    timer = StepTimer(device)
    result = FitResult(model=model, data=data)

    bar = tqdm(range(1, train_cfg.epochs + 1), desc=f"{model_cfg.variant} on {data.name}", unit="epoch",
               disable=None if progress else True, leave=False)  # None: only on a terminal
    for epoch in bar:
        perm = torch.randperm(n, device=device, generator=gen)
        stats = torch.empty(steps, 3, device=device)
        first = (epoch - 1) * steps
        wall = time.perf_counter()
        timer.start()
        for i in range(steps):
            idx = perm[i * batch:(i + 1) * batch]
            # index_select, not x[idx]: advanced indexing runs a parallel kernel that is ~3x slower for a
            # batch gather on CPU and far slower when the CPU is shared (OpenMP oversubscription)
            stats[i] = step_fn(data.train.x.index_select(0, idx), data.train.y.index_select(0, idx), table[first + i])
            timer.mark()
        step_ms = timer.durations_ms()  # synchronises on CUDA
        seconds = time.perf_counter() - wall
        result.train_seconds += seconds
        _check_finite(stats[:, 0], epoch)

        means = stats.mean(0).tolist()
        val = elbo_terms(model, data.val, train_cfg.eval_batch_size)
        metrics = {
            "train_recon": means[1], "train_kl": means[2], "train_neg_elbo": means[1] + means[2],
            "val_recon": val["recon"], "val_kl": val["kl"], "val_neg_elbo": val["neg_elbo"],
            "beta": table[first:first + steps, 0].mean().item(),
            "samples_per_s": steps * batch / seconds,
            "step_ms": statistics.median(step_ms),
        }
        if not math.isfinite(metrics["val_neg_elbo"]):
            raise NonFiniteLossError(metrics["val_neg_elbo"], epoch, steps)
        result.history.append({"epoch": epoch, **metrics})
        bar.set_postfix(val_neg_elbo=f"{metrics['val_neg_elbo']:.2f}", val_kl=f"{metrics['val_kl']:.2f}")
        for callback in callbacks:
            callback(epoch, metrics)
    bar.close()
    if final_eval:
        result.final = final_metrics(model, data, iw_samples=train_cfg.iw_samples, seed=train_cfg.seed,
                                     eval_batch_size=train_cfg.eval_batch_size,
                                     cond_samples_per_class=train_cfg.cond_samples_per_class)
    return result


def _check_finite(losses: torch.Tensor, epoch: int) -> None:
    bad = ~torch.isfinite(losses)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise NonFiniteLossError(float(losses[i]), epoch, i + 1)
