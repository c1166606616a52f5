"""Timing: step-time loops, calibration, reports, the GPU sweep, tracking overhead.

``measure(StepTimeConfig(...), data, TimingOptions(...))`` times one configuration (ms per step over
timed blocks), ``measure_group`` several with their blocks interleaved; :mod:`~bench.timing.report` turns
results into the table and JSON. :mod:`~bench.timing.benchmarks` declares the step benchmarks (pytest-benchmark
targets, ``cvae-bench gate``); :mod:`~bench.timing.callgrind` and :mod:`~bench.timing.instructions` count
instructions per step under valgrind. Scripts:
``python -m bench.timing.gpu_sweep`` and ``python -m bench.timing.tracking_overhead`` (stdlib only).
Names load on first use, so that the stdlib-only script does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.timing.block_timer import BlockTimes, steps_for_block, synchronize, time_blocks
    from bench.timing.calibration import calibration_workload, measure_calibration
    from bench.timing.loops import LOOPS, FloorLoop, HarnessLoop, SeedLoop, TimedLoop
    from bench.timing.report import add_normalised, add_speedups, format_table, machine_info, report
    from bench.timing.steptime import (
        StepTimeConfig,
        StepTimeResult,
        TimingOptions,
        count_step_flops,
        measure,
        measure_group,
        release_memory,
        result_name,
    )

_FACE = {
    "bench.timing.block_timer": ("BlockTimes", "steps_for_block", "synchronize", "time_blocks"),
    "bench.timing.calibration": ("calibration_workload", "measure_calibration"),
    "bench.timing.loops": ("LOOPS", "FloorLoop", "HarnessLoop", "SeedLoop", "TimedLoop"),
    "bench.timing.report": ("add_normalised", "add_speedups", "format_table", "machine_info", "report"),
    "bench.timing.steptime": ("StepTimeConfig", "StepTimeResult", "TimingOptions", "count_step_flops", "measure",
                              "measure_group", "release_memory", "result_name"),
}
_WHERE = {name: module for module, names in _FACE.items() for name in names}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'bench.timing' has no attribute {name!r}")
