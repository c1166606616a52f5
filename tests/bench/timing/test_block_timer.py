"""The block timer: per-step ms of timed blocks, the block statistics, and the steps per block."""

from __future__ import annotations

import time

import pytest
import torch

from bench.timing.block_timer import BlockTimes, steps_for_block, time_blocks

CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def sleeper(seconds: float):
    calls = []

    def run_block(steps: int) -> None:
        for _ in range(steps):
            time.sleep(seconds)
        calls.append(steps)

    return run_block, calls


def test_timer_reports_a_known_per_step_cost():
    run_block, calls = sleeper(0.02)
    times = time_blocks(run_block, steps=3, repeats=3, device=CPU)
    assert calls == [3, 3, 3]
    assert len(times.per_step_ms) == 3
    # sleep never returns early; scheduling may add a little on a loaded machine
    assert 19.9 <= times.median_ms <= 30.0
    assert times.iqr_ms < 10.0


def test_timer_leaves_prepare_out_of_the_timed_block():
    run_block, _ = sleeper(0.01)
    times = time_blocks(run_block, steps=2, repeats=2, device=CPU, prepare=lambda: time.sleep(0.05))
    assert 9.9 <= times.median_ms <= 20.0  # 35 ms per step if the 50 ms prepare were counted


def test_block_statistics_are_median_and_interquartile_range():
    times = BlockTimes((5.0, 1.0, 4.0, 2.0, 3.0), steps_per_block=10)
    assert times.median_ms == 3.0
    assert times.quartiles() == (2.0, 3.0, 4.0)
    assert times.iqr_ms == 2.0


def test_steps_per_block_fill_the_target_block_length():
    run_block, _ = sleeper(0.01)
    steps = steps_for_block(run_block, CPU, block_ms=60.0)
    assert 3 <= steps <= 6  # about 60 ms / 10 ms


def test_timer_rejects_empty_blocks():
    with pytest.raises(ValueError):
        time_blocks(lambda n: None, steps=0, repeats=1, device=CPU)


@needs_cuda
def test_cuda_timer_matches_a_synchronised_wall_clock():
    device = torch.device("cuda")
    a = torch.randn(4096, 4096, device=device)

    def run_block(steps: int) -> None:
        for _ in range(steps):
            a @ a

    run_block(3)
    torch.cuda.synchronize()
    times = time_blocks(run_block, steps=20, repeats=5, device=device)
    t0 = time.perf_counter()
    run_block(100)
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - t0) * 1e3 / 100
    assert times.median_ms == pytest.approx(wall_ms, rel=0.15)
