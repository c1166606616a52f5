"""The timed loops: the harness loop trains the model, and on CUDA never synchronises, captured or not."""

from __future__ import annotations

import pytest
import torch

from bench.data import synthetic_splits
from bench.timing.loops import HarnessLoop

CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_harness_loop_trains_the_model(digits):
    from bench.training.presets import model_config
    from bench.training.step import make_optimizer, make_train_step
    from models import CVAE

    torch.manual_seed(0)
    model = CVAE(model_config("cvae", digits))
    step = make_train_step(model, make_optimizer(model, 1e-3))
    loop = HarnessLoop(model, step, digits.train, 64, CPU, cuda_graphs=False, seed=0, warmup_steps=1)
    first = loop.last_loss()
    for _ in range(3):
        loop.prepare()
        loop.run(loop.rows)
    assert loop.last_loss() < first - 5.0  # nats: a few epochs on digits lower the loss clearly


@needs_cuda
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_cuda_harness_loop_never_synchronises(digits, cuda_graphs):
    from bench.training.presets import model_config
    from bench.training.step import make_optimizer, make_train_step
    from models import CVAE

    device = torch.device("cuda")
    model = CVAE(model_config("flow-cvae", digits)).to(device)
    step = make_train_step(model, make_optimizer(model, 1e-3, capturable=cuda_graphs))
    loop = HarnessLoop(model, step, digits.train.to(device), 64, device, cuda_graphs, seed=0, warmup_steps=3)
    loop.prepare()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loop.run(10)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(torch.tensor(loop.last_loss()))


@needs_cuda
def test_cuda_graph_step_trains_like_the_eager_step():
    """The captured step (gather, counter, schedule, Adam) lowers the loss as the eager one does."""
    from bench.training.presets import model_config
    from bench.training.step import make_optimizer, make_train_step
    from models import CVAE

    data = synthetic_splits((1, 28, 28), 10, n=2048)
    device = torch.device("cuda")
    losses = {}
    for graphs in (False, True):
        torch.manual_seed(0)
        model = CVAE(model_config("beta-cvae", data)).to(device)
        step = make_train_step(model, make_optimizer(model, 1e-3, capturable=graphs))
        loop = HarnessLoop(model, step, data.train.to(device), 64, device, graphs, seed=0, warmup_steps=3)
        start = loop.last_loss()
        for _ in range(5):
            loop.prepare()
            loop.run(loop.rows)
        losses[graphs] = (start, loop.last_loss())
    for start, end in losses.values():
        assert end < start
    assert losses[True][1] == pytest.approx(losses[False][1], rel=0.1)


def test_the_timed_harness_loop_is_the_one_fit_trains_with():
    from bench.training import harness_loop, loop

    assert HarnessLoop is harness_loop.HarnessLoop is loop.HarnessLoop
