"""Time the whole train step -- forward, loss, backward, Adam -- of one configuration.

How a configuration is measured
-------------------------------
1. Build the model and the step with :func:`bench.training.step.make_train_step` (the step ``fit`` uses).
2. Warm up: run steps untimed until compilation (``torch.compile``) and capture (CUDA graphs) are done.
3. Pick the steps per block so that one block lasts about ``block_ms``, then time ``repeats`` blocks.
   On CUDA a block is bracketed by two CUDA events and synchronised once, after its end event; the
   loop itself never synchronises. On CPU a block is bracketed by ``time.perf_counter`` (monotonic).
4. Report, over blocks, the median and interquartile range of the per-step time (ms), samples/s at
   the median, peak memory, and the achieved TFLOP/s (matmul/conv FLOPs of one step counted with
   ``torch.utils.flop_counter.FlopCounterMode``, divided by the median step time).

The loops that can be timed (``StepTimeConfig.loop``)
-----------------------------------------------------
- ``harness``: the data set sits on the device; before each block a ``randperm`` fills an index table
  (untimed), and each step gathers its batch from device tensors. With ``cuda_graphs`` the gather, the
  read of the KL weight from the schedule table (indexed by a device-side step counter) and the whole
  step including Adam (``capturable=True``) are captured into one ``torch.cuda.CUDAGraph``. Adam is
  the fused implementation (one kernel for all parameters) unless ``adam="default"``.
- ``seed-loop``: the seed article's way: a ``DataLoader`` over a ``TensorDataset`` of CPU tensors
  (per-sample ``__getitem__`` and collation), ``.to(device)`` of every batch and of the KL weight each
  step, and ``optim.Adam`` as the article builds it (torch's default implementation). It runs the same
  model and step function, so the ratio to it measures the data pipeline and the fused optimiser.
- ``floor``: the bare step on fixed, pre-loaded input buffers (no gather, no counter), replayed as a
  CUDA graph on CUDA: the practical floor of the step at that batch size. On CPU it runs eagerly.

Peak memory
-----------
CUDA: ``torch.cuda.max_memory_allocated`` over the timed blocks (reset after the warm-up): everything
resident on the device -- data set, parameters, Adam state, CUDA-graph pools -- plus activations.
CPU: the process's peak resident set size (``ru_maxrss``) when the configuration ends: a
high-water mark since the process started, not a per-configuration figure.
"""

from __future__ import annotations

import functools
import gc
import math
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from bench.data.datasets import DataSplits, Split, load_dataset
from bench.training.presets import model_config
from bench.training.step import ADAM_IMPLEMENTATIONS, make_optimizer, make_train_step
from models import CVAE, CVAEConfig, schedule_table
from models.config import ConfigError

LOOPS = ("harness", "seed-loop", "floor")
SYNTHETIC_PREFIX = "synthetic:"
MIB = 2 ** 20


# --------------------------------------------------------------------------------------------------
# Timing


@dataclass(frozen=True)
class BlockTimes:
    """Per-step milliseconds of each timed block (a block's time divided by its steps)."""

    per_step_ms: tuple[float, ...]
    steps_per_block: int

    def quartiles(self) -> tuple[float, float, float]:
        values = sorted(self.per_step_ms)
        if len(values) == 1:
            return values[0], values[0], values[0]
        q25, q50, q75 = statistics.quantiles(values, n=4, method="inclusive")
        return q25, q50, q75

    @property
    def median_ms(self) -> float:
        return statistics.median(self.per_step_ms)

    @property
    def iqr_ms(self) -> float:
        q25, _, q75 = self.quartiles()
        return q75 - q25


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_blocks(run_block: Callable[[int], None], steps: int, repeats: int, device: torch.device,
                prepare: Callable[[], None] | None = None) -> BlockTimes:
    """Time ``repeats`` calls of ``run_block(steps)``; ``prepare()`` runs untimed before each.

    CUDA: events on the current stream around each block, one synchronise per block after its end
    event (never inside the block). CPU: ``time.perf_counter`` around each block.
    """
    if steps < 1 or repeats < 1:
        raise ValueError(f"steps={steps}, repeats={repeats}: both must be >= 1")
    per_step = []
    for _ in range(repeats):
        if prepare is not None:
            prepare()
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run_block(steps)
            end.record()
            end.synchronize()
            per_step.append(start.elapsed_time(end) / steps)
        else:
            t0 = time.perf_counter()
            run_block(steps)
            per_step.append((time.perf_counter() - t0) * 1e3 / steps)
    return BlockTimes(tuple(per_step), steps)


