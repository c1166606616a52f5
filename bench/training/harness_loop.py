"""The harness's training loop: ``fit`` steps through it, and ``cvae-bench steptime`` times it.

The data set sits on the device. An index table of one epoch, ``idx`` (rows, B), is refilled by
:meth:`HarnessLoop.prepare` from one ``randperm``; step i gathers its batch from row ``i`` of that
table and its KL weight (beta, capacity) from row ``g`` of the schedule table, g being the global
step (the table covers every epoch of a fit, or one epoch when steptime times the loop). Each step's
statistics (loss, recon, kl; nats) go to row i of ``stats`` (rows, 3) on the device, read once per
epoch by the caller. The last partial batch is dropped, so every step has the same shape.

Eager (CPU, or ``cuda_graphs=False``): Python counters pick the rows. With ``cuda_graphs`` the
counters live on the device, and the gather, the read of the weight, the whole step and a
capturable Adam are captured in one ``torch.cuda.CUDAGraph``: a step is one ``graph.replay()``.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable

import torch
from torch import Tensor

from bench.data.splits import Split
from bench.training.step import StepFn
from models import CVAE, CVAEConfig, schedule_table

#: Eager steps run before a capture (lazy optimizer state, cuBLAS workspaces, torch.compile).
GRAPH_WARMUP_STEPS = 3

# torch.cuda.graph: "only one capture may be underway at a time in the process" (study threads).
_CAPTURE_LOCK = threading.Lock()


def kl_weights(model_cfg: CVAEConfig, rows: int, device: torch.device) -> Tensor:
    """(rows, 2) float32 (beta, capacity) of the first ``rows`` steps of ``model_cfg``'s KL schedule."""
    return schedule_table(model_cfg.beta, rows, 1, device)


def device_context(device: torch.device):
    """Make ``device`` the current CUDA device (streams, events, graphs follow it); nothing on CPU."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def capture_graph(body: Callable[[], None], device: torch.device, warmup_steps: int) -> torch.cuda.CUDAGraph:
    """Run ``body`` eagerly on a side stream of ``device`` (lazy state, compilation), then capture it.

    The capture is replayed once, so ``body`` has run ``max(GRAPH_WARMUP_STEPS, warmup_steps) + 1`` times.
    """
    with _CAPTURE_LOCK, device_context(device):
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(max(GRAPH_WARMUP_STEPS, warmup_steps)):
                body()
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA work of other threads (study trials beside this one) may go on meanwhile
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            body()
        graph.replay()
    return graph


class TrainingState:
    """A copy of a model's parameters and buffers and of its optimizer's state, to put back in place.

    :meth:`restore` copies into the existing tensors (a captured graph keeps pointing at them). State
    the optimizer created after the copy was taken is reset to zero, Adam's initial value of its moments
    and step count.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer
        self.tensors = {k: v.clone() for k, v in model.state_dict().items()}
        self.optim = {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
                      for p, s in optimizer.state.items()}

    @torch.no_grad()
    def restore(self) -> None:
        for k, v in self.model.state_dict().items():
            v.copy_(self.tensors[k])
        for p, state in self.optimizer.state.items():
            saved = self.optim.get(p, {})
            for k, v in state.items():
                if not torch.is_tensor(v):
                    raise TypeError(f"optimizer state {k!r} is a {type(v).__name__}, not a tensor: "
                                    f"it cannot be restored in place")
                if k in saved:
                    v.copy_(saved[k])
                else:
                    v.zero_()


