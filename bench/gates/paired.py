"""Wall clock of base against head, measured in pairs of interleaved blocks: a paired ratio and its interval.

Both revisions' runners hold the same benchmark, built and warmed up. Block i of base and block i of
head run back to back (ABBAAB...: the order flips every pair, so neither side always runs second), with
the same number of steps, each in its own process with the same thread count, both pinned to the same
CPUs (:func:`timing_cpus`): the scheduler cannot leave one side on a core that a neighbour keeps busy
and the other on a free one. A burst of load
lands on one pair, not on one side; the per-pair ratio head/base cancels whatever the two blocks
shared. The figure is the median of the per-pair ratios, with a 90 % bootstrap interval (pairs
resampled with replacement, a fixed seed so that a report is reproducible).
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass

from bench.errors import CLIError
from bench.gates.runner_process import RunnerProcess
from bench.timing.tracking_overhead import paired_interval

#: Steps of the probe block that sizes the timed blocks.
PROBE_STEPS = 3
INTERVAL_LEVEL = 0.9


@dataclass(frozen=True)
class PairedTimes:
    """Per-step milliseconds of each base and head block (``base_ms[i]`` ran beside ``head_ms[i]``)."""

    base_ms: tuple[float, ...]
    head_ms: tuple[float, ...]
    steps_per_block: int

    def __post_init__(self) -> None:
        if len(self.base_ms) != len(self.head_ms) or not self.base_ms:
            raise ValueError(f"{len(self.base_ms)} base and {len(self.head_ms)} head blocks: need equal, >= 1")

    @property
    def ratios(self) -> list[float]:
        """head / base of each pair (above 1: head slower)."""
        return [h / b for b, h in zip(self.base_ms, self.head_ms)]

    @property
    def ratio(self) -> float:
        """Median of the per-pair ratios."""
        return statistics.median(self.ratios)

    @property
    def interval(self) -> tuple[float, float]:
        """90 % bootstrap interval of :attr:`ratio`."""
        return paired_interval(self.ratios, level=INTERVAL_LEVEL)

    def to_dict(self) -> dict[str, object]:
        return {"base_ms": list(self.base_ms), "head_ms": list(self.head_ms), "steps_per_block": self.steps_per_block}


def timing_cpus(threads: int) -> list[int] | None:
    """The CPUs both runners are pinned to: the last ``threads`` this process may use (the first often
    takes the interrupts). None where pinning is not available (not Linux)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if threads > len(allowed):
        raise CLIError(f"--threads {threads}: this process may use {len(allowed)} CPU(s)")
    return allowed[-threads:]


def steps_for(block_ms: float, probe_ms: float, probe_steps: int = PROBE_STEPS, max_steps: int = 100_000) -> int:
    """Steps that make a block last about ``block_ms``, from a probe of ``probe_steps`` steps."""
    step_ms = max(probe_ms / probe_steps, 1e-6)
    return int(min(max_steps, max(1, math.ceil(block_ms / step_ms))))


def time_pairs(base: RunnerProcess, head: RunnerProcess, name: str, pairs: int, block_ms: float) -> PairedTimes:
    """Prepare ``name`` on both sides, then time ``pairs`` interleaved pairs of blocks of ~``block_ms``."""
    base.prepare(name)
    head.prepare(name)
    steps = steps_for(block_ms, base.time(PROBE_STEPS))
    base.time(steps)  # one untimed block each: caches, allocator, branch predictors
    head.time(steps)
    base_ms, head_ms = [], []
    for i in range(pairs):
        first, second = (base, head) if i % 2 == 0 else (head, base)
        times = {id(first): first.time(steps), id(second): second.time(steps)}
        base_ms.append(times[id(base)] / steps)
        head_ms.append(times[id(head)] / steps)
    return PairedTimes(tuple(base_ms), tuple(head_ms), steps)
