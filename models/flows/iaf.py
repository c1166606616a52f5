"""Inverse autoregressive flow (Kingma et al. 2016) conditioned on the encoder features.

Each step runs a MADE on z (B, D) and the context h (B, H) to get (m, s), both (B, D), where
m_i and s_i depend only on z_{<i}, then applies the LSTM-type update

    sigma = sigmoid(s),   z' = sigma * z + (1 - sigma) * m,   log|det| = sum_i log sigma_i.

The Jacobian of a step is lower triangular with diagonal sigma. The variable order is reversed
between steps so that every coordinate can depend on every other one after two steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.flows.base import LatentFlow


class MaskedLinear(nn.Linear):
    """A linear layer whose weight (out, in) is multiplied by a fixed 0/1 ``mask`` of the same shape."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor) -> None:
        super().__init__(in_features, out_features)
        if mask.shape != (out_features, in_features):
            raise ValueError(f"mask has shape {tuple(mask.shape)}; expected ({out_features}, {in_features})")
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in) -> (..., out)."""
        return F.linear(x, self.weight * self.mask, self.bias)


def made_masks(latent_dim: int, hidden: int) -> tuple[Tensor, Tensor]:
    """MADE masks for inputs of degree 1..D, ``hidden`` units and outputs of degree 1..D.

    Hidden unit k has degree k mod D in 0..D-1 and sees inputs of degree <= its own; output i sees
    hidden units of degree < i. Degree-0 units see no input, only the context, which is how the
    first coordinate still gets a context-dependent (m, s). Returns (input mask (hidden, D),
    output mask (D, hidden)).
    """
    in_degree = torch.arange(1, latent_dim + 1)
    hidden_degree = torch.arange(hidden) % latent_dim
    input_mask = (hidden_degree.unsqueeze(1) >= in_degree.unsqueeze(0)).float()
    output_mask = (in_degree.unsqueeze(1) > hidden_degree.unsqueeze(0)).float()
    return input_mask, output_mask


class IAFStep(nn.Module):
    """One IAF step without the permutation: z (B, D), h (B, H) -> (z' (B, D), log|det| (B,) in nats).

    The MADE has one hidden layer of width ``hidden``; the context h enters that layer through an
    unmasked linear projection, so it may influence every coordinate without breaking the
    autoregressive structure in z. ``sigma_bias`` initialises the bias of s so that
    sigma = sigmoid(sigma_bias) starts near 1 and the step starts close to the identity.
    """

    def __init__(self, latent_dim: int, feature_dim: int, hidden: int, sigma_bias: float = 2.0) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        input_mask, output_mask = made_masks(latent_dim, hidden)
        self.input_layer = MaskedLinear(latent_dim, hidden, input_mask)
        self.context = nn.Linear(feature_dim, hidden, bias=False)
        # One masked layer emits m and s: the output mask is repeated for both halves.
        self.output_layer = MaskedLinear(hidden, 2 * latent_dim, output_mask.repeat(2, 1))
        with torch.no_grad():
            self.output_layer.bias[latent_dim:].fill_(sigma_bias)

    def shift_and_gate(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """(m (B, D), s (B, D)), each coordinate i a function of z_{<i} and h only."""
        hidden = F.elu(self.input_layer(z) + self.context(h))
        m, s = self.output_layer(hidden).chunk(2, dim=-1)
        return m, s

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """z (B, D), h (B, H) -> (sigma * z + (1 - sigma) * m (B, D), sum_i log sigma_i (B,) in nats)."""
        m, s = self.shift_and_gate(z, h)
        sigma = torch.sigmoid(s)
        z_new = sigma * z + (1.0 - sigma) * m
        log_det = F.logsigmoid(s).sum(-1)  # log(sigmoid(s)) without underflow for very negative s
        return z_new, log_det


class InverseAutoregressiveFlow(LatentFlow):
    """K :class:`IAFStep` s with MADE width ``hidden``; the latent order is reversed between steps."""

    def __init__(self, latent_dim: int, feature_dim: int, length: int, hidden: int = 64,
                 sigma_bias: float = 2.0) -> None:
        super().__init__(latent_dim, feature_dim)
        if length < 1 or hidden < 1:
            raise ValueError(f"length={length}, hidden={hidden}: both must be >= 1")
        self.length = length
        self.steps = nn.ModuleList(IAFStep(latent_dim, feature_dim, hidden, sigma_bias) for _ in range(length))

    def forward(self, z0: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (zK (B, D), sum_log_det (B,)) where sum_log_det = sum_k log|det df_k/dz_{k-1}| in nats."""
        self.check_inputs(z0, h)
        z = z0
        sum_log_det = z0.new_zeros(z0.shape[0])
        for k, step in enumerate(self.steps):
            if k > 0:
                z = z.flip(-1)  # a permutation: |det| = 1, log det 0
            z, log_det = step(z, h)
            sum_log_det = sum_log_det + log_det
        return z, sum_log_det
