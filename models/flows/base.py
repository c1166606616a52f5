"""The interface every normalizing flow on the CVAE latent implements.

A flow maps a posterior sample z0 ~ q(z0 | x, y) through K invertible layers to zK, so that

    log q(zK | x, y) = log q(z0 | x, y) - sum_k log|det df_k/dz_{k-1}|.

Every flow here is *conditional*: its parameters may depend on the encoder features h of the
example, so one flow serves a whole batch with per-example transformations.
"""

from __future__ import annotations

from torch import Tensor, nn


class LatentFlow(nn.Module):
    """Transforms a posterior sample z0 (B, D) into zK (B, D), given encoder features h (B, H).

    Subclasses implement :meth:`forward`; ``latent_dim`` is D and ``feature_dim`` is H.
    """

    def __init__(self, latent_dim: int, feature_dim: int) -> None:
        super().__init__()
        if latent_dim < 1 or feature_dim < 1:
            raise ValueError(f"latent_dim={latent_dim}, feature_dim={feature_dim}: both must be >= 1")
        self.latent_dim = latent_dim
        self.feature_dim = feature_dim

    def forward(self, z0: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (zK (B, D), sum_log_det (B,)) where sum_log_det = sum_k log|det df_k/dz_{k-1}| in nats."""
        raise NotImplementedError

    def check_inputs(self, z0: Tensor, h: Tensor) -> None:
        """Raises ValueError unless z0 is (B, D) and h is (B, H) with this flow's D and H."""
        if z0.dim() != 2 or z0.shape[1] != self.latent_dim:
            raise ValueError(f"z0 has shape {tuple(z0.shape)}; expected (B, {self.latent_dim})")
        if h.dim() != 2 or h.shape[1] != self.feature_dim or h.shape[0] != z0.shape[0]:
            raise ValueError(f"h has shape {tuple(h.shape)}; expected ({z0.shape[0]}, {self.feature_dim})")
