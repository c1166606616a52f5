"""Step-time regression benchmarks (pytest-benchmark): each variant's train step at two batch sizes.

The targets are the step benchmarks declared in :mod:`bench.timing.benchmarks` (the ones
``cvae-bench gate`` counts and times). The normal test run passes ``--benchmark-disable`` (pyproject),
so each target runs once as a smoke test. The pytest-benchmark recipe enables them::

    pytest tests/bench/timing/test_benchmarks.py --benchmark-enable --benchmark-autosave   # on the base commit
    pytest tests/bench/timing/test_benchmarks.py --benchmark-enable --benchmark-compare \\
        --benchmark-compare-fail=median:15%                                              # on the candidate

Shared CI machines drift, so a calibration workload (a fixed fp32 matrix product) is measured in the
same session and every benchmark stores ``extra_info["normalised"]`` = its median / the calibration
median; ``cvae-bench compare BASE.json HEAD.json --normalised`` gates on that figure.

A timed target is one harness step (batch gathered from device tensors, forward, loss, backward,
Adam); on CUDA the target synchronises after the step, so pytest-benchmark's wall clock sees the GPU
work, and warm-up rounds run first (pedantic mode).
"""

from __future__ import annotations

import pytest
import torch

from bench.timing.benchmarks import BATCH_SIZES, VARIANTS, benchmark_name, harness_loop
from bench.timing.block_timer import synchronize
from bench.timing.calibration import calibration_workload, measure_calibration

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]
ROUNDS = {"cpu": 30, "cuda": 100}
WARMUP_ROUNDS = 5


@pytest.fixture(scope="session")
def calibration_ms():
    """Median ms of the calibration matrix product per device, measured once in this session."""
    cache: dict[str, float] = {}

    def get(device: str) -> float:
        if device not in cache:
            cache[device] = measure_calibration(torch.device(device), repeats=7)["median_ms"]
        return cache[device]

    return get


def record(benchmark, calibration_ms: float, **info) -> None:
    """Store the calibration and, when the benchmark was timed, median / calibration median."""
    benchmark.extra_info.update(info)
    benchmark.extra_info["calibration_ms"] = calibration_ms
    if benchmark.enabled:  # disabled (the default test run): the target ran once, untimed
        median_ms = benchmark.stats.stats.median * 1e3
        benchmark.extra_info["normalised"] = median_ms / calibration_ms
        assert benchmark.extra_info["normalised"] > 0


@pytest.mark.parametrize("device", DEVICES)
def test_calibration(benchmark, device, calibration_ms):
    dev = torch.device(device)
    benchmark.group = f"calibration-{device}"
    workload, run_block = calibration_workload(dev)

    def target() -> None:
        run_block(1)
        synchronize(dev)

    benchmark.pedantic(target, rounds=ROUNDS[device], warmup_rounds=WARMUP_ROUNDS)
    record(benchmark, calibration_ms(device), workload=workload, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_train_step(benchmark, digits, variant, batch_size, device, calibration_ms):
    dev = torch.device(device)
    benchmark.group = f"train-step-{device}-b{batch_size}"
    loop = harness_loop(variant, batch_size, dev, digits, warmup_steps=1)

    def target() -> None:
        loop.run(1)
        synchronize(dev)

    benchmark.pedantic(target, rounds=ROUNDS[device], warmup_rounds=WARMUP_ROUNDS)
    loss = loop.last_loss()
    assert torch.isfinite(torch.tensor(loss)), f"{variant} step produced loss {loss}"
    record(benchmark, calibration_ms(device), variant=variant, batch_size=batch_size, device=device,
           dataset="digits", gate_name=benchmark_name(variant, batch_size, device))
