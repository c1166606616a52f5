"""The training loops that can be timed, each prepared and warmed up before its blocks are timed.

- ``harness`` (:class:`HarnessLoop`, from :mod:`bench.training.harness_loop`): the loop ``fit`` trains
  with. The data set sits on the device; before each block a ``randperm`` fills an index table
  (untimed), and each step gathers its batch from device tensors. With ``cuda_graphs`` the gather, the
  read of the KL weight from the schedule table (indexed by a device-side step counter) and the whole
  step including Adam (``capturable=True``) are captured into one ``torch.cuda.CUDAGraph``. Adam is the
  fused implementation (one kernel for all parameters) unless ``adam="default"``.
- ``seed-loop`` (:class:`SeedLoop`): the seed article's way: a ``DataLoader`` over a ``TensorDataset``
  of CPU tensors (per-sample ``__getitem__`` and collation), ``.to(device)`` of every batch and of the
  KL weight each step, and ``optim.Adam`` as the article builds it (torch's default implementation).
  It runs the same model and step function, so the ratio to it measures the data pipeline and the
  fused optimiser.
- ``floor`` (:class:`FloorLoop`): the bare step on fixed, pre-loaded input buffers (no gather, no
  counter): the practical floor of the step at that batch size in that mode. With ``cuda_graphs`` it
  is replayed as a CUDA graph; otherwise (and on CPU) it runs eagerly.

A step function takes (x (B, C, H, W), y (B,), weight (2,) = (beta, capacity)) and returns the
detached (3,) statistics (loss, recon, kl) in nats (see :mod:`bench.training.step`).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from bench.data.splits import Split
from bench.timing.block_timer import synchronize
from bench.training.harness_loop import HarnessLoop, capture_graph, kl_weights
from bench.training.step import StepFn
from models import CVAE
from models.config import ConfigError

__all__ = ["LOOPS", "FloorLoop", "HarnessLoop", "SeedLoop", "TimedLoop", "capture_graph", "kl_weights"]

LOOPS = ("harness", "seed-loop", "floor")


class TimedLoop(Protocol):
    """A prepared training loop: ``prepare()`` (untimed) before each block, ``run(steps)`` timed."""

    def prepare(self) -> None: ...

    def run(self, steps: int) -> None: ...

    def last_loss(self) -> float: ...


class FloorLoop:
    """The bare step on fixed input buffers (the practical floor): a CUDA-graph replay with ``cuda_graphs``."""

    def __init__(self, model: CVAE, step_fn: StepFn, data: Split, batch_size: int, device: torch.device,
                 cuda_graphs: bool, seed: int, warmup_steps: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        ix = torch.randint(0, len(data), (batch_size,), generator=gen).to(data.x.device)
        self.x, self.y = data.x[ix].contiguous(), data.y[ix].contiguous()
        self.weight = kl_weights(model.cfg, 1, device)[0].clone()
        self.step_fn = step_fn
        self.stats = torch.zeros(3, device=device)
        self.graph = capture_graph(self._graph_body, device, warmup_steps) if cuda_graphs else None
        if self.graph is None:
            self.run(warmup_steps)
        synchronize(device)

    def prepare(self) -> None:
        pass

    def _graph_body(self) -> None:
        self.stats.copy_(self.step_fn(self.x, self.y, self.weight))

    def run(self, steps: int) -> None:
        if self.graph is not None:
            for _ in range(steps):
                self.graph.replay()
            return
        for _ in range(steps):
            self.stats = self.step_fn(self.x, self.y, self.weight)

    def last_loss(self) -> float:
        """The loss (nats) of the last step run."""
        return float(self.stats[0])


class SeedLoop:
    """The seed article's loop: ``DataLoader`` over per-sample CPU tensors, ``.to(device)`` each step.

    Batches are collated from ``TensorDataset.__getitem__`` (shuffled, last partial batch dropped so
    every step has ``batch_size`` samples); labels travel as class indices and are one-hot encoded per
    batch by the model; the KL weight is a CPU tensor moved each step. The iterator persists across
    blocks and restarts at the end of each epoch, as a ``for`` loop over epochs would.
    """

    def __init__(self, model: CVAE, step_fn: StepFn, data: Split, batch_size: int, device: torch.device,
                 seed: int, warmup_steps: int) -> None:
        from torch.utils.data import DataLoader, TensorDataset

        if batch_size > len(data):
            raise ConfigError(f"batch_size={batch_size}: larger than the train split ({len(data)}), "
                              f"the seed loop would have no full batch")
        dataset = TensorDataset(data.x.cpu(), data.y.cpu())
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                 generator=torch.Generator().manual_seed(seed))
        self.weight = kl_weights(model.cfg, 1, torch.device("cpu"))[0].clone()
        self.device, self.step_fn = device, step_fn
        self.stats: Tensor | None = None
        self._it = iter(self.loader)
        self.run(warmup_steps)
        synchronize(device)

    def prepare(self) -> None:
        pass

    def run(self, steps: int) -> None:
        for _ in range(steps):
            try:
                x, y = next(self._it)
            except StopIteration:
                self._it = iter(self.loader)
                x, y = next(self._it)
            self.stats = self.step_fn(x.to(self.device), y.to(self.device), self.weight.to(self.device))

    def last_loss(self) -> float:
        """The loss (nats) of the last step run (NaN before any step)."""
        return float(self.stats[0]) if self.stats is not None else float("nan")
