"""Planar flow (Rezende & Mohamed 2015) with parameters amortised from the encoder features.

Each layer is f(z) = z + u_hat * tanh(w.z + b) with per-example u, w (D) and b (scalar).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.flows.base import LatentFlow

NORM_EPS = 1e-8
"""Lower bound on ||w||^2 in the u_hat correction, so a vanishing w cannot divide by zero."""

LOG_EPS = 1e-8
"""Added to |1 + u_hat.psi| before the log; the constraint keeps that term >= tanh^2 >= 0."""


def planar_u_hat(u: Tensor, w: Tensor) -> Tensor:
    """u (..., D) corrected so that w.u_hat = m(w.u) >= -1, which makes the layer invertible.

    u_hat = u + (m(w.u) - w.u) w / ||w||^2 with m(a) = -1 + softplus(a).
    """
    wu = (w * u).sum(-1, keepdim=True)
    # Clamping (rather than adding eps) keeps w.u_hat = m(w.u) exact whenever ||w||^2 >= NORM_EPS.
    w_norm_sq = (w * w).sum(-1, keepdim=True).clamp_min(NORM_EPS)
    m_wu = -1.0 + F.softplus(wu)
    return u + (m_wu - wu) * w / w_norm_sq


def planar_step(z: Tensor, u_hat: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """One planar layer: z (B, D), u_hat (B, D), w (B, D), b (B,) -> (f(z) (B, D), log|det| (B,) in nats).

    log|det df/dz| = log|1 + u_hat.psi(z)| with psi(z) = (1 - tanh^2(w.z + b)) w.
    ``u_hat`` is used as given: pass it through :func:`planar_u_hat` for an invertible layer.
    """
    t = torch.tanh((w * z).sum(-1) + b)
    f = z + u_hat * t.unsqueeze(-1)
    u_dot_psi = (1.0 - t * t) * (w * u_hat).sum(-1)
    log_det = torch.log((1.0 + u_dot_psi).abs() + LOG_EPS)
    return f, log_det


class PlanarFlow(LatentFlow):
    """K planar layers whose (u, w, b) come per example from one linear layer on h (B, H).

    ``amortiser`` maps h to (B, K * (2D + 1)) values, laid out per layer k as [u (D) | w (D) | b (1)].
    """

    def __init__(self, latent_dim: int, feature_dim: int, length: int) -> None:
        super().__init__(latent_dim, feature_dim)
        if length < 1:
            raise ValueError(f"length={length}: must be >= 1")
        self.length = length
        self.amortiser = nn.Linear(feature_dim, length * (2 * latent_dim + 1))

    def raw_params(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Unconstrained (u (B, K, D), w (B, K, D), b (B, K)) for features h (B, H)."""
        d = self.latent_dim
        raw = self.amortiser(h).view(h.shape[0], self.length, 2 * d + 1)
        return raw[..., :d], raw[..., d:2 * d], raw[..., 2 * d]

    def forward(self, z0: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (zK (B, D), sum_log_det (B,)) where sum_log_det = sum_k log|det df_k/dz_{k-1}| in nats."""
        self.check_inputs(z0, h)
        u, w, b = self.raw_params(h)
        u_hat = planar_u_hat(u, w)
        z = z0
        sum_log_det = z0.new_zeros(z0.shape[0])
        for k in range(self.length):
            z, log_det = planar_step(z, u_hat[:, k], w[:, k], b[:, k])
            sum_log_det = sum_log_det + log_det
        return z, sum_log_det
