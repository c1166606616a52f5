"""The conditional VAE: encoder q(z|x,c), decoder p(x|z,c), standard-normal prior p(z), and an
optional normalizing flow on the posterior sample (``flow-cvae``).

Every quantity is per example, in nats:
- ``recon`` = -log p(x | z_K, c), one posterior sample;
- ``kl``    = KL(q(z|x,c) || p(z)): analytic without a flow; with a flow the one-sample Monte-Carlo
  estimate log q0(z0|x,c) - sum_k log|det df_k/dz_{k-1}| - log p(z_K);
- ``neg_elbo`` = recon + kl (beta = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.backbones import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from models.config import CVAEConfig
from models.flows import build_flow
from models.gaussian import kl_standard_normal, log_normal, log_standard_normal, reparameterize
from models.likelihoods import build_likelihood


@dataclass
class ELBOTerms:
    """Per-example terms of one forward pass: recon (B,), kl (B,) in nats; z (B, L) the sample."""

    recon: Tensor
    kl: Tensor
    z: Tensor

    @property
    def neg_elbo(self) -> Tensor:
        return self.recon + self.kl


class CVAE(nn.Module):
    def __init__(self, cfg: CVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.likelihood = build_likelihood(cfg.likelihood, binarize=cfg.binarize, learn_scale=cfg.learn_scale,
                                           gaussian_scale=cfg.gaussian_scale)
        p = self.likelihood.params_per_dim
        if cfg.backbone == "mlp":
            self.encoder = MLPEncoder(cfg.input_dim, cfg.num_classes, cfg.hidden)
            self.decoder = MLPDecoder(cfg.latent_dim, cfg.num_classes, cfg.hidden, cfg.input_dim, p)
        else:
            self.encoder = ConvEncoder(cfg.input_shape, cfg.num_classes, cfg.conv_channels, cfg.hidden)
            self.decoder = ConvDecoder(cfg.latent_dim, cfg.num_classes, cfg.input_shape, cfg.conv_channels,
                                       cfg.hidden, p)
        self.posterior = nn.Linear(self.encoder.feature_dim, 2 * cfg.latent_dim)
        self.flow = build_flow(cfg.flow, cfg.latent_dim, self.encoder.feature_dim) if cfg.flow else None

    # -- building blocks -------------------------------------------------------------------------
    def one_hot(self, y: Tensor) -> Tensor:
        """(B,) int64 class indices -> (B, K) float one-hot condition."""
        return F.one_hot(y, self.cfg.num_classes).to(self.posterior.weight.dtype)

    def encode(self, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, C, H, W), c (B, K) -> mu (B, L), logvar (B, L), features h (B, F)."""
        h = self.encoder(x, c)
        mu, logvar = self.posterior(h).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0), h

    def decode(self, z: Tensor, c: Tensor) -> Tensor:
        """z (B, L), c (B, K) -> likelihood parameters (B, P, D)."""
        return self.decoder(z, c)

    def _latent(self, mu: Tensor, logvar: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Sample z0 ~ q0 and push it through the flow: returns z_K, log q(z_K|x,c), z0 (all (B,...))."""
        z0 = reparameterize(mu, logvar)
        log_q = log_normal(z0, mu, logvar)
        if self.flow is None:
            return z0, log_q, z0
        z_k, log_det = self.flow(z0, h)
        return z_k, log_q - log_det, z0

    # -- objectives ------------------------------------------------------------------------------
    def forward(self, x: Tensor, y: Tensor, target: Tensor | None = None) -> ELBOTerms:
        """One-sample ELBO terms for images x (B, C, H, W) in [0, 1] and labels y (B,).

        ``target`` (B, D) overrides the reconstruction target (dynamic binarisation in training).
        """
        c = self.one_hot(y)
        mu, logvar, h = self.encode(x, c)
        z, log_q, _ = self._latent(mu, logvar, h)
        if self.flow is None:
            kl = kl_standard_normal(mu, logvar).sum(-1)
        else:
            kl = log_q - log_standard_normal(z)
        x_flat = x.flatten(1) if target is None else target
        recon = -self.likelihood.log_prob(self.decode(z, c), x_flat)
        return ELBOTerms(recon=recon, kl=kl, z=z)

    @torch.no_grad()
    def iw_log_likelihood(self, x: Tensor, y: Tensor, k: int) -> Tensor:
        """Importance-weighted bound log p(x|c) >= log mean_k w_k (Burda et al. 2015), (B,) nats.

        k = 1 gives the (one-sample) ELBO; the bound tightens as k grows.
        """
        b = x.shape[0]
        c = self.one_hot(y)
        mu, logvar, h = self.encode(x, c)
        rep = lambda t: t.repeat(k, *([1] * (t.dim() - 1)))  # noqa: E731  (k*B, ...) sample-major
        z, log_q, _ = self._latent(rep(mu), rep(logvar), rep(h))
        log_px = self.likelihood.log_prob(self.decode(z, rep(c)), rep(x.flatten(1)))
        log_w = (log_px + log_standard_normal(z) - log_q).view(k, b)
        return torch.logsumexp(log_w, dim=0) - math.log(k)  # a Python float: no host-device copy per batch

    # -- inspection ------------------------------------------------------------------------------
    @torch.no_grad()
    def posterior_mean(self, x: Tensor, y: Tensor) -> Tensor:
        """E_q0[z] = mu (B, L): the statistic behind active units (Burda et al. 2015)."""
        mu, _, _ = self.encode(x, self.one_hot(y))
        return mu

    @torch.no_grad()
    def kl_per_dim(self, x: Tensor, y: Tensor) -> Tensor:
        """Analytic KL(q0 || N(0, I)) per latent dimension, averaged over the batch: (L,) nats."""
        mu, logvar, _ = self.encode(x, self.one_hot(y))
        return kl_standard_normal(mu, logvar).mean(0)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor) -> Tensor:
        """Decoder mean at the posterior mean: (B, C, H, W) in [0, 1]."""
        c = self.one_hot(y)
        mu, logvar, h = self.encode(x, c)
        z = mu if self.flow is None else self.flow(mu, h)[0]
        return self.likelihood.mean(self.decode(z, c)).view_as(x)

    @torch.no_grad()
    def generate(self, y: Tensor, z: Tensor | None = None) -> Tensor:
        """Decoder mean for z ~ N(0, I) (or the given z (B, L)) under labels y: (B, C, H, W)."""
        if z is None:
            z = torch.randn(y.shape[0], self.cfg.latent_dim, device=y.device)
        return self.likelihood.mean(self.decode(z, self.one_hot(y))).view(-1, *self.cfg.input_shape)