def steps_for_block(run_block: Callable[[int], None], device: torch.device, block_ms: float,
                    probe_steps: int = 3, max_steps: int = 10_000) -> int:
    """Steps that make one block last about ``block_ms`` (probed with one short, untimed block)."""
    probe = time_blocks(run_block, probe_steps, 1, device)
    step_ms = max(probe.median_ms, 1e-4)
    return int(min(max_steps, max(probe_steps, math.ceil(block_ms / step_ms))))


# --------------------------------------------------------------------------------------------------
# Calibration workload (measured in the same process, so results can be normalised)

CALIBRATION_SIZE = {"cpu": 384, "cuda": 4096}


def calibration_workload(device: torch.device) -> tuple[str, Callable[[int], None]]:
    """(description, run_block) of a fixed fp32 matrix product on ``device``."""
    n = CALIBRATION_SIZE["cuda" if device.type == "cuda" else "cpu"]
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(n, n, generator=gen).to(device)
    b = torch.rand(n, n, generator=gen).to(device)
    out = torch.empty(n, n, device=device)

    def run_block(steps: int) -> None:
        for _ in range(steps):
            torch.mm(a, b, out=out)

    return f"fp32 matmul {n}x{n}x{n}", run_block


def measure_calibration(device: torch.device, repeats: int = 10, block_ms: float = 50.0) -> dict[str, Any]:
    """Median/IQR ms of the calibration matrix product on ``device`` (same timer as the steps)."""
    workload, run_block = calibration_workload(device)
    run_block(3)
    synchronize(device)
    times = time_blocks(run_block, steps_for_block(run_block, device, block_ms), repeats, device)
    return {"workload": workload, "device": device.type, "median_ms": times.median_ms, "iqr_ms": times.iqr_ms,
            "threads": torch.get_num_threads()}


# --------------------------------------------------------------------------------------------------
# Data


def synthetic_splits(shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, n: int = 60_000,
                     seed: int = 0) -> DataSplits:
    """Random images in [0, 1] of ``shape`` with uniform labels: MNIST-shaped data without files.

    Only the train split has ``n`` examples (val/test hold 100): step timing reads train only.
    """
    gen = torch.Generator().manual_seed(seed)

    def split(size: int) -> Split:
        return Split(torch.rand(size, *shape, generator=gen), torch.randint(0, num_classes, (size,), generator=gen))

    c, h, w = shape
    return DataSplits(name=f"synthetic:{c}x{h}x{w}" if c != 1 else f"synthetic:{h}x{w}", train=split(n),
                      val=split(100), test=split(100), num_classes=num_classes,
                      class_names=tuple(str(i) for i in range(num_classes)), input_shape=(c, h, w),
                      pixel_levels=256)


def parse_synthetic(name: str) -> tuple[int, int, int]:
    """``synthetic:28x28`` -> (1, 28, 28); ``synthetic:3x32x32`` -> (3, 32, 32)."""
    spec = name[len(SYNTHETIC_PREFIX):]
    try:
        dims = tuple(int(v) for v in spec.split("x"))
    except ValueError:
        dims = ()
    if len(dims) == 2:
        dims = (1, *dims)
    if len(dims) != 3 or min(dims) < 1:
        raise ConfigError(f"dataset={name!r}: synthetic data is named synthetic:HxW or synthetic:CxHxW, "
                          f"e.g. synthetic:28x28")
    return dims  # type: ignore[return-value]


