"""Evaluation: ELBO terms, the IW bound, active units, the judge classifier, the variety of samples,
metric names and the posterior-collapse criterion and note."""

from bench.evaluation.classifier import accuracy, conditional_accuracy, train_classifier
from bench.evaluation.elbo import active_units, elbo_terms, iw_nll
from bench.evaluation.final import final_metrics
from bench.evaluation.metric_names import EPOCH_METRICS, FINAL_METRICS, bits_per_dim
from bench.evaluation.posterior_collapse import (
    KL_FLOOR,
    MIN_ACTIVE_UNITS,
    collapse_note,
    latent_constraints,
    latent_unused_reason,
)
from bench.evaluation.variety import conditional_samples, sample_variety

__all__ = ["EPOCH_METRICS", "FINAL_METRICS", "KL_FLOOR", "MIN_ACTIVE_UNITS", "accuracy", "active_units",
           "bits_per_dim", "collapse_note", "conditional_accuracy", "conditional_samples", "elbo_terms",
           "final_metrics", "iw_nll", "latent_constraints", "latent_unused_reason", "sample_variety",
           "train_classifier"]
