"""The CVAE model: shapes for every backbone x likelihood x image shape, the condition really
conditions, and the importance-weighted bound (Burda et al. 2015) behaves as a bound."""

from __future__ import annotations

import math

import pytest
import torch

from bench.evaluation import elbo as evaluate
from bench.training.config import TrainConfig
from bench.training.loop import fit
from bench.training.presets import model_config
from models import CVAE, CVAEConfig, FlowConfig

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
LIKELIHOODS = {  # name -> (config overrides, decoder parameters per pixel value)
    "bernoulli": (dict(likelihood="bernoulli"), 1),
    "gaussian": (dict(likelihood="gaussian"), 1),
    "gaussian-learned": (dict(likelihood="gaussian", learn_scale=True), 2),
    "logistic": (dict(likelihood="logistic"), 2),
}
B, K, L = 5, 4, 6


def small_model(shape, backbone: str, **overrides) -> CVAE:
    torch.manual_seed(0)
    cfg = CVAEConfig(input_shape=shape, num_classes=K, backbone=backbone, hidden=(32,), conv_channels=(8, 16),
                     latent_dim=L, **overrides)
    return CVAE(cfg)


def batch(shape, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, *shape, generator=g), torch.randint(0, K, (B,), generator=g)


@pytest.mark.parametrize("likelihood", LIKELIHOODS, ids=LIKELIHOODS.keys())
@pytest.mark.parametrize("backbone", ["mlp", "conv"])
@pytest.mark.parametrize("shape", SHAPES, ids=["1x8x8", "1x28x28", "3x32x32"])
def test_shapes(shape, backbone, likelihood):
    overrides, params = LIKELIHOODS[likelihood]
    model = small_model(shape, backbone, **overrides)
    x, y = batch(shape)
    d = math.prod(shape)

    terms = model(x, y)
    assert terms.recon.shape == (B,) and terms.kl.shape == (B,) and terms.z.shape == (B, L)
    assert terms.neg_elbo.shape == (B,)
    assert torch.isfinite(terms.neg_elbo).all() and torch.all(terms.kl >= 0)

    c = model.one_hot(y)
    mu, logvar, h = model.encode(x, c)
    assert mu.shape == logvar.shape == (B, L) and h.shape == (B, model.encoder.feature_dim)
    assert model.decode(terms.z, c).shape == (B, params, d)

    assert model.reconstruct(x, y).shape == x.shape
    samples = model.generate(y)
    assert samples.shape == (B, *shape) and samples.min() >= 0 and samples.max() <= 1
    assert model.iw_log_likelihood(x, y, k=3).shape == (B,)
    assert model.posterior_mean(x, y).shape == (B, L) and model.kl_per_dim(x, y).shape == (L,)

    terms.neg_elbo.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("kind", ["planar", "radial", "iaf"])
@pytest.mark.parametrize("backbone", ["mlp", "conv"])
def test_shapes_with_a_flow(kind, backbone):
    model = small_model((1, 8, 8), backbone, variant="flow-cvae", flow=FlowConfig(kind=kind, length=2, iaf_hidden=8))
    x, y = batch((1, 8, 8))
    terms = model(x, y)
    assert terms.recon.shape == terms.kl.shape == (B,) and terms.z.shape == (B, L)
    assert torch.isfinite(terms.neg_elbo).all()
    assert model.iw_log_likelihood(x, y, k=3).shape == (B,)
    assert model.reconstruct(x, y).shape == x.shape


@pytest.mark.parametrize("backbone", ["mlp", "conv"])
def test_condition_changes_decoder_and_encoder_outputs(backbone):
    model = small_model((1, 8, 8), backbone)
    z = torch.randn(K, L)
    same_z = z[:1].expand(K, L)
    labels = torch.arange(K)
    decoded = model.decode(same_z, model.one_hot(labels))  # one z, every class
    for a in range(K):
        for b in range(a + 1, K):
            assert (decoded[a] - decoded[b]).abs().max() > 1e-4, (a, b)
    # same z and label -> same output (the difference above comes from the label alone)
    torch.testing.assert_close(decoded[0], model.decode(z[:1], model.one_hot(labels[:1]))[0])
    x = torch.rand(1, 1, 8, 8).expand(K, 1, 8, 8)
    mu, _, _ = model.encode(x, model.one_hot(labels))
    assert (mu[0] - mu[1]).abs().max() > 1e-4
    # and the samples of generate() differ by class for a shared z
    gen = model.generate(labels, z=same_z)
    assert (gen[0] - gen[1]).abs().max() > 1e-4


