"""Metric names (they are the MLflow metric keys) and unit conversions.

All ELBO-type metrics are in nats per example unless the name says otherwise.
"""

from __future__ import annotations

import math

#: Logged once per epoch, ``step=epoch``.
EPOCH_METRICS = ("train_recon", "train_kl", "train_neg_elbo", "val_recon", "val_kl", "val_neg_elbo", "beta",
                 "samples_per_s", "step_ms")
#: Logged once at the end, on the test split; ``test_cond_acc`` (fraction) and ``test_cond_std`` (pixel
#: intensity, [0, 1] scale) judge class-conditional prior samples: their labels and their variety.
FINAL_METRICS = ("test_recon", "test_kl", "test_neg_elbo", "test_iw_nll", "test_active_units",
                 "test_bits_per_dim", "test_cond_acc", "test_cond_std", "classifier_test_acc")


def bits_per_dim(nats_per_example: float, dims: int) -> float:
    """nats per example -> bits per dimension (pixel value)."""
    return nats_per_example / (dims * math.log(2))
