"""bench.evaluation.elbo on a split: split-level means that do not depend on the evaluation batch size, and
active units (Burda et al. 2015) counted from the variance of the posterior means across the split."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.data import Split
from bench.evaluation import elbo as evaluate
from models import CVAE, CVAEConfig


class FixedPosteriorMeans(nn.Module):
    """Stands in for a CVAE: posterior_mean returns the row of ``means`` whose index is stored in x."""

    def __init__(self, means: torch.Tensor) -> None:
        super().__init__()
        self.means = means

    def posterior_mean(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.means[x[:, 0, 0, 0].long()]


def test_active_units_counts_dimensions_whose_posterior_mean_varies_over_the_split():
    n = 10
    g = torch.Generator().manual_seed(0)
    signs = torch.tensor([1.0, -1.0]).repeat(n // 2)
    means = torch.stack([
        torch.randn(n, generator=g, dtype=torch.float64) * 2.0,  # variance ~4: active
        signs * 0.05,   # variance 0.0028 < 0.01: inactive
        torch.full((n,), 3.0, dtype=torch.float64),              # constant (however large): inactive
        signs * 0.2,    # variance 0.044 > 0.01: active
        torch.arange(n, dtype=torch.float64) * 0.05,             # var 0.023 over the split, < 0.003 within 3 in a row
    ], dim=1)
    split = Split(torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone(),
                  torch.zeros(n, dtype=torch.int64))
    model = FixedPosteriorMeans(means)
    for batch_size in (3, 500):  # batches of 3, 3, 3, 1 and one batch: the variance is over the whole split
        assert evaluate.active_units(model, split, batch_size=batch_size) == 3
    assert evaluate.active_units(model, split, threshold=0.002) == 4
    assert evaluate.active_units(model, split, threshold=100.0) == 0


def test_split_means_do_not_depend_on_the_batch_size(monkeypatch):
    """With the posterior sample fixed at mu the terms are deterministic: means over batches of 7 (the
    last one partial) equal the per-example terms of one pass, averaged over the split."""
    monkeypatch.setattr("models.cvae.reparameterize", lambda mu, logvar: mu)
    torch.manual_seed(0)
    model = CVAE(CVAEConfig(input_shape=(1, 4, 4), num_classes=3, hidden=(16,), latent_dim=3))
    g = torch.Generator().manual_seed(1)
    split = Split(torch.rand(25, 1, 4, 4, generator=g), torch.randint(0, 3, (25,), generator=g))
    with torch.no_grad():
        terms = model(split.x, split.y)
        iw = -model.iw_log_likelihood(split.x, split.y, k=4).double().mean().item()
    got = evaluate.elbo_terms(model, split, batch_size=7)
    assert got["recon"] == pytest.approx(terms.recon.double().mean().item(), rel=1e-5)
    assert got["kl"] == pytest.approx(terms.kl.double().mean().item(), rel=1e-5)
    assert got["neg_elbo"] == pytest.approx(got["recon"] + got["kl"])
    assert got["kl"] > 0.01 and got["recon"] > 1.0  # not vacuous
    # iw_nll batches k * B samples (here 14 examples a batch for k = 4): the same per-example mean
    assert evaluate.iw_nll(model, split, k=4, batch_size=7) == pytest.approx(iw, rel=1e-5)


HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__")


@pytest.fixture
def host_reads(monkeypatch):
    """Names of the Tensor methods that read a value back to the host, one entry per call."""
    calls: list[str] = []
    for name in HOST_READS:
        def counted(self, *args, _real=getattr(torch.Tensor, name), _name=name, **kwargs):
            calls.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def test_evaluation_reads_back_once_however_many_batches(digits, host_reads):
    """No host read inside the batch loops: on CUDA the batches run without a synchronisation between them."""
    from bench.evaluation import classifier
    from bench.training.presets import model_config

    torch.manual_seed(0)
    model = CVAE(model_config("flow-cvae", digits))
    judge = classifier._make_net(digits.input_shape, digits.num_classes)
    val = digits.val  # 180 examples: batches of 16 -> 12 batches; iw_nll with k = 8 -> 12 batches of 15
    runs = {
        "elbo_terms": (lambda: evaluate.elbo_terms(model, val, batch_size=16), ["tolist"]),
        "iw_nll": (lambda: evaluate.iw_nll(model, val, k=8, batch_size=16), ["item"]),
        "active_units": (lambda: evaluate.active_units(model, val, batch_size=16), ["item"]),
        "accuracy": (lambda: classifier.accuracy(judge, val.x, val.y, batch_size=16), ["item"]),
        "conditional_accuracy": (lambda: classifier.conditional_accuracy(model, judge, 10, 30), ["item"]),
    }
    for name, (run, expected) in runs.items():
        host_reads.clear()
        run()
        assert host_reads == expected, name


def test_accuracy_counts_every_batch(digits):
    """Accumulated on the device, the count is the per-batch counts' sum (the last batch partial)."""
    from bench.evaluation import classifier

    torch.manual_seed(0)
    judge = classifier._make_net(digits.input_shape, digits.num_classes)
    with torch.no_grad():
        per_example = (judge(digits.val.x).argmax(1) == digits.val.y).sum().item() / len(digits.val)
    assert classifier.accuracy(judge, digits.val.x, digits.val.y, batch_size=7) == per_example


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_evaluation_loops_never_synchronise(digits, monkeypatch):
    """Nothing synchronises inside the loops (sync debug mode raises if it did); the one read back at the
    end is stubbed out, and counted."""
    from bench.evaluation import classifier
    from bench.training.presets import model_config

    device = torch.device("cuda")
    torch.manual_seed(0)
    model = CVAE(model_config("cvae", digits)).to(device)
    judge = classifier._make_net(digits.input_shape, digits.num_classes).to(device)
    val = digits.val.to(device)
    reads = []
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append("item") or 0.0)
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append("tolist") or [0.0] * self.numel())
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        evaluate.elbo_terms(model, val, batch_size=16)
        evaluate.active_units(model, val, batch_size=16)
        classifier.accuracy(judge, val.x, val.y, batch_size=16)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert reads == ["tolist", "item", "item"]