def test_one_hot_encoding():
    model = small_model((1, 8, 8), "mlp")
    c = model.one_hot(torch.tensor([0, 3, 1]))
    assert torch.equal(c, torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]]))


# --------------------------------------------------------------------------------------------------
# Importance-weighted bound on a model trained a little on digits


@pytest.fixture(scope="module")
def trained(digits):
    """beta-cvae (beta = 0.2, latent 8), 10 epochs: measured test KL 6.5 nats, so q is far from the
    posterior and the IW bound has room to tighten (k=1: 27.7, k=10: 26.5, k=100: 25.9 nats)."""
    cfg = model_config("beta-cvae", digits, beta=0.2, latent_dim=8)
    result = fit(cfg, TrainConfig(epochs=10, device="cpu", iw_samples=100), digits, progress=False)
    assert result.final["test_kl"] > 3.0  # not posterior-collapsed, else the test below says little
    return result


def _repeat(fn, n: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.tensor([fn() for _ in range(n)], dtype=torch.float64)


def test_iw_nll_is_below_neg_elbo(trained):
    assert trained.final["test_iw_nll"] < trained.final["test_neg_elbo"] - 0.5


def test_iw_with_one_sample_is_the_elbo(trained, digits):
    """k = 1: E[-log w] = recon + KL exactly, so the means agree within Monte-Carlo noise."""
    model, test = trained.model, trained.data.test
    iw1 = _repeat(lambda: evaluate.iw_nll(model, test, 1), 20, seed=0)
    elbo = _repeat(lambda: evaluate.elbo_terms(model, test)["neg_elbo"], 20, seed=1)
    se = math.sqrt(iw1.var() / len(iw1) + elbo.var() / len(elbo))
    assert abs(iw1.mean() - elbo.mean()) < 5 * se + 0.02, (iw1.mean(), elbo.mean(), se)


def test_iw_bound_tightens_as_k_grows(trained):
    model, test = trained.model, trained.data.test
    k1 = _repeat(lambda: evaluate.iw_nll(model, test, 1), 10, seed=0).mean().item()
    k10 = _repeat(lambda: evaluate.iw_nll(model, test, 10), 3, seed=1).mean().item()
    k100 = evaluate.iw_nll(model, test, 100)
    # measured: k1 - k10 ~ 1.2 nats, k10 - k100 ~ 0.65 nats; MC noise of each mean < 0.1 nats
    assert k1 - k10 > 0.3, (k1, k10, k100)
    assert k10 - k100 > 0.2, (k1, k10, k100)


# --------------------------------------------------------------------------------------------------
# How forward() assembles the ELBO terms: recomputed here from the building blocks with the same noise


def _reference_terms(model: CVAE, x: torch.Tensor, y: torch.Tensor, seed: int):
    """(recon, kl, z0, zK) recomputed from encode/decode/flow with the noise forward() draws after seed."""
    c = model.one_hot(y)
    mu, logvar, h = model.encode(x, c)
    torch.manual_seed(seed)
    z0 = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    if model.flow is None:
        z_k = z0
        kl = (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).sum(-1)  # closed form, nats
    else:
        z_k, sum_log_det = model.flow(z0, h)
        q0 = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z0).sum(-1)
        prior = torch.distributions.Normal(0.0, 1.0).log_prob(z_k).sum(-1)
        kl = q0 - sum_log_det - prior  # change of variables: log q(zK) = log q0(z0) - sum log|det|
    recon = -model.likelihood.log_prob(model.decode(z_k, c), x.flatten(1))
    return recon, kl, z0, z_k


