"""The step benchmarks, declared once: the pytest-benchmark targets and ``cvae-bench gate`` run these.

A step benchmark is one harness train step -- the batch gathered from tensors on the device, forward,
loss, backward, fused Adam -- of a variant's seed preset on ``digits`` at one batch size on one
device, named ``train-step/<variant>/b<batch>/<device>`` (e.g. ``train-step/cvae/b64/cpu``).

What ``cvae-bench gate`` needs from a revision it measures: this module, importable from the
revision's source tree, with

- ``benchmark_names(device) -> list[str]``: the benchmarks of a device (``"cpu"``, ``"cuda"``);
- ``prepare(name) -> run``: builds that benchmark and warms it up; ``run(steps)`` then runs ``steps``
  steps (on CUDA it queues them: the caller synchronises).

A revision without it (older than the gate) cannot be gated: the gate says so in one line.
Importing this module imports no torch; :func:`prepare` does.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

    from bench.data.splits import DataSplits
    from bench.timing.loops import HarnessLoop

VARIANTS = ("cvae", "beta-cvae", "flow-cvae")
BATCH_SIZES = (64, 256)
DEVICES = ("cpu", "cuda")
DATASET = "digits"
#: Untimed steps before a benchmark is measured (fused Adam's state, allocator caches).
WARMUP_STEPS = 5

_NAME = re.compile(r"^train-step/(?P<variant>[a-z-]+)/b(?P<batch>[1-9][0-9]*)/(?P<device>[a-z]+)$")


def benchmark_name(variant: str, batch_size: int, device: str) -> str:
    return f"train-step/{variant}/b{batch_size}/{device}"


def benchmark_names(device: str = "cpu") -> list[str]:
    """Every step benchmark of ``device``: each variant at each batch size."""
    return [benchmark_name(variant, batch, device) for variant in VARIANTS for batch in BATCH_SIZES]


def parse_name(name: str) -> tuple[str, int, str]:
    """``train-step/<variant>/b<batch>/<device>`` -> (variant, batch size, device); ValueError otherwise."""
    match = _NAME.match(name)
    if not match or match["variant"] not in VARIANTS or match["device"] not in DEVICES:
        raise ValueError(f"unknown benchmark {name!r}: names are train-step/<{'|'.join(VARIANTS)}>/b<batch>/"
                         f"<{'|'.join(DEVICES)}>")
    return match["variant"], int(match["batch"]), match["device"]


def harness_loop(variant: str, batch_size: int, device: torch.device, data: DataSplits,
                 warmup_steps: int = WARMUP_STEPS) -> HarnessLoop:
    """The loop one benchmark times: seed-0 model of ``variant``'s preset, fused Adam, ``data.train`` on
    ``device``, warmed up by ``warmup_steps`` steps."""
    import torch

    from bench.timing.loops import HarnessLoop
    from bench.training.presets import model_config
    from bench.training.step import make_optimizer, make_train_step
    from models import CVAE

    torch.manual_seed(0)
    model = CVAE(model_config(variant, data)).to(device)
    step = make_train_step(model, make_optimizer(model, 1e-3))
    return HarnessLoop(model, step, data.train.to(device), batch_size, device, cuda_graphs=False, seed=0,
                       warmup_steps=warmup_steps)


def prepare(name: str, data: DataSplits | None = None) -> Callable[[int], None]:
    """Build the benchmark ``name`` (on ``data``, default :data:`DATASET`), warmed up; returns ``run(steps)``."""
    import torch

    from bench.data import load_dataset

    variant, batch_size, device = parse_name(name)
    loop = harness_loop(variant, batch_size, torch.device(device), data or load_dataset(DATASET))
    return loop.run