class HarnessLoop:
    """The training loop: data on the device, batches gathered by ``randperm`` indices.

    Args:
        model, step_fn: the model and its train step (:func:`bench.training.step.make_train_step`);
            the step's optimizer must be ``capturable`` for ``cuda_graphs``.
        data: the train split, on ``device``; rows = max(1, len(data) // batch_size) steps per epoch.
        cuda_graphs: capture each step as one CUDA graph (CUDA only).
        seed: seed of the loop's ``torch.Generator`` on ``device`` (one ``randperm`` per :meth:`prepare`).
        warmup_steps: steps run before the loop is used (eager), or before the capture (at least
            :data:`GRAPH_WARMUP_STEPS`). They gather from the first examples in order, so they draw
            nothing from the loop's generator.
        table: (T, 2) (beta, capacity) per global step, read at row ``step % T`` (default: one epoch
            of the model's schedule).
        optimizer: when given, the warm-up is undone: parameters, buffers and optimizer state are put
            back in place as they were (see :class:`TrainingState`), so training starts from the
            initialisation and takes exactly the steps :meth:`run` is asked for. The warm-up steps do
            advance the global RNG (reparameterisation noise).
    """

    def __init__(self, model: CVAE, step_fn: StepFn, data: Split, batch_size: int, device: torch.device,
                 cuda_graphs: bool, seed: int, warmup_steps: int, *, table: Tensor | None = None,
                 optimizer: torch.optim.Optimizer | None = None) -> None:
        self.x, self.y, self.n = data.x, data.y, len(data)
        self.batch, self.device, self.step_fn = batch_size, device, step_fn
        self.rows = max(1, self.n // batch_size)
        self.table = kl_weights(model.cfg, self.rows, device) if table is None else table
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.idx = (torch.arange(self.rows * batch_size, device=device) % self.n).view(self.rows, batch_size)
        self.stats = torch.zeros(self.rows, 3, device=device)
        self.row = self.step = 0  # next row of idx, next global step (eager; mirrors the device counters)
        self.last = 0  # row of the last step run
        # the same two counters on the device, advanced by the captured step: (row of idx, global step)
        self.counters = torch.zeros(2, dtype=torch.long, device=device)
        self.wrap = torch.tensor([self.rows, len(self.table)], device=device)
        self.graph: torch.cuda.CUDAGraph | None = None

        saved = TrainingState(model, optimizer) if optimizer is not None else None
        with device_context(device):
            if cuda_graphs:
                self.graph = capture_graph(self._captured_step, device, warmup_steps)
            else:
                self.run(warmup_steps)
            if saved is not None:
                saved.restore()
            self.row = self.step = 0
            self.counters.zero_()
            if device.type == "cuda":
                torch.cuda.synchronize(device)

    def prepare(self) -> None:
        """Refill the index table (one ``randperm`` of the split per epoch) and start at its first row."""
        need = self.rows * self.batch
        perms = [torch.randperm(self.n, device=self.device, generator=self.gen) for _ in range(-(-need // self.n))]
        self.idx.copy_(torch.cat(perms)[:need].view(self.rows, self.batch))  # one randperm unless batch > n
        self.row = 0
        if self.graph is not None:
            self.counters[0].zero_()

    def _captured_step(self) -> None:
        row, step = torch.remainder(self.counters, self.wrap).split(1)
        ix = self.idx.index_select(0, row).view(-1)
        weight = self.table.index_select(0, step).view(2)
        stats = self.step_fn(self.x.index_select(0, ix), self.y.index_select(0, ix), weight)
        self.stats.index_copy_(0, row, stats.view(1, 3))
        self.counters.add_(1)

    def run(self, steps: int, after_step: Callable[[], None] | None = None) -> None:
        """Run ``steps`` train steps; ``after_step()`` after each (e.g. :meth:`StepTimer.mark`)."""
        with device_context(self.device):
            for _ in range(steps):
                if self.graph is not None:
                    self.graph.replay()
                else:
                    ix = self.idx[self.row]
                    # index_select, not x[ix]: advanced indexing runs a parallel kernel that is ~3x slower for
                    # a batch gather on CPU and far slower when the CPU is shared (OpenMP oversubscription)
                    self.stats[self.row] = self.step_fn(self.x.index_select(0, ix), self.y.index_select(0, ix),
                                                        self.table[self.step % len(self.table)])
                self.last, self.row, self.step = self.row, (self.row + 1) % self.rows, self.step + 1
                if after_step is not None:
                    after_step()

    def last_loss(self) -> float:
        """The loss (nats) of the last step run (reads it back from the device)."""
        return float(self.stats[self.last, 0])
