"""Evaluation: ELBO terms, the importance-weighted bound, active units, the judge classifier,
metric names and the posterior-collapse note."""

from bench.evaluation.classifier import accuracy, conditional_accuracy, train_classifier
from bench.evaluation.elbo import active_units, elbo_terms, iw_nll
from bench.evaluation.final import final_metrics
from bench.evaluation.metric_names import EPOCH_METRICS, FINAL_METRICS, bits_per_dim
from bench.evaluation.posterior_collapse import collapse_note

__all__ = ["EPOCH_METRICS", "FINAL_METRICS", "accuracy", "active_units", "bits_per_dim", "collapse_note",
           "conditional_accuracy", "elbo_terms", "final_metrics", "iw_nll", "train_classifier"]
