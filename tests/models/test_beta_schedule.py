"""KL weighting of the training loss: the four beta schedules, their per-step table, and the loss."""

from __future__ import annotations

import pytest
import torch

from models import BetaConfig, schedule_table, training_loss
from models.beta_schedule import beta_at, capacity_at


def test_constant_schedule_is_beta_everywhere():
    cfg = BetaConfig(schedule="constant", beta=4.0)
    table = schedule_table(cfg, steps_per_epoch=7, epochs=5)
    assert table.shape == (35, 2)
    assert torch.all(table[:, 0] == 4.0) and torch.all(table[:, 1] == 0.0)


def test_linear_warmup_reaches_beta_at_warmup_epochs():
    cfg = BetaConfig(schedule="linear", beta=2.0, warmup_epochs=4)
    assert beta_at(cfg, 0.0, 10) == 0.0
    assert beta_at(cfg, 1.0, 10) == pytest.approx(0.5)
    assert beta_at(cfg, 2.0, 10) == pytest.approx(1.0)
    assert beta_at(cfg, 3.99, 10) < 2.0
    assert beta_at(cfg, 4.0, 10) == pytest.approx(2.0)
    assert beta_at(cfg, 9.5, 10) == pytest.approx(2.0)
    steps = 5
    table = schedule_table(cfg, steps_per_epoch=steps, epochs=10)[:, 0]
    assert torch.all(table.diff() >= 0)                        # never decreases
    assert table[4 * steps - 1] < 2.0 and table[4 * steps] == pytest.approx(2.0)
    assert torch.all(table[4 * steps:] == table[4 * steps])    # flat afterwards


def test_cyclical_schedule_restarts_each_cycle():
    cfg = BetaConfig(schedule="cyclical", beta=1.0, cycles=4, ratio=0.5)
    epochs, steps = 8, 10  # period of 2 epochs = 20 steps; rises over the first 10 steps of each
    table = schedule_table(cfg, steps_per_epoch=steps, epochs=epochs)[:, 0]
    period = epochs * steps // cfg.cycles
    for c in range(cfg.cycles):
        cycle = table[c * period:(c + 1) * period]
        assert cycle[0] == 0.0                                  # restart
        assert torch.all(cycle[:period // 2].diff() > 0)        # linear rise over `ratio` of the cycle
        assert torch.all(cycle[period // 2:] == 1.0)            # then flat at beta
        torch.testing.assert_close(cycle, table[:period])        # every cycle is the same
    assert beta_at(cfg, 0.5, epochs) == pytest.approx(0.5)


def test_cyclical_schedule_uses_beta_and_ratio():
    """beta = 3, ratio = 0.25: each cycle rises to 3 over its first quarter (the test above has beta = 1
    and ratio = 0.5 only, which a schedule ignoring either option would also produce)."""
    cfg = BetaConfig(schedule="cyclical", beta=3.0, cycles=2, ratio=0.25)
    epochs, steps = 4, 8  # period of 2 epochs = 16 steps; rises over the first 4 steps of each
    table = schedule_table(cfg, steps_per_epoch=steps, epochs=epochs)[:, 0]
    expected_cycle = torch.tensor([0.0, 0.75, 1.5, 2.25] + [3.0] * 12)
    torch.testing.assert_close(table, expected_cycle.repeat(2))
    assert beta_at(cfg, 0.25, epochs) == pytest.approx(1.5)  # half way up the first rise
    assert beta_at(cfg, 2.25, epochs) == pytest.approx(1.5)  # and of the second


def test_capacity_rises_to_its_max_and_gamma_weights_the_gap():
    cfg = BetaConfig(schedule="capacity", gamma=50.0, capacity_max=10.0, capacity_epochs=5)
    assert capacity_at(cfg, 0.0) == 0.0
    assert capacity_at(cfg, 2.5) == pytest.approx(5.0)
    assert capacity_at(cfg, 5.0) == pytest.approx(10.0)
    assert capacity_at(cfg, 8.0) == pytest.approx(10.0)
    assert capacity_at(BetaConfig(schedule="linear"), 3.0) == 0.0
    table = schedule_table(cfg, steps_per_epoch=4, epochs=8)
    assert torch.all(table[:, 0] == 50.0)                       # the beta column carries gamma
    assert torch.all(table[:, 1].diff() >= 0) and table[-1, 1] == pytest.approx(10.0)
    assert table[4 * 5, 1] == pytest.approx(10.0) and table[4 * 5 - 1, 1] < 10.0


def test_training_loss_weights_the_kl_by_beta():
    recon = torch.tensor([10.0, 20.0])
    kl = torch.tensor([3.0, 5.0])
    loss = training_loss(recon, kl, torch.tensor([0.25, 0.0]), capacity=False)
    assert loss.item() == pytest.approx(15.0 + 0.25 * 4.0)
    assert training_loss(recon, kl, torch.tensor([1.0, 0.0]), capacity=False).item() == pytest.approx(19.0)


@pytest.mark.parametrize("c, expected_gap", [(1.0, 3.0), (7.0, 3.0), (4.0, 0.0)])
def test_capacity_loss_is_gamma_times_abs_kl_minus_c(c, expected_gap):
    recon = torch.tensor([10.0, 20.0])
    kl = torch.tensor([3.0, 5.0], requires_grad=True)  # mean KL 4
    loss = training_loss(recon, kl, torch.tensor([100.0, c]), capacity=True)
    assert loss.item() == pytest.approx(15.0 + 100.0 * expected_gap)
    if expected_gap:  # the gradient pushes the KL towards C from either side
        loss.backward()
        assert torch.all(torch.sign(kl.grad) == (1.0 if 4.0 > c else -1.0))
