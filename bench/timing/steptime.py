"""Time the whole train step -- forward, loss, backward, Adam -- of one configuration.

How a configuration is measured
-------------------------------
1. Build the model and the step with :func:`bench.training.step.make_train_step` (the step ``fit`` uses),
   and the loop that runs it (:mod:`bench.timing.loops`: ``harness``, ``seed-loop`` or ``floor``).
2. Warm up: run steps untimed until compilation (``torch.compile``) and capture (CUDA graphs) are done.
3. Pick the steps per block so that one block lasts about ``block_ms``, then time ``repeats`` blocks
   (:mod:`bench.timing.block_timer`). On CUDA a block is bracketed by two CUDA events and synchronised
   once, after its end event; the loop itself never synchronises. On CPU a block is bracketed by
   ``time.perf_counter`` (monotonic). Configurations measured together (:func:`measure_group`: the
   seed loop, the floor and the harness of one variant and batch size) are built first, then their
   blocks are interleaved -- one block of each in turn, the order reversed every round -- so that a
   burst of load on the machine lands on all of them, and their ratio (``speedup``) holds.
4. Report, over blocks, the median and interquartile range of the per-step time (ms), samples/s at
   the median, peak memory, and the achieved TFLOP/s (matmul/conv FLOPs of one step counted with
   ``torch.utils.flop_counter.FlopCounterMode``, divided by the median step time).

Peak memory
-----------
CUDA: ``torch.cuda.max_memory_allocated`` over the timed blocks (reset after the warm-up): everything
resident on the device -- data set, parameters, Adam state, CUDA-graph pools -- plus activations. In an
interleaved group every loop is resident at once: the figure is the group's (``peak_mem_source`` says so).
CPU: the process's peak resident set size (``ru_maxrss``) when the configuration ends: a
high-water mark since the process started, not a per-configuration figure.
"""

from __future__ import annotations

import functools
import gc
import resource
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from bench.data.splits import DataSplits
from bench.timing.block_timer import BlockTimes, steps_for_block, time_blocks
from bench.timing.loops import LOOPS, FloorLoop, HarnessLoop, SeedLoop, TimedLoop, kl_weights
from bench.training.config import resolve_device
from bench.training.presets import model_config
from bench.training.step import ADAM_IMPLEMENTATIONS, make_optimizer, make_train_step
from models import CVAE, CVAEConfig
from models.config import ConfigError

MIB = 2 ** 20


# --------------------------------------------------------------------------------------------------
# What is timed, and for how long


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


def usual_adam(loop: str) -> str:
    """The seed article's ``optim.Adam`` (torch's default) for the seed loop, fused Adam for the others."""
    return "default" if loop == "seed-loop" else "fused"


# --------------------------------------------------------------------------------------------------
# What a measurement reports


