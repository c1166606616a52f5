"""The KL weight of the training loss, per optimisation step.

Schedules are tabulated once per run as a (total_steps, 2) tensor of (beta, capacity C in nats) so
that the train step reads its weight by indexing -- no host-to-device copy, no synchronisation, and
CUDA-graph friendly. The *reported* ELBO never uses these weights (beta = 1 always).
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.config import BetaConfig


def beta_at(cfg: BetaConfig, epoch: float, total_epochs: int) -> float:
    """KL weight at fractional ``epoch`` (0 = start of training)."""
    if cfg.schedule == "linear":
        return cfg.beta * min(1.0, epoch / cfg.warmup_epochs)
    if cfg.schedule == "cyclical":
        period = max(total_epochs, 1) / cfg.cycles
        phase = (epoch % period) / period
        return cfg.beta * min(1.0, phase / cfg.ratio)
    if cfg.schedule == "capacity":
        return cfg.gamma
    return cfg.beta


def capacity_at(cfg: BetaConfig, epoch: float) -> float:
    """Target KL C(epoch) in nats for the capacity schedule; 0 otherwise."""
    if cfg.schedule != "capacity":
        return 0.0
    return cfg.capacity_max * min(1.0, epoch / cfg.capacity_epochs)


def schedule_table(cfg: BetaConfig, steps_per_epoch: int, epochs: int, device: torch.device | str = "cpu") -> Tensor:
    """(epochs * steps_per_epoch, 2) float32 tensor of (beta, capacity) for every step."""
    rows = []
    for step in range(epochs * steps_per_epoch):
        t = step / steps_per_epoch
        rows.append((beta_at(cfg, t, epochs), capacity_at(cfg, t)))
    return torch.tensor(rows, dtype=torch.float32, device=device).reshape(-1, 2)


def training_loss(recon: Tensor, kl: Tensor, weight: Tensor, capacity: bool) -> Tensor:
    """Scalar loss from per-example recon (B,) and KL (B,) in nats and ``weight`` = (beta, C).

    ``beta * KL`` normally; ``gamma * |KL - C|`` for the capacity schedule (beta column holds gamma).
    """
    kl_mean = kl.mean()
    kl_term = (kl_mean - weight[1]).abs() if capacity else kl_mean
    return recon.mean() + weight[0] * kl_term
