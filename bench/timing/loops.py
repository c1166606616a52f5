"""The training loops that can be timed, each prepared and warmed up before its blocks are timed.

- ``harness`` (:class:`HarnessLoop`): the data set sits on the device; before each block a ``randperm``
  fills an index table (untimed), and each step gathers its batch from device tensors. With
  ``cuda_graphs`` the gather, the read of the KL weight from the schedule table (indexed by a
  device-side step counter) and the whole step including Adam (``capturable=True``) are captured into
  one ``torch.cuda.CUDAGraph``. Adam is the fused implementation (one kernel for all parameters)
  unless ``adam="default"``.
- ``seed-loop`` (:class:`SeedLoop`): the seed article's way: a ``DataLoader`` over a ``TensorDataset``
  of CPU tensors (per-sample ``__getitem__`` and collation), ``.to(device)`` of every batch and of the
  KL weight each step, and ``optim.Adam`` as the article builds it (torch's default implementation).
  It runs the same model and step function, so the ratio to it measures the data pipeline and the
  fused optimiser.
- ``floor`` (:class:`FloorLoop`): the bare step on fixed, pre-loaded input buffers (no gather, no
  counter), replayed as a CUDA graph on CUDA: the practical floor of the step at that batch size. On
  CPU it runs eagerly.

A step function takes (x (B, C, H, W), y (B,), weight (2,) = (beta, capacity)) and returns the
detached (3,) statistics (loss, recon, kl) in nats (see :mod:`bench.training.step`).
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import Tensor

from bench.data.splits import Split
from bench.timing.block_timer import synchronize
from bench.training.step import StepFn
from models import CVAE, CVAEConfig, schedule_table
from models.config import ConfigError

LOOPS = ("harness", "seed-loop", "floor")


class TimedLoop(Protocol):
    """A prepared training loop: ``prepare()`` (untimed) before each block, ``run(steps)`` timed."""

    def prepare(self) -> None: ...

    def run(self, steps: int) -> None: ...

    def last_loss(self) -> float: ...


def kl_weights(model_cfg: CVAEConfig, rows: int, device: torch.device) -> Tensor:
    """(rows, 2) float32 (beta, capacity) of the first ``rows`` steps of ``model_cfg``'s KL schedule."""
    return schedule_table(model_cfg.beta, rows, 1, device)


def capture_graph(body: Callable[[], None], device: torch.device, warmup_steps: int) -> torch.cuda.CUDAGraph:
    """Run ``body`` eagerly on a side stream (lazy state, compilation), then capture it as a graph."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(max(3, warmup_steps)):
            body()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    graph.replay()
    return graph


class HarnessLoop:
    """The harness's loop: data on the device, batches gathered by ``randperm`` indices.

    ``idx`` (rows, B) holds one epoch of batch indices, refilled by :meth:`prepare`; step i reads row
    ``i % rows``. With ``cuda_graphs`` a device-side counter picks the row and the schedule weight
    inside the captured graph, so a timed step is one ``graph.replay()``.
    """

    def __init__(self, model: CVAE, step_fn: StepFn, data: Split, batch_size: int, device: torch.device,
                 cuda_graphs: bool, seed: int, warmup_steps: int) -> None:
        self.x, self.y = data.x, data.y
        self.batch, self.device = batch_size, device
        n = len(data)
        self.rows = max(1, n // batch_size)
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.idx = torch.empty(self.rows, batch_size, dtype=torch.long, device=device)
        self.table = kl_weights(model.cfg, self.rows, device)
        self.step_fn = step_fn
        self.stats = torch.zeros(3, device=device)
        self.counter = torch.zeros(1, dtype=torch.long, device=device)
        self.prepare()
        self.graph = capture_graph(self._graph_body, device, warmup_steps) if cuda_graphs else None
        if self.graph is None:
            self.run(warmup_steps)
        synchronize(device)

    def prepare(self) -> None:
        n = self.x.shape[0]
        need = self.rows * self.batch
        perms = [torch.randperm(n, device=self.device, generator=self.gen) for _ in range(-(-need // n))]
        self.idx.copy_(torch.cat(perms)[:need].view(self.rows, self.batch))
        self.counter.zero_()

    def _graph_body(self) -> None:
        row = torch.remainder(self.counter, self.rows)
        ix = self.idx.index_select(0, row).view(-1)
        weight = self.table.index_select(0, row).view(2)
        self.stats.copy_(self.step_fn(self.x.index_select(0, ix), self.y.index_select(0, ix), weight))
        self.counter.add_(1)

    def run(self, steps: int) -> None:
        if self.graph is not None:
            for _ in range(steps):
                self.graph.replay()
            return
        for i in range(steps):
            row = i % self.rows
            ix = self.idx[row]  # index_select, as bench.training.loop does (faster than x[ix] on CPU)
            self.stats = self.step_fn(self.x.index_select(0, ix), self.y.index_select(0, ix), self.table[row])

    def last_loss(self) -> float:
        """The loss (nats) of the last step run."""
        return float(self.stats[0])


class FloorLoop:
    """The bare step on fixed input buffers: a CUDA-graph replay on CUDA (the practical floor)."""

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
