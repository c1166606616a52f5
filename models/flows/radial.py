"""Radial flow (Rezende & Mohamed 2015) with parameters amortised from the encoder features.

Each layer is f(z) = z + beta h(alpha, r) (z - z_ref), h = 1 / (alpha + r), r = ||z - z_ref||,
with per-example reference point z_ref (D) and scalars alpha > 0, beta >= -alpha.
(The paper calls the reference point z0; here z0 is the flow's input sample.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.flows.base import LatentFlow

LOG_EPS = 1e-8
"""Added to the |.| of both det factors before the log; with beta >= -alpha both are >= 0."""


def radial_constraints(alpha_raw: Tensor, beta_raw: Tensor) -> tuple[Tensor, Tensor]:
    """alpha = softplus(alpha_raw) > 0 and beta = -alpha + softplus(beta_raw) >= -alpha (invertibility)."""
    alpha = F.softplus(alpha_raw)
    beta = -alpha + F.softplus(beta_raw)
    return alpha, beta


def radial_step(z: Tensor, z_ref: Tensor, alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """One radial layer: z (B, D), z_ref (B, D), alpha (B,), beta (B,) -> (f(z) (B, D), log|det| (B,) in nats).

    log|det| = (D - 1) log(1 + beta h) + log(1 + beta h + beta h'(alpha, r) r), h' = -1 / (alpha + r)^2.
    ``alpha`` and ``beta`` are used as given: pass them through :func:`radial_constraints`.
    """
    diff = z - z_ref
    r = torch.linalg.vector_norm(diff, dim=-1)  # its gradient at r = 0 is 0, not NaN
    h = 1.0 / (alpha + r)
    h_prime = -h * h
    beta_h = beta * h
    f = z + beta_h.unsqueeze(-1) * diff
    d = z.shape[-1]
    log_det = ((d - 1) * torch.log((1.0 + beta_h).abs() + LOG_EPS)
               + torch.log((1.0 + beta_h + beta * h_prime * r).abs() + LOG_EPS))
    return f, log_det


class RadialFlow(LatentFlow):
    """K radial layers whose (z_ref, alpha, beta) come per example from one linear layer on h (B, H).

    ``amortiser`` maps h to (B, K * (D + 2)) values, laid out per layer k as
    [z_ref (D) | alpha_raw (1) | beta_raw (1)].
    """

    def __init__(self, latent_dim: int, feature_dim: int, length: int) -> None:
        super().__init__(latent_dim, feature_dim)
        if length < 1:
            raise ValueError(f"length={length}: must be >= 1")
        self.length = length
        self.amortiser = nn.Linear(feature_dim, length * (latent_dim + 2))

    def raw_params(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Unconstrained (z_ref (B, K, D), alpha_raw (B, K), beta_raw (B, K)) for features h (B, H)."""
        d = self.latent_dim
        raw = self.amortiser(h).view(h.shape[0], self.length, d + 2)
        return raw[..., :d], raw[..., d], raw[..., d + 1]

    def forward(self, z0: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (zK (B, D), sum_log_det (B,)) where sum_log_det = sum_k log|det df_k/dz_{k-1}| in nats."""
        self.check_inputs(z0, h)
        z_ref, alpha_raw, beta_raw = self.raw_params(h)
        alpha, beta = radial_constraints(alpha_raw, beta_raw)
        z = z0
        sum_log_det = z0.new_zeros(z0.shape[0])
        for k in range(self.length):
            z, log_det = radial_step(z, z_ref[:, k], alpha[:, k], beta[:, k])
            sum_log_det = sum_log_det + log_det
        return z, sum_log_det
