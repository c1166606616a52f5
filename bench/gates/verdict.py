"""The gate's verdict: per benchmark, from instruction counts and the paired wall-clock interval.

A benchmark is a **regression** when its instructions per step rose by more than the instruction
threshold (percent), or when the whole 90 % interval of the paired wall-clock ratio head/base lies
above 1 + the wall threshold. It is an **improvement** when nothing regressed and its instructions
fell by more than the threshold -- or, where no instructions were counted (CUDA, ``--wall-only``),
when the whole wall interval lies below 1 - the wall threshold. Otherwise it is **unchanged**: a wall
interval that straddles a threshold is noise, not a verdict. A benchmark only one side declares is
**new** (head only) or **removed** (base only): reported, never a regression.

The gate exits 1 when a benchmark regressed or the quality gate moved, else 0 (errors: 2, elsewhere).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from bench.gates.paired import PairedTimes

REGRESSION, IMPROVEMENT, UNCHANGED, NEW, REMOVED = "regression", "improvement", "unchanged", "new", "removed"
VERDICTS = (REGRESSION, IMPROVEMENT, UNCHANGED, NEW, REMOVED)


@dataclass(frozen=True)
class Thresholds:
    """``instructions_pct``: allowed rise of instructions per step; ``wall_pct``: of the wall-clock ratio."""

    instructions_pct: float = 1.0
    wall_pct: float = 10.0


@dataclass(frozen=True)
class BenchmarkComparison:
    """One benchmark's measurements on both sides (None: not measured, or not declared on that side)."""

    name: str
    in_base: bool = True
    in_head: bool = True
    base_instructions: float | None = None
    head_instructions: float | None = None
    wall: PairedTimes | None = None

    @property
    def instructions_change_pct(self) -> float | None:
        """(head - base) / base instructions per step, percent (positive: more work)."""
        if self.base_instructions is None or self.head_instructions is None:
            return None
        return (self.head_instructions - self.base_instructions) / self.base_instructions * 100.0

    @property
    def wall_ratio(self) -> float | None:
        return self.wall.ratio if self.wall else None

    @property
    def wall_interval(self) -> tuple[float, float] | None:
        return self.wall.interval if self.wall else None

    def verdict(self, thresholds: Thresholds) -> str:
        if not self.in_base:
            return NEW
        if not self.in_head:
            return REMOVED
        change, interval = self.instructions_change_pct, self.wall_interval
        wall_slower = interval is not None and interval[0] > 1.0 + thresholds.wall_pct / 100.0
        if wall_slower or (change is not None and change > thresholds.instructions_pct):
            return REGRESSION
        if change is not None:
            return IMPROVEMENT if change < -thresholds.instructions_pct else UNCHANGED
        if interval is not None and interval[1] < 1.0 - thresholds.wall_pct / 100.0:
            return IMPROVEMENT
        return UNCHANGED

    def to_dict(self, thresholds: Thresholds) -> dict[str, Any]:
        """The JSON row: the issue's schema first, then the wall-clock figures it was decided on."""
        interval = self.wall_interval
        row: dict[str, Any] = {
            "name": self.name, "base_instructions": self.base_instructions,
            "head_instructions": self.head_instructions, "instructions_change_pct": self.instructions_change_pct,
            "wall_ratio": self.wall_ratio, "wall_interval": list(interval) if interval else None,
            "verdict": self.verdict(thresholds),
        }
        if self.wall is not None:
            row["base_wall_ms"] = statistics.median(self.wall.base_ms)
            row["head_wall_ms"] = statistics.median(self.wall.head_ms)
            row["wall_blocks"] = self.wall.to_dict()
        return row


def regressions(rows: list[BenchmarkComparison], thresholds: Thresholds) -> list[BenchmarkComparison]:
    return [r for r in rows if r.verdict(thresholds) == REGRESSION]


def exit_code(rows: list[BenchmarkComparison], thresholds: Thresholds, quality_code: int | None) -> int:
    """0: nothing regressed; 1: a benchmark regressed or the quality gate moved; 2: the quality gate failed."""
    if quality_code not in (None, 0, 1):
        return 2
    return 1 if regressions(rows, thresholds) or quality_code == 1 else 0


def _instructions(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:.3f} M"


def _wall(row: BenchmarkComparison) -> str:
    if row.wall is None:
        return "-"
    lo, hi = row.wall_interval
    return f"{row.wall_ratio:.3f} [{lo:.3f}, {hi:.3f}]"


def format_table(rows: list[BenchmarkComparison], thresholds: Thresholds) -> str:
    """benchmark, base and head instructions per step, change, wall ratio head/base [90 % interval], verdict."""
    header = ["benchmark", "base (instr/step)", "head (instr/step)", "change", "wall head/base [90% CI]", "verdict"]
    body = []
    for r in rows:
        change = r.instructions_change_pct
        body.append([r.name, _instructions(r.base_instructions), _instructions(r.head_instructions),
                     "-" if change is None or math.isnan(change) else f"{change:+.2f}%", _wall(r),
                     r.verdict(thresholds).upper() if r.verdict(thresholds) == REGRESSION else r.verdict(thresholds)])
    widths = [max(len(header[i]), *(len(line[i]) for line in body)) for i in range(len(header))]
    lines = [header, *body]
    return "\n".join("  ".join(v.ljust(w) if i in (0, 5) else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths)))
                     .rstrip() for line in lines)
