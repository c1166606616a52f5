"""The final test metrics of a trained model (:data:`bench.evaluation.metric_names.FINAL_METRICS`)."""

from __future__ import annotations

import torch

from bench.data import DataSplits
from bench.evaluation.classifier import accuracy, train_classifier
from bench.evaluation.elbo import active_units, elbo_terms, iw_nll
from bench.evaluation.metric_names import bits_per_dim
from bench.evaluation.variety import conditional_samples, sample_variety
from models import CVAE


def final_metrics(model: CVAE, data: DataSplits, *, iw_samples: int, eval_batch_size: int = 500,
                  cond_samples_per_class: int = 100, seed: int = 0) -> dict[str, float]:
    """Test-split metrics, nats per example unless named: recon/KL/-ELBO (beta = 1), the
    ``iw_samples``-sample importance-weighted bound, active units, bits/dim (8-bit data with a discrete
    likelihood), the judge classifier's accuracy on class-conditional samples and on the real test
    split, and the variety of those samples (``test_cond_std``: per-pixel standard deviation over the
    ``cond_samples_per_class`` draws of a label, averaged over labels; 0 for a collapsed model). Every draw comes from ``seed`` (the global RNG is left as it was), so a model scores the same
    whenever it is evaluated: right after training, or reloaded from its logged files."""
    device = data.train.x.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _final_metrics(model, data, iw_samples=iw_samples, eval_batch_size=eval_batch_size,
                              cond_samples_per_class=cond_samples_per_class, seed=seed)


def _final_metrics(model: CVAE, data: DataSplits, *, iw_samples: int, eval_batch_size: int,
                   cond_samples_per_class: int, seed: int) -> dict[str, float]:
    test = elbo_terms(model, data.test, eval_batch_size)
    out = {"test_recon": test["recon"], "test_kl": test["kl"], "test_neg_elbo": test["neg_elbo"],
           "test_iw_nll": iw_nll(model, data.test, iw_samples, eval_batch_size),
           "test_active_units": float(active_units(model, data.test))}
    if model.likelihood.discrete_8bit and data.pixel_levels == 256:
        c, h, w = data.input_shape
        out["test_bits_per_dim"] = bits_per_dim(out["test_iw_nll"], c * h * w)
    judge = train_classifier(data, seed=seed)
    samples, labels = conditional_samples(model, data.num_classes, cond_samples_per_class)
    out["test_cond_acc"] = accuracy(judge, samples, labels)
    out["test_cond_std"] = sample_variety(samples, data.num_classes)
    out["classifier_test_acc"] = accuracy(judge, data.test.x, data.test.y)
    return out
