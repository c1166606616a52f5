"""Timing blocks of steps: one clock reading per block, never one per step.

On CUDA a block is bracketed by two CUDA events on the current stream and synchronised once, after
its end event; the block itself never synchronises. On CPU a block is bracketed by
``time.perf_counter`` (monotonic). Every time is milliseconds per step: a block's time / its steps.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class BlockTimes:
    """Per-step milliseconds of each timed block (a block's time divided by its steps)."""

    per_step_ms: tuple[float, ...]
    steps_per_block: int

    def quartiles(self) -> tuple[float, float, float]:
        """(q25, median, q75) of the per-step ms over blocks (inclusive method)."""
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
    """Wait for ``device``'s queued work (CUDA); a no-op on CPU."""
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
