"""Train one configuration and measure it: ``fit``, stepping through the harness loop.

The whole dataset sits on the training device; each epoch draws one ``randperm`` there and the loop
(:class:`bench.training.harness_loop.HarnessLoop`, the one ``cvae-bench steptime`` times) gathers
batches from it: no DataLoader, no per-sample Python, the last partial batch dropped. On CUDA the
whole step is one CUDA-graph replay (``TrainConfig.cuda_graphs``, on by default there). Per-step
statistics stay on the device and are read once per epoch, so a CUDA run synchronises once per
epoch for training and once per evaluation.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

import bench.training.checkpoint as ckpt
from bench.data import DataSplits
from bench.errors import CLIError
from bench.evaluation import elbo_terms, final_metrics
from bench.training.config import TrainConfig
from bench.training.harness_loop import GRAPH_WARMUP_STEPS, HarnessLoop, device_context
from bench.training.step import make_optimizer, make_train_step
from bench.training.step_timer import StepTimer
from models import CVAE, CVAEConfig, schedule_table

EpochCallback = Callable[[int, dict[str, float]], None]
#: ``checkpoint(epoch, state)``: called at the end of an epoch a checkpoint is due (``fit``'s
#: ``checkpoint_every``, ``checkpoint_seconds``) with the state of
#: :func:`bench.training.checkpoint.make_state` (it writes it somewhere).
CheckpointSink = Callable[[int, dict], None]
#: The clock of ``checkpoint_seconds`` (s).
checkpoint_clock = time.monotonic


class NonFiniteLossError(CLIError, RuntimeError):
    """The training loss became NaN or infinite; the message names the epoch and step."""

    def __init__(self, value: float, epoch: int, step: int) -> None:
        super().__init__(f"loss became {value} at epoch {epoch}, step {step} (try a lower --lr or --grad-clip)")
        self.epoch, self.step = epoch, step


@dataclass
class FitResult:
    """What ``fit`` returns. ``train_seconds``: wall time of the epochs' step loops (s);
    ``step_seconds``: the sum of the per-step times of :class:`StepTimer` (s)."""

    model: CVAE
    data: DataSplits
    history: list[dict[str, float]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    step_seconds: float = 0.0


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device


def fit(model_cfg: CVAEConfig, train_cfg: TrainConfig, data: DataSplits, *,
        callbacks: Sequence[EpochCallback] = (), progress: bool = True, final_eval: bool = True,
        checkpoint: CheckpointSink | None = None, checkpoint_every: int = 0, checkpoint_seconds: float = 0.0,
        resume: dict | None = None, on_trained: Callable[[FitResult], None] | None = None) -> FitResult:
    """Train ``model_cfg`` on ``data.train``; evaluate on val each epoch and on test at the end.

    Each epoch's metrics (see :data:`bench.evaluation.metric_names.EPOCH_METRICS`) go to every callback as
    ``callback(epoch, metrics)``; a callback may raise to stop the run (Optuna pruning does). Training
    takes exactly ``epochs * (len(data.train) // batch_size)`` optimizer steps.

    Checkpoints: with ``checkpoint``, ``checkpoint(epoch, state)`` is called at the end of every
    ``checkpoint_every``-th epoch (N >= 1), and of the first epoch that ends ``checkpoint_seconds`` (s,
    wall clock) or more after the last call or the start (> 0), before the last epoch
    (:mod:`bench.training.checkpoint`); both 0: never.
    ``resume`` (a loaded checkpoint of epoch k) restores model, optimizer, RNGs, the permutation
    generator and the history 1..k, then trains epochs k+1..E only; callbacks see only those epochs.
    A resume whose fingerprint is not this run's raises :class:`CheckpointRefused` before any training.
    On CPU with a fixed seed a resumed fit ends with the same history and final metrics as one run
    straight through.

    ``on_trained(result)`` is called once the last epoch is done, before the final test metrics
    (``result.final`` is still empty): ``train`` hands the figures to its tracking process there, so
    that they are drawn while the test metrics are computed. It must leave the model and the RNGs as
    it found them.
    """
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 0:
        raise ValueError(f"checkpoint_every={checkpoint_every!r}: must be an integer >= 0 (epochs; 0 = off)")
    if isinstance(checkpoint_seconds, bool) or not (isinstance(checkpoint_seconds, (int, float))
                                                    and 0 <= checkpoint_seconds < math.inf):
        raise ValueError(f"checkpoint_seconds={checkpoint_seconds!r}: must be a number of seconds >= 0 (0 = off)")
    device = train_cfg.resolve_device()
    graphs = train_cfg.use_cuda_graphs(device)
    with device_context(device):  # streams, events and graphs on the chosen GPU, not the default one
        return _fit(model_cfg, train_cfg, data, device, graphs, callbacks, progress, final_eval,
                    checkpoint if checkpoint_every or checkpoint_seconds else None, checkpoint_every,
                    checkpoint_seconds, resume, on_trained)


def run_fingerprint(model_cfg: CVAEConfig, train_cfg: TrainConfig, data: DataSplits) -> str:
    """The checkpoint fingerprint of this fit (:func:`bench.training.checkpoint.fingerprint`)."""
    return ckpt.fingerprint(model_cfg, train_cfg, ckpt.data_digest(data))


def _fit(model_cfg: CVAEConfig, train_cfg: TrainConfig, data: DataSplits, device: torch.device, graphs: bool,
         callbacks: Sequence[EpochCallback], progress: bool, final_eval: bool,
         checkpoint: CheckpointSink | None, checkpoint_every: int, checkpoint_seconds: float, resume: dict | None,
         on_trained: Callable[[FitResult], None] | None) -> FitResult:
    fp = run_fingerprint(model_cfg, train_cfg, data) if (checkpoint is not None or resume is not None) else ""
    if resume is not None:
        ckpt.check_resumable(resume, train_cfg.epochs, fp)
    seed_everything(train_cfg.seed)
    data = data.to(device)
    model = CVAE(model_cfg).to(device)
    optimizer = make_optimizer(model, train_cfg.lr, train_cfg.weight_decay, capturable=graphs)
    step_fn = make_train_step(model, optimizer, grad_clip=train_cfg.grad_clip, amp=train_cfg.amp,
                              compile=train_cfg.compile)

    n = len(data.train)
    batch = min(train_cfg.batch_size, n)
    steps = n // batch
    table = schedule_table(model_cfg.beta, steps, train_cfg.epochs, device)  # (epochs * steps, 2)
    betas = table[:, 0].cpu()
    # eager: no warm-up (the first epoch's first step compiles, as it always has); graphs: warmed up,
    # captured, and the warm-up undone
    loop = HarnessLoop(model, step_fn, data.train, batch, device, graphs, train_cfg.seed,
                       warmup_steps=GRAPH_WARMUP_STEPS if graphs else 0, table=table, optimizer=optimizer)
    timer = StepTimer(device)
    result = FitResult(model=model, data=data)
    start = 1
    if resume is not None:
        ckpt.restore(resume, model=model, optimizer=optimizer, generator=loop.gen)
        start = resume["epoch"] + 1
        loop.step = resume["epoch"] * steps  # the schedule position
        loop.counters[1].fill_(loop.step)
        result.history = [dict(h) for h in resume["history"]]

    bar = tqdm(range(start, train_cfg.epochs + 1), desc=f"{model_cfg.variant} on {data.name}", unit="epoch",
               disable=None if progress else True, leave=False)  # None: only on a terminal
    saved_at = checkpoint_clock()
    for epoch in bar:
        loop.prepare()
        wall = time.perf_counter()
        timer.start()
        loop.run(steps, after_step=timer.mark)
        step_ms = timer.durations_ms()  # synchronises on CUDA
        seconds = time.perf_counter() - wall
        result.train_seconds += seconds
        result.step_seconds += sum(step_ms) / 1e3
        stats = loop.stats.cpu()  # (steps, 3) loss, recon, kl: the epoch's one read of the training statistics
        _check_finite(stats[:, 0], epoch)

        means = stats.mean(0).tolist()
        val = elbo_terms(model, data.val, train_cfg.eval_batch_size)
        first = (epoch - 1) * steps
        metrics = {
            "train_recon": means[1], "train_kl": means[2], "train_neg_elbo": means[1] + means[2],
            "val_recon": val["recon"], "val_kl": val["kl"], "val_neg_elbo": val["neg_elbo"],
            "beta": betas[first:first + steps].mean().item(),
            "samples_per_s": steps * batch / seconds,
            "step_ms": statistics.median(step_ms),
        }
        if not math.isfinite(metrics["val_neg_elbo"]):
            raise NonFiniteLossError(metrics["val_neg_elbo"], epoch, steps)
        result.history.append({"epoch": epoch, **metrics})
        bar.set_postfix(val_neg_elbo=f"{metrics['val_neg_elbo']:.2f}", val_kl=f"{metrics['val_kl']:.2f}")
        for callback in callbacks:
            callback(epoch, metrics)
        now = checkpoint_clock()
        due = (checkpoint_every and epoch % checkpoint_every == 0) or \
            (checkpoint_seconds and now - saved_at >= checkpoint_seconds)
        if checkpoint is not None and due and epoch < train_cfg.epochs:
            checkpoint(epoch, ckpt.make_state(fingerprint=fp, epoch=epoch, model=model, optimizer=optimizer,
                                              generator=loop.gen, history=result.history))
            saved_at = now
    bar.close()
    if on_trained is not None:
        on_trained(result)
    if final_eval:
        result.final = final_metrics(model, data, iw_samples=train_cfg.iw_samples, seed=train_cfg.seed,
                                     eval_batch_size=train_cfg.eval_batch_size,
                                     cond_samples_per_class=train_cfg.cond_samples_per_class)
    return result


def _check_finite(losses: torch.Tensor, epoch: int) -> None:
    """Raise on the first non-finite loss of an epoch's (steps,) losses (a host tensor)."""
    bad = ~torch.isfinite(losses)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise NonFiniteLossError(float(losses[i]), epoch, i + 1)
