"""The calibration workload: a fixed fp32 matrix product, timed in the same process as the steps.

A step's median divided by the calibration's median on the same device (``normalised``) is robust to
a faster or slower machine; ``cvae-bench compare --normalised`` gates on it.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from bench.timing.block_timer import steps_for_block, synchronize, time_blocks

#: Side n of the n x n x n matrix product, per device type.
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
    """Median/IQR ms of the calibration matrix product on ``device`` (same timer as the steps).

    Returns ``{"workload", "device" (type), "median_ms", "iqr_ms", "threads"}``.
    """
    workload, run_block = calibration_workload(device)
    run_block(3)
    synchronize(device)
    times = time_blocks(run_block, steps_for_block(run_block, device, block_ms), repeats, device)
    return {"workload": workload, "device": device.type, "median_ms": times.median_ms, "iqr_ms": times.iqr_ms,
            "threads": torch.get_num_threads()}
