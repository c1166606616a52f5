"""Diagonal-Gaussian densities and divergences, all in nats."""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dim. (B, D) -> (B,) nats."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


def log_standard_normal(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dim. (B, D) -> (B,) nats."""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """Analytic KL(N(mu, diag(exp(logvar))) || N(0, I)) per dimension. (B, D) -> (B, D) nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I). (B, D) -> (B, D)."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
