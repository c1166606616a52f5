"""What a set of measured configurations becomes: speedup and normalised columns, the JSON, the table.

Times are milliseconds per step, ``speedup`` a ratio of samples/s, ``normalised`` a ratio of ms.
"""

from __future__ import annotations

import math
import os
import platform
from typing import Any

import torch

from bench.timing.steptime import StepTimeResult, device_name

TABLE_COLUMNS = ("loop", "variant", "dataset", "batch", "device", "mode", "amp", "adam", "median_ms", "iqr_ms",
                 "samples_per_s", "peak_mem_mb", "tflops", "speedup")


def add_speedups(results: list[StepTimeResult]) -> None:
    """Set ``speedup`` = samples/s over the seed loop's at the same variant, data, batch and device.

    ``steptime`` times the seed loop's blocks interleaved with the harness's (:func:`measure_group`),
    so both medians come from the same stretch of time and a burst of load moves both.
    """
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
    """Platform, Python, torch, CPU and (when ``"cuda"`` is among ``devices``) GPU of this machine."""
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


#: Added after :data:`TABLE_COLUMNS` when any row was counted (``steptime --instructions``).
INSTRUCTIONS_COLUMN = "instr_per_step"


def _counted(results: list[StepTimeResult]) -> bool:
    return any(r.instructions_per_step is not None for r in results)


def table_rows(results: list[StepTimeResult]) -> list[list[str]]:
    """One row of formatted cells per result, in :data:`TABLE_COLUMNS` order ("-" where unknown), plus
    :data:`INSTRUCTIONS_COLUMN` when any row was counted."""
    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)

    counted = _counted(results)
    return [[r.loop, r.variant, r.dataset, str(r.batch_size), r.device, r.mode, "bf16" if r.amp == "bf16" else "fp32",
             r.adam,
             fmt(r.median_ms, ".3f"), fmt(r.iqr_ms, ".3f"), fmt(r.samples_per_s, ",.0f"), fmt(r.peak_mem_mb, ".1f"),
             fmt(r.tflops, ".4f"), fmt(r.speedup, ".2f") + ("x" if r.speedup is not None else ""),
             *([fmt(r.instructions_per_step, ",.0f")] if counted else [])]
            for r in results]


def format_table(results: list[StepTimeResult], markdown: bool = False) -> str:
    """A plain-text (or markdown) table of the results, one row per configuration."""
    header = [*TABLE_COLUMNS, *([INSTRUCTIONS_COLUMN] if _counted(results) else [])]
    rows = table_rows(results)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)
