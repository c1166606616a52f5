"""torch's CPU threads: the default share of the cores, and a block that sets them and restores the caller's."""

import pytest
import torch

from bench.training import torch_threads
from bench.training.config import default_cpu_threads


@pytest.mark.parametrize("cores,jobs,expected", [(2, 1, 1), (16, 1, 8), (16, 3, 2), (16, 16, 1), (1, 1, 1)])
def test_default_cpu_threads_is_half_the_cores_shared_among_the_jobs(monkeypatch, cores, jobs, expected):
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert default_cpu_threads(jobs) == expected


def test_torch_threads_restores_the_callers_count_even_when_the_block_raises():
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with torch_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="boom"):
        with torch_threads(target):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