@pytest.mark.parametrize("kind", [None, "planar", "radial", "iaf"])
def test_forward_terms_are_recon_plus_kl_in_nats(kind):
    """recon = -log p(x|zK,c) at the sampled zK, kl = KL(q||p) (closed form without a flow, the
    change-of-variables estimate with one), neg_elbo = recon + kl: checked term by term."""
    overrides = {} if kind is None else dict(variant="flow-cvae", flow=FlowConfig(kind=kind, length=2, iaf_hidden=8))
    model = small_model((1, 8, 8), "mlp", **overrides).double()
    if model.flow is not None:
        with torch.no_grad():  # non-trivial flow parameters, so the log-det term is far from 0
            for p in model.flow.parameters():
                p.normal_(0.0, 0.5)
    x, y = batch((1, 8, 8))
    x = x.double()
    torch.manual_seed(3)
    terms = model(x, y)
    recon, kl, z0, z_k = _reference_terms(model, x, y, seed=3)
    torch.testing.assert_close(terms.z, z_k)
    torch.testing.assert_close(terms.recon, recon)
    torch.testing.assert_close(terms.kl, kl)
    torch.testing.assert_close(terms.neg_elbo, recon + kl)
    assert torch.all(terms.recon > 0)  # a Bernoulli likelihood: -log p > 0 nats
    if kind is not None:
        # not vacuous: the flow moved the sample and its log-det changed the KL estimate
        assert (z_k - z0).abs().max() > 1e-2
        c = model.one_hot(y)
        mu, logvar, _ = model.encode(x, c)
        without_log_det = (torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z0).sum(-1)
                           - torch.distributions.Normal(0.0, 1.0).log_prob(z_k).sum(-1))
        assert (terms.kl - without_log_det).abs().min() > 1e-2


@pytest.mark.parametrize("kind", ["planar", "iaf"])
def test_iw_bound_with_one_sample_is_minus_the_flow_elbo_exactly(kind):
    """With a flow both are one-sample estimates from the same draw: log w = -(recon + kl) per example."""
    model = small_model((1, 8, 8), "mlp", variant="flow-cvae",
                        flow=FlowConfig(kind=kind, length=2, iaf_hidden=8)).double()
    x, y = batch((1, 8, 8))
    x = x.double()
    torch.manual_seed(5)
    neg_elbo = model(x, y).neg_elbo.detach()
    torch.manual_seed(5)
    torch.testing.assert_close(model.iw_log_likelihood(x, y, k=1), -neg_elbo)


@pytest.mark.parametrize("flow", [None, "planar"])
def test_iw_bound_is_the_log_mean_of_k_weights_per_example(flow):
    """log p(x|c) >= log (1/k) sum_j p(x|z_j,c) p(z_j) / q(z_j|x,c), recomputed per example from the
    same k*B draws (sample-major: draw j of example b is row j*B + b)."""
    k = 6
    overrides = {} if flow is None else dict(variant="flow-cvae", flow=FlowConfig(kind=flow, length=2))
    model = small_model((1, 8, 8), "mlp", **overrides).double()
    x, y = batch((1, 8, 8))
    x = x.double()
    torch.manual_seed(11)
    got = model.iw_log_likelihood(x, y, k=k)
    c = model.one_hot(y)
    with torch.no_grad():
        mu, logvar, h = model.encode(x, c)
        torch.manual_seed(11)
        eps = torch.randn(k * B, L, dtype=torch.float64).view(k, B, L)
        expected = []
        for b in range(B):
            z0 = mu[b] + torch.exp(0.5 * logvar[b]) * eps[:, b]  # (k, L)
            log_q = torch.distributions.Normal(mu[b], torch.exp(0.5 * logvar[b])).log_prob(z0).sum(-1)
            z = z0
            if model.flow is not None:
                z, log_det = model.flow(z0, h[b:b + 1].expand(k, -1))
                log_q = log_q - log_det
            log_px = model.likelihood.log_prob(model.decode(z, c[b:b + 1].expand(k, -1)),
                                               x[b:b + 1].flatten(1).expand(k, -1))
            log_w = log_px + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) - log_q
            expected.append(torch.logsumexp(log_w, 0) - math.log(k))
    torch.testing.assert_close(got, torch.stack(expected))
