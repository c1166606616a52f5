"""Decoder likelihoods p(x | z, c) over images with values in [0, 1].

Each likelihood reads decoder outputs of shape (B, P, D) -- P parameters per pixel value, D = C*H*W --
and returns log-probabilities summed over pixels, shape (B,), in nats.

- :class:`BernoulliLikelihood` (P=1): logits, numerically stable BCE; targets in [0, 1] (continuous
  targets are allowed, as is usual for grey images; ``binarize`` samples x ~ Bernoulli(x) each step,
  "dynamic binarisation").
- :class:`GaussianLikelihood` (P=1 fixed scale, P=2 learned log-scale per pixel).
- :class:`DiscretizedLogisticLikelihood` (P=2): mean and log-scale of a logistic over 256 bins of
  width 1/255 on [0, 1] (PixelCNN++ without the mixture), a proper discrete likelihood over 8-bit
  pixels, so results can be given in bits/dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.gaussian import LOG_2PI


class Likelihood(nn.Module):
    """Interface: ``params_per_dim`` decoder outputs per pixel value."""

    params_per_dim: int = 1
    #: True when log_prob is a probability mass over 8-bit pixel values (bits/dim is meaningful).
    discrete_8bit: bool = False

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """(B, P, D) params, (B, D) targets in [0, 1] -> (B,) log p(x|z,c) in nats."""
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        """(B, P, D) -> (B, D) expected pixel values in [0, 1] (what figures and samples show)."""
        raise NotImplementedError

    def prepare_target(self, x: Tensor) -> Tensor:
        """Targets used by the training loss (identity unless the likelihood binarises)."""
        return x


class BernoulliLikelihood(Likelihood):
    params_per_dim = 1

    def __init__(self, binarize: bool = False) -> None:
        super().__init__()
        self.binarize = binarize

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        logits = params[:, 0]
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params[:, 0])

    def prepare_target(self, x: Tensor) -> Tensor:
        return torch.bernoulli(x) if self.binarize else x


class GaussianLikelihood(Likelihood):
    def __init__(self, learn_scale: bool = False, scale: float = 0.1) -> None:
        super().__init__()
        self.learn_scale = learn_scale
        self.params_per_dim = 2 if learn_scale else 1
        self.log_scale = math.log(scale)

    def _log_scale(self, params: Tensor) -> Tensor:
        if self.learn_scale:
            return params[:, 1].clamp(min=-7.0, max=2.0)
        return torch.full_like(params[:, 0], self.log_scale)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        mean = params[:, 0]
        log_scale = self._log_scale(params)
        return -0.5 * (LOG_2PI + 2 * log_scale + (x - mean).pow(2) * torch.exp(-2 * log_scale)).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return params[:, 0].clamp(0.0, 1.0)


class DiscretizedLogisticLikelihood(Likelihood):
    """Logistic(mu, s) integrated over the pixel's bin; edge bins take the tails (PixelCNN++)."""

    params_per_dim = 2
    discrete_8bit = True

    def __init__(self, levels: int = 256) -> None:
        super().__init__()
        self.half_bin = 0.5 / (levels - 1)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        mean = params[:, 0]
        log_scale = params[:, 1].clamp(min=-7.0)
        inv_s = torch.exp(-log_scale)
        plus = inv_s * (x - mean + self.half_bin)
        minus = inv_s * (x - mean - self.half_bin)
        log_cdf_plus = F.logsigmoid(plus)               # log sigma(plus): the x = 0 bin
        log_one_minus_cdf_minus = -F.softplus(minus)    # log(1 - sigma(minus)): the x = 1 bin
        cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
        mid = minus + 0.5 * (plus - minus)
        # When the bin mass underflows, fall back to the density at the bin centre times its width.
        log_pdf_mid = mid - log_scale - 2.0 * F.softplus(mid) + math.log(2 * self.half_bin)
        log_mid = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
        log_p = torch.where(x < self.half_bin, log_cdf_plus,
                            torch.where(x > 1 - self.half_bin, log_one_minus_cdf_minus, log_mid))
        return log_p.sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return params[:, 0].clamp(0.0, 1.0)


def build_likelihood(name: str, *, binarize: bool = False, learn_scale: bool = False,
                     gaussian_scale: float = 0.1) -> Likelihood:
    if name == "bernoulli":
        return BernoulliLikelihood(binarize=binarize)
    if name == "gaussian":
        return GaussianLikelihood(learn_scale=learn_scale, scale=gaussian_scale)
    if name == "logistic":
        return DiscretizedLogisticLikelihood()
    raise ValueError(f"unknown likelihood {name!r}: choose bernoulli, gaussian or logistic")