def load_benchmark_data(name: str, root: str | None = None, *, seed: int = 0, synthetic_n: int = 60_000,
                        download: bool = False) -> DataSplits:
    """A data set by name (see :func:`bench.data.datasets.load_dataset`) or ``synthetic:HxW``."""
    if name.startswith(SYNTHETIC_PREFIX):
        return synthetic_splits(parse_synthetic(name), n=synthetic_n, seed=seed)
    return load_dataset(name, root, download=download, seed=seed)


# --------------------------------------------------------------------------------------------------
# One configuration


@dataclass(frozen=True)
class StepTimeConfig:
    """What is timed: one variant at one batch size on one device, in one execution mode."""

    variant: str
    batch_size: int
    device: str = "cpu"
    compile: bool = False
    amp: str = "none"
    cuda_graphs: bool = False
    loop: str = "harness"
    adam: str = ""

    def __post_init__(self) -> None:
        if not self.adam:
            object.__setattr__(self, "adam", usual_adam(self.loop))
        if self.adam not in ADAM_IMPLEMENTATIONS:
            raise ConfigError(f"adam={self.adam!r}: must be one of {', '.join(ADAM_IMPLEMENTATIONS)}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ConfigError(f"batch_size={self.batch_size!r}: must be an integer >= 1")
        if self.loop not in LOOPS:
            raise ConfigError(f"loop={self.loop!r}: must be one of {', '.join(LOOPS)}")
        if self.amp not in ("none", "bf16"):
            raise ConfigError(f"amp={self.amp!r}: must be none or bf16")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"device={self.device!r}: must be cpu or cuda (resolve 'auto' first)")
        if self.cuda_graphs and self.device != "cuda":
            raise ConfigError("cuda_graphs needs device cuda")
        if self.loop == "seed-loop" and (self.compile or self.cuda_graphs or self.amp != "none"
                                         or self.adam != "default"):
            raise ConfigError("the seed-loop baseline runs eager fp32 with torch's default Adam "
                              "(no compile, amp, cuda_graphs or fused Adam)")

    @property
    def mode(self) -> str:
        """eager, compile, cuda-graphs or compile+cuda-graphs."""
        if self.compile and self.cuda_graphs:
            return "compile+cuda-graphs"
        return "compile" if self.compile else "cuda-graphs" if self.cuda_graphs else "eager"

    @property
    def precision(self) -> str:
        return "bf16" if self.amp == "bf16" else "fp32"


@dataclass(frozen=True)
class TimingOptions:
    """How long to measure: ``repeats`` timed blocks of ``steps_per_block`` steps (None: ~``block_ms``)."""

    repeats: int = 10
    steps_per_block: int | None = None
    block_ms: float = 50.0
    warmup_steps: int = 5
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ConfigError(f"repeats={self.repeats!r}: must be >= 1")
        if self.steps_per_block is not None and self.steps_per_block < 1:
            raise ConfigError(f"steps_per_block={self.steps_per_block!r}: must be >= 1")
        if self.warmup_steps < 1:
            raise ConfigError(f"warmup_steps={self.warmup_steps!r}: must be >= 1")


