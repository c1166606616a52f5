"""Evaluation on a held-out split: ELBO terms, the importance-weighted bound, active units.

Every function accumulates on the split's device and reads its result back once, at the end: on
CUDA the batches run back to back without a synchronisation between them.
"""

from __future__ import annotations

import torch

from bench.data import Split
from models import CVAE


@torch.no_grad()
def elbo_terms(model: CVAE, split: Split, batch_size: int = 500) -> dict[str, float]:
    """Mean recon, KL and -ELBO (beta = 1) over the split, nats per example."""
    model.eval()
    total = torch.zeros(2, device=split.x.device, dtype=torch.float64)
    for start in range(0, len(split), batch_size):
        terms = model(split.x[start:start + batch_size], split.y[start:start + batch_size])
        total += torch.stack((terms.recon.sum(), terms.kl.sum())).double()
    recon, kl = (total / len(split)).tolist()
    model.train()
    return {"recon": recon, "kl": kl, "neg_elbo": recon + kl}


@torch.no_grad()
def iw_nll(model: CVAE, split: Split, k: int, batch_size: int = 500) -> float:
    """-log p(x|c) upper bound from k importance samples (Burda et al. 2015), nats per example."""
    model.eval()
    per_batch = max(1, batch_size * 8 // k)  # bound the (k * batch) working set
    total = torch.zeros((), device=split.x.device, dtype=torch.float64)
    for start in range(0, len(split), per_batch):
        x, y = split.x[start:start + per_batch], split.y[start:start + per_batch]
        total -= model.iw_log_likelihood(x, y, k).double().sum()
    model.train()
    return total.item() / len(split)


@torch.no_grad()
def active_units(model: CVAE, split: Split, threshold: float = 0.01, batch_size: int = 500) -> int:
    """Latent dimensions u with Cov_x(E_q[z_u]) > threshold (Burda et al. 2015)."""
    model.eval()
    means = torch.cat([model.posterior_mean(split.x[s:s + batch_size], split.y[s:s + batch_size])
                       for s in range(0, len(split), batch_size)])
    model.train()
    return int((means.double().var(dim=0) > threshold).sum().item())