@dataclass
class StepTimeResult:
    """One row of the steptime table / JSON ``results``. Times in ms, memory in MiB (``peak_mem_mb``).

    ``median_ms``/``iqr_ms``/``q25_ms``/``q75_ms`` are over blocks of per-step time; ``block_times_ms`` is
    each block's total. ``tflops`` = ``flops_per_step`` (matmul/conv, forward + backward) / median step
    time. ``speedup`` = samples/s over the seed loop's (same variant, data, batch, device), ``normalised``
    = median / the calibration workload's median on the same device (None when not measured).
    ``instructions_per_step``: instructions of one step under callgrind, one thread (CPU, ``--instructions``).
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
    instructions_per_step: float | None = None

    @property
    def name(self) -> str:
        """Key that identifies the configuration across files (used by ``cvae-bench compare``)."""
        return result_name(self.loop, self.variant, self.dataset, self.batch_size, self.device, self.mode, self.amp,
                           self.adam)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}


def result_name(loop: str, variant: str, dataset: str, batch_size: int, device: str, mode: str, amp: str,
                adam: str = "") -> str:
    """``loop:variant/dataset/bB/device/mode/precision``, plus ``/adam-IMPL`` when a loop runs the other Adam."""
    precision = "bf16" if amp == "bf16" else "fp32"
    suffix = f"/adam-{adam}" if adam and adam != usual_adam(loop) else ""
    return f"{loop}:{variant}/{dataset}/b{batch_size}/{device}/{mode}/{precision}{suffix}"


# --------------------------------------------------------------------------------------------------
# Measuring one configuration


def build_loop(cfg: StepTimeConfig, model_cfg: CVAEConfig, data: DataSplits, options: TimingOptions) -> TimedLoop:
    """Model, Adam and step for ``cfg``, data moved to the device, warmed up (compiled/captured)."""
    device = resolve_device(cfg.device)
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

    dev = resolve_device(device)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        model = CVAE(model_cfg).to(dev)
        step = make_train_step(model, make_optimizer(model, 1e-3))
        x = torch.rand(batch_size, *model_cfg.input_shape, device=dev)
        y = torch.randint(0, model_cfg.num_classes, (batch_size,), device=dev)
        weight = kl_weights(model_cfg, 1, dev)[0]
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
    return measure_group([cfg], data, options, model_cfg)[0]


def measure_group(cfgs: list[StepTimeConfig], data: DataSplits, options: TimingOptions = TimingOptions(),
                  model_cfg: CVAEConfig | None = None) -> list[StepTimeResult]:
    """Time configurations of one device together: all built and warmed up, then their blocks interleaved.

    Round r times one block of each configuration, in the given order when r is even and reversed when
    it is odd; each configuration keeps its own steps per block. One result per configuration, in order.
    """
    if len({cfg.device for cfg in cfgs}) != 1:
        raise ConfigError(f"an interleaved group runs on one device, not {sorted({c.device for c in cfgs})}")
    device = resolve_device(cfgs[0].device)
    built = []
    for cfg in cfgs:
        config = model_cfg or model_config(cfg.variant, data)
        flops = count_step_flops(config, cfg.batch_size, cfg.device)
        loop = build_loop(cfg, config, data, options)
        steps = options.steps_per_block or steps_for_block(loop.run, device, options.block_ms)
        built.append((cfg, loop, steps, flops))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    per_step: list[list[float]] = [[] for _ in built]
    for r in range(options.repeats):
        for i in (range(len(built)) if r % 2 == 0 else reversed(range(len(built)))):
            _, loop, steps, _ = built[i]
            per_step[i].extend(time_blocks(loop.run, steps, 1, device, prepare=loop.prepare).per_step_ms)
    if device.type == "cuda":
        peak_mb, peak_source = torch.cuda.max_memory_allocated(device) / MIB, "cuda_max_memory_allocated"
        if len(built) > 1:
            peak_source += f" (group of {len(built)} interleaved loops)"
    else:
        peak_mb, peak_source = _peak_rss_mb(), "process_peak_rss"
    results = []
    for (cfg, loop, steps, flops), times_ms in zip(built, per_step):
        q25, median, q75 = BlockTimes(tuple(times_ms), steps).quartiles()
        results.append(StepTimeResult(
            variant=cfg.variant, dataset=data.name, batch_size=cfg.batch_size, device=cfg.device,
            device_name=device_name(device), loop=cfg.loop, mode=cfg.mode, compile=cfg.compile, amp=cfg.amp,
            cuda_graphs=cfg.cuda_graphs, adam=cfg.adam, median_ms=median, iqr_ms=q75 - q25, q25_ms=q25, q75_ms=q75,
            samples_per_s=cfg.batch_size / (median / 1e3), peak_mem_mb=peak_mb, peak_mem_source=peak_source,
            flops_per_step=flops, tflops=flops / (median / 1e3) / 1e12, steps_per_block=steps,
            repeats=options.repeats, block_times_ms=[t * steps for t in times_ms], final_loss=loop.last_loss()))
    del built, loop
    release_memory(device)
    return results


def release_memory(device: torch.device) -> None:
    """Free what a finished configuration left: garbage, and CUDA's cached blocks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