@dataclass
class StepTimeResult:
    """One row of the steptime table / JSON ``results``. Times in ms, memory in MiB (``peak_mem_mb``).

    ``median_ms``/``iqr_ms``/``q25_ms``/``q75_ms`` are over blocks of per-step time; ``block_times_ms`` is
    each block's total. ``tflops`` = ``flops_per_step`` (matmul/conv, forward + backward) / median step
    time. ``speedup`` = samples/s over the seed loop's (same variant, data, batch, device), ``normalised``
    = median / the calibration workload's median on the same device (None when not measured).
    """

    variant: str
    dataset: str
    batch_size: int
    device: str
    device_name: str
    loop: str
    mode: str
    compile: bool
    amp: str
    cuda_graphs: bool
    adam: str
    median_ms: float
    iqr_ms: float
    q25_ms: float
    q75_ms: float
    samples_per_s: float
    peak_mem_mb: float
    peak_mem_source: str
    flops_per_step: int
    tflops: float
    steps_per_block: int
    repeats: int
    block_times_ms: list[float] = field(default_factory=list)
    final_loss: float = float("nan")
    speedup: float | None = None
    normalised: float | None = None

    @property
    def name(self) -> str:
        """Key that identifies the configuration across files (used by ``cvae-bench compare``)."""
        return result_name(self.loop, self.variant, self.dataset, self.batch_size, self.device, self.mode, self.amp,
                           self.adam)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}


def usual_adam(loop: str) -> str:
    """The seed article's ``optim.Adam`` (torch's default) for the seed loop, fused Adam for the others."""
    return "default" if loop == "seed-loop" else "fused"


def result_name(loop: str, variant: str, dataset: str, batch_size: int, device: str, mode: str, amp: str,
                adam: str = "") -> str:
    """``loop:variant/dataset/bB/device/mode/precision``, plus ``/adam-IMPL`` when a loop runs the other Adam."""
    precision = "bf16" if amp == "bf16" else "fp32"
    suffix = f"/adam-{adam}" if adam and adam != usual_adam(loop) else ""
    return f"{loop}:{variant}/{dataset}/b{batch_size}/{device}/{mode}/{precision}{suffix}"


class TimedLoop(Protocol):
    """A prepared training loop: ``prepare()`` (untimed) before each block, ``run(steps)`` timed."""

    def prepare(self) -> None: ...

    def run(self, steps: int) -> None: ...

    def last_loss(self) -> float: ...


def _weight_table(model_cfg: CVAEConfig, rows: int, device: torch.device) -> Tensor:
    return schedule_table(model_cfg.beta, rows, 1, device)


