"""Densities in nats: the analytic Gaussian KL against Monte Carlo, and each decoder likelihood
against torch's reference implementation or the defining property of a discrete distribution."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.evaluation.metric_names import bits_per_dim
from models.gaussian import kl_standard_normal, log_normal, log_standard_normal
from models.likelihoods import BernoulliLikelihood, DiscretizedLogisticLikelihood, GaussianLikelihood, build_likelihood


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------------
# Gaussian KL


def test_analytic_kl_matches_monte_carlo():
    """KL(N(mu, sigma^2) || N(0, 1)) per dimension = E_q[log q(z) - log p(z)], within 5 standard errors."""
    g = _gen()
    mu = torch.tensor([0.0, 1.5, -2.0, 0.3, 0.0, 3.0], dtype=torch.float64)
    logvar = torch.tensor([0.0, -1.0, 0.5, -4.0, 1.5, -0.2], dtype=torch.float64)
    n = 200_000
    eps = torch.randn(n, mu.numel(), generator=g, dtype=torch.float64)
    z = mu + torch.exp(0.5 * logvar) * eps  # (n, D)
    # per-dimension log-ratio: log q(z_d) - log p(z_d), via the library's own densities on 1-d slices
    log_ratio = torch.stack([log_normal(z[:, d:d + 1], mu[d:d + 1], logvar[d:d + 1])
                             - log_standard_normal(z[:, d:d + 1]) for d in range(mu.numel())], dim=1)
    mc = log_ratio.mean(0)
    se = log_ratio.std(0) / math.sqrt(n)
    analytic = kl_standard_normal(mu[None], logvar[None])[0]
    assert analytic.shape == mu.shape
    assert torch.all((analytic - mc).abs() <= 5 * se + 1e-12), (analytic, mc, se)
    # and against torch.distributions, exactly
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, torch.exp(0.5 * logvar)),
                                            torch.distributions.Normal(0.0, 1.0))
    torch.testing.assert_close(analytic, ref)


def test_kl_is_zero_only_at_the_prior():
    mu = torch.zeros(3, 4)
    logvar = torch.zeros(3, 4)
    assert torch.equal(kl_standard_normal(mu, logvar), torch.zeros(3, 4))
    assert torch.all(kl_standard_normal(mu + 0.1, logvar) > 0)
    assert torch.all(kl_standard_normal(mu, logvar - 0.1) > 0)


def test_log_normal_matches_torch_distributions():
    g = _gen(1)
    z, mu = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    logvar = torch.randn(5, 7, generator=g)
    ref = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    torch.testing.assert_close(log_normal(z, mu, logvar), ref)
    torch.testing.assert_close(log_standard_normal(z),
                               torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1))


# --------------------------------------------------------------------------------------------------
# Bernoulli


def test_bernoulli_matches_torch_bce():
    """-log p(x) = BCE(sigmoid(logits), x) summed over pixels, for binary and continuous targets."""
    g = _gen(2)
    logits = 4 * torch.randn(6, 1, 50, generator=g, dtype=torch.float64)
    for x in (torch.bernoulli(torch.full((6, 50), 0.4, dtype=torch.float64), generator=g),
              torch.rand(6, 50, generator=g, dtype=torch.float64)):
        ours = BernoulliLikelihood().log_prob(logits, x)
        ref = -F.binary_cross_entropy(torch.sigmoid(logits[:, 0]), x, reduction="none").sum(-1)
        assert ours.shape == (6,)
        torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_is_finite_and_exact_for_extreme_logits(dtype):
    """At logits of +-50 sigmoid saturates to exactly 0/1, so the naive form takes log(0)."""
    logits = torch.tensor([[[50.0, -50.0, 50.0, -50.0]]], dtype=dtype)
    x = torch.tensor([[1.0, 0.0, 0.0, 1.0]], dtype=dtype)
    p = torch.sigmoid(logits[:, 0])
    naive = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(-1)
    if dtype == torch.float32:
        assert not torch.isfinite(naive).all()  # the failure mode being guarded against
    ours = BernoulliLikelihood().log_prob(logits, x)
    assert torch.isfinite(ours).all()
    # exact: -log p = softplus(l) - x * l; the two wrong pixels cost 50 nats each
    exact = (F.softplus(logits[:, 0].double()) - x.double() * logits[:, 0].double()).sum(-1)
    torch.testing.assert_close(-ours.double(), exact)
    assert abs(-ours.item() - 100.0) < 1e-4


def test_bernoulli_binarize_samples_binary_targets():
    x = torch.full((2000, 10), 0.3)
    torch.manual_seed(0)
    target = BernoulliLikelihood(binarize=True).prepare_target(x)
    assert set(target.unique().tolist()) == {0.0, 1.0}
    assert abs(target.mean().item() - 0.3) < 0.02
    assert torch.equal(BernoulliLikelihood().prepare_target(x), x)


# --------------------------------------------------------------------------------------------------
# Gaussian


def test_gaussian_fixed_scale_matches_torch_normal():
    g = _gen(3)
    mean = torch.rand(4, 1, 30, generator=g, dtype=torch.float64)
    x = torch.rand(4, 30, generator=g, dtype=torch.float64)
    lik = GaussianLikelihood(learn_scale=False, scale=0.25)
    assert lik.params_per_dim == 1
    ref = torch.distributions.Normal(mean[:, 0], 0.25).log_prob(x).sum(-1)
    torch.testing.assert_close(lik.log_prob(mean, x), ref)


def test_gaussian_learned_scale_matches_torch_normal():
    g = _gen(4)
    mean = torch.rand(4, 30, generator=g, dtype=torch.float64)
    log_scale = torch.rand(4, 30, generator=g, dtype=torch.float64) * 4 - 3  # inside the clamp range
    params = torch.stack((mean, log_scale), dim=1)
    x = torch.rand(4, 30, generator=g, dtype=torch.float64)
    lik = GaussianLikelihood(learn_scale=True)
    assert lik.params_per_dim == 2
    ref = torch.distributions.Normal(mean, log_scale.exp()).log_prob(x).sum(-1)
    torch.testing.assert_close(lik.log_prob(params, x), ref)


# --------------------------------------------------------------------------------------------------
# Discretised logistic


def _all_bins_log_prob(mu: torch.Tensor, log_scale: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """(N,) parameters -> (N, levels) log p(x = k / (levels-1)), each bin evaluated as a 1-pixel image."""
    n = mu.numel()
    x = torch.arange(levels, dtype=mu.dtype) / (levels - 1)
    params = torch.stack((mu.repeat_interleave(levels), log_scale.repeat_interleave(levels)), 1)[..., None]
    return DiscretizedLogisticLikelihood(levels).log_prob(params, x.repeat(n)[:, None]).view(n, levels)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_discretized_logistic_sums_to_one_over_256_bins(dtype):
    """A proper likelihood over 8-bit pixels: the 256 bin masses sum to 1 for any (mu, scale)."""
    g = _gen(5)
    mu = (torch.rand(200, generator=g, dtype=torch.float64) * 1.6 - 0.3).to(dtype)    # also off [0, 1]
    log_scale = (torch.rand(200, generator=g, dtype=torch.float64) * 9 - 7).to(dtype)  # s in [1e-3, 7]
    log_p = _all_bins_log_prob(mu, log_scale)
    assert torch.isfinite(log_p).all() and (log_p <= 1e-6).all()
    total = log_p.double().exp().sum(1)
    assert (total - 1).abs().max().item() < 1e-4, total


def test_discretized_logistic_peaks_at_the_mean_bin():
    bins = [20, 51, 128, 230]
    mu = torch.tensor(bins, dtype=torch.float32) / 255 + 0.1 / 255  # near, not on, the bin centre
    log_p = _all_bins_log_prob(mu, torch.full((4,), -5.0))
    assert log_p.argmax(1).tolist() == bins


def test_likelihood_factory_and_8bit_flag():
    assert isinstance(build_likelihood("bernoulli"), BernoulliLikelihood)
    assert isinstance(build_likelihood("gaussian", learn_scale=True), GaussianLikelihood)
    assert build_likelihood("logistic").discrete_8bit
    assert not build_likelihood("bernoulli").discrete_8bit
    assert not build_likelihood("gaussian").discrete_8bit
    with pytest.raises(ValueError, match="poisson"):
        build_likelihood("poisson")


# --------------------------------------------------------------------------------------------------
# bits/dim


def test_bits_per_dim_of_a_uniform_8bit_image_is_8():
    dims = 3 * 32 * 32
    assert bits_per_dim(dims * math.log(256), dims) == pytest.approx(8.0)
    assert bits_per_dim(math.log(2), 1) == pytest.approx(1.0)


def test_discretized_logistic_bins_are_logistic_cdf_differences():
    """Interior bins: sigma((x+h-mu)/s) - sigma((x-h-mu)/s); edge bins take the tails; in bits via bits_per_dim."""
    mu, log_scale = torch.tensor([0.4], dtype=torch.float64), torch.tensor([-2.0], dtype=torch.float64)
    log_p = _all_bins_log_prob(mu, log_scale)[0]
    x = torch.arange(256, dtype=torch.float64) / 255
    s, h = math.exp(-2.0), 0.5 / 255
    cdf = lambda t: torch.sigmoid((t - mu) / s)  # noqa: E731
    mass = cdf(x + h) - cdf(x - h)
    mass[0], mass[-1] = cdf(x[0] + h), 1 - cdf(x[-1] - h)
    torch.testing.assert_close(log_p.exp(), mass)
    nll = -log_p[100].item()
    assert bits_per_dim(nll, 1) == pytest.approx(-math.log2(mass[100].item()))