class HarnessLoop:
    """The harness's loop: data on the device, batches gathered by ``randperm`` indices.

    ``idx`` (rows, B) holds one epoch of batch indices, refilled by :meth:`prepare`; step i reads row
    ``i % rows``. With ``cuda_graphs`` a device-side counter picks the row and the schedule weight
    inside the captured graph, so a timed step is one ``graph.replay()``.
    """

    def __init__(self, model: CVAE, step_fn, data: Split, batch_size: int, device: torch.device,
                 cuda_graphs: bool, seed: int, warmup_steps: int) -> None:
        self.x, self.y = data.x, data.y
        self.batch, self.device = batch_size, device
        n = len(data)
        self.rows = max(1, n // batch_size)
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.idx = torch.empty(self.rows, batch_size, dtype=torch.long, device=device)
        self.table = _weight_table(model.cfg, self.rows, device)
        self.step_fn = step_fn
        self.stats = torch.zeros(3, device=device)
        self.counter = torch.zeros(1, dtype=torch.long, device=device)
        self.prepare()
        self.graph = _capture(self._graph_body, device, warmup_steps) if cuda_graphs else None
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
        return float(self.stats[0])


class FloorLoop:
    """The bare step on fixed input buffers: a CUDA-graph replay on CUDA (the practical floor)."""

    def __init__(self, model: CVAE, step_fn, data: Split, batch_size: int, device: torch.device,
                 cuda_graphs: bool, seed: int, warmup_steps: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        ix = torch.randint(0, len(data), (batch_size,), generator=gen).to(data.x.device)
        self.x, self.y = data.x[ix].contiguous(), data.y[ix].contiguous()
        self.weight = _weight_table(model.cfg, 1, device)[0].clone()
        self.step_fn = step_fn
        self.stats = torch.zeros(3, device=device)
        self.graph = _capture(self._graph_body, device, warmup_steps) if cuda_graphs else None
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
        return float(self.stats[0])


class SeedLoop:
    """The seed article's loop: ``DataLoader`` over per-sample CPU tensors, ``.to(device)`` each step.

    Batches are collated from ``TensorDataset.__getitem__`` (shuffled, last partial batch dropped so
    every step has ``batch_size`` samples); labels travel as class indices and are one-hot encoded per
    batch by the model; the KL weight is a CPU tensor moved each step. The iterator persists across
    blocks and restarts at the end of each epoch, as a ``for`` loop over epochs would.
    """

    def __init__(self, model: CVAE, step_fn, data: Split, batch_size: int, device: torch.device,
                 seed: int, warmup_steps: int) -> None:
        from torch.utils.data import DataLoader, TensorDataset

        if batch_size > len(data):
            raise ConfigError(f"batch_size={batch_size}: larger than the train split ({len(data)}), "
                              f"the seed loop would have no full batch")
        dataset = TensorDataset(data.x.cpu(), data.y.cpu())
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                 generator=torch.Generator().manual_seed(seed))
        self.weight = _weight_table(model.cfg, 1, torch.device("cpu"))[0].clone()
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
        return float(self.stats[0]) if self.stats is not None else float("nan")


def _capture(body: Callable[[], None], device: torch.device, warmup_steps: int) -> torch.cuda.CUDAGraph:
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


def build_loop(cfg: StepTimeConfig, model_cfg: CVAEConfig, data: DataSplits, options: TimingOptions) -> TimedLoop:
    """Model, Adam and step for ``cfg``, data moved to the device, warmed up (compiled/captured)."""
    device = torch.device(cfg.device)
    torch.manual_seed(options.seed)
    model = CVAE(model_cfg).to(device)
    optimizer = make_optimizer(model, options.lr, capturable=cfg.cuda_graphs, implementation=cfg.adam)
    if cfg.compile:
        torch._dynamo.reset()  # every configuration compiles afresh (no recompile limit, no stale guards)
    step_fn = make_train_step(model, optimizer, amp=cfg.amp, compile=cfg.compile)
    if cfg.loop == "seed-loop":
        return SeedLoop(model, step_fn, data.train, cfg.batch_size, device, options.seed, options.warmup_steps)
    split = data.train.to(device)
    cls = HarnessLoop if cfg.loop == "harness" else FloorLoop
    return cls(model, step_fn, split, cfg.batch_size, device, cfg.cuda_graphs, options.seed, options.warmup_steps)


@functools.lru_cache(maxsize=64)
def count_step_flops(model_cfg: CVAEConfig, batch_size: int, device: str) -> int:
    """Matmul/conv FLOPs of one train step (forward + backward), counted on a fresh eager fp32 model."""
    from torch.utils.flop_counter import FlopCounterMode

    dev = torch.device(device)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        model = CVAE(model_cfg).to(dev)
        step = make_train_step(model, make_optimizer(model, 1e-3))
        x = torch.rand(batch_size, *model_cfg.input_shape, device=dev)
        y = torch.randint(0, model_cfg.num_classes, (batch_size,), device=dev)
        weight = _weight_table(model_cfg, 1, dev)[0]
        with FlopCounterMode(display=False) as counter:
            step(x, y, weight)
        return int(counter.get_total_flops())


def device_name(device: torch.device) -> str:
    """The GPU model on CUDA; the CPU model and torch's thread count on CPU."""
    from bench.tracking import device_name as hardware_name

    if device.type == "cuda":
        return hardware_name(device)
    return f"{hardware_name(device)} ({torch.get_num_threads()} threads)"


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / MIB if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def measure(cfg: StepTimeConfig, data: DataSplits, options: TimingOptions = TimingOptions(),
            model_cfg: CVAEConfig | None = None) -> StepTimeResult:
    """Time one configuration on ``data`` (the seed preset of ``cfg.variant`` unless ``model_cfg``)."""
    model_cfg = model_cfg or model_config(cfg.variant, data)
    device = torch.device(cfg.device)
    flops = count_step_flops(model_cfg, cfg.batch_size, cfg.device)
    loop = build_loop(cfg, model_cfg, data, options)
    steps = options.steps_per_block or steps_for_block(loop.run, device, options.block_ms)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = time_blocks(loop.run, steps, options.repeats, device, prepare=loop.prepare)
    if device.type == "cuda":
        peak_mb, peak_source = torch.cuda.max_memory_allocated(device) / MIB, "cuda_max_memory_allocated"
    else:
        peak_mb, peak_source = _peak_rss_mb(), "process_peak_rss"
    q25, median, q75 = times.quartiles()
    result = StepTimeResult(
        variant=cfg.variant, dataset=data.name, batch_size=cfg.batch_size, device=cfg.device,
        device_name=device_name(device), loop=cfg.loop, mode=cfg.mode, compile=cfg.compile, amp=cfg.amp,
        cuda_graphs=cfg.cuda_graphs, adam=cfg.adam, median_ms=median, iqr_ms=q75 - q25, q25_ms=q25, q75_ms=q75,
        samples_per_s=cfg.batch_size / (median / 1e3), peak_mem_mb=peak_mb, peak_mem_source=peak_source,
        flops_per_step=flops, tflops=flops / (median / 1e3) / 1e12, steps_per_block=steps,
        repeats=options.repeats, block_times_ms=[t * steps for t in times.per_step_ms], final_loss=loop.last_loss())
    del loop
    release_memory(device)
    return result


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------
# Reports


def add_speedups(results: list[StepTimeResult]) -> None:
    """Set ``speedup`` = samples/s over the seed loop's at the same variant, data, batch and device."""
    seed = {(r.variant, r.dataset, r.batch_size, r.device): r.samples_per_s for r in results if r.loop == "seed-loop"}
    for r in results:
        base = seed.get((r.variant, r.dataset, r.batch_size, r.device))
        r.speedup = r.samples_per_s / base if base else None


def add_normalised(results: list[StepTimeResult], calibration: dict[str, dict[str, Any]]) -> None:
    """Set ``normalised`` = median step ms / calibration ms on the same device type."""
    for r in results:
        cal = calibration.get(r.device)
        r.normalised = r.median_ms / cal["median_ms"] if cal else None


def machine_info(devices: list[str] | tuple[str, ...] = ("cpu",)) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "cpu": device_name(torch.device("cpu")), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "cuda": torch.version.cuda,
    }
    if "cuda" in devices and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    return info


def report(results: list[StepTimeResult], calibration: dict[str, dict[str, Any]],
           machine: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: ``{"machine", "calibration", "results": [row, ...]}``."""
    return {"schema": "cvae-bench/steptime/1", "machine": machine, "calibration": calibration,
            "results": [r.to_dict() for r in results]}


TABLE_COLUMNS = ("loop", "variant", "dataset", "batch", "device", "mode", "amp", "adam", "median_ms", "iqr_ms",
                 "samples_per_s", "peak_mem_mb", "tflops", "speedup")


def table_rows(results: list[StepTimeResult]) -> list[list[str]]:
    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)

    return [[r.loop, r.variant, r.dataset, str(r.batch_size), r.device, r.mode, "bf16" if r.amp == "bf16" else "fp32",
             r.adam,
             fmt(r.median_ms, ".3f"), fmt(r.iqr_ms, ".3f"), fmt(r.samples_per_s, ",.0f"), fmt(r.peak_mem_mb, ".1f"),
             fmt(r.tflops, ".4f"), fmt(r.speedup, ".2f") + ("x" if r.speedup is not None else "")]
            for r in results]


def format_table(results: list[StepTimeResult], markdown: bool = False) -> str:
    """A plain-text (or markdown) table of the results, one row per configuration."""
    header = list(TABLE_COLUMNS)
    rows = table_rows(results)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)
