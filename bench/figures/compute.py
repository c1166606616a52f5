"""The data each figure of a trained CVAE shows, computed from the model (numpy arrays out).

:mod:`bench.figures.draw` describes and draws the figures; this module runs the model to fill them in.
:func:`fit_figure_data` leaves the model as it found it: the same train/eval mode, and the global
torch RNG state restored, so computing the figures before the final test metrics does not change
those metrics (tracked and untracked runs report the same numbers).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from bench.data.datasets import Split
from bench.figures.draw import FigureData, ImageGrid, KLPerDim, TrainingCurves, tile
from models import CVAE


def _numpy(images: torch.Tensor) -> np.ndarray:
    return images.detach().float().cpu().numpy()


def reconstructions(model: CVAE, split: Split, n: int = 10) -> ImageGrid:
    """The first ``n`` examples of ``split`` (top row) over their reconstructions (bottom row)."""
    n = min(n, len(split))
    x, y = split.x[:n], split.y[:n]
    images = torch.cat([x, model.reconstruct(x, y).to(x.dtype)])
    return ImageGrid(tile(_numpy(images), nrow=n), "originals (top) and reconstructions (bottom)",
                     cell_px=x.shape[-2], row_labels=("data", "recon"))


def class_samples(model: CVAE, class_names: Sequence[str], per_class: int = 10, seed: int = 0) -> ImageGrid:
    """Samples from the prior, one row per class (decoder means, z ~ N(0, I) from ``seed``)."""
    device = next(model.parameters()).device
    k, latent = len(class_names), model.cfg.latent_dim
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(k * per_class, latent, generator=gen).to(device)
    y = torch.arange(k, device=device).repeat_interleave(per_class)
    images = model.generate(y, z)
    return ImageGrid(tile(_numpy(images), nrow=per_class), "class-conditional samples (one row per class)",
                     cell_px=images.shape[-2], row_labels=tuple(str(c) for c in class_names))


def latent_traversal(model: CVAE, split: Split, dims: int = 6, steps: int = 9, span: float = 2.5) -> ImageGrid:
    """Vary the ``dims`` latent dimensions of highest KL around the posterior mean of one example.

    Row i sets latent ``d_i`` to ``mu[d_i] + t`` for ``steps`` values of t in [-span, span] (prior
    standard deviations), every other dimension at the posterior mean; the condition stays that
    example's class. Dimensions are ranked by :meth:`CVAE.kl_per_dim` on ``split``; each row label
    gives the dimension and its KL in nats.
    """
    x, y = split.x[:1], split.y[:1]
    kl = model.kl_per_dim(split.x[:500], split.y[:500])
    order = torch.argsort(kl, descending=True)[:min(dims, kl.numel())]
    mu = model.posterior_mean(x, y)[0]
    offsets = torch.linspace(-span, span, steps, device=mu.device)
    z = mu.repeat(len(order) * steps, 1)
    for row, d in enumerate(order.tolist()):
        z[row * steps:(row + 1) * steps, d] += offsets
    images = model.generate(y.repeat(z.shape[0]), z)
    return ImageGrid(tile(_numpy(images), nrow=steps),
                     f"latent traversal, class {int(y[0])}: mu ± {span:g} per dim (KL nats)",
                     cell_px=images.shape[-2], row_labels=tuple(f"z{d} ({kl[d]:.2f})" for d in order.tolist()))


def kl_per_dim(model: CVAE, split: Split, batch_size: int = 500) -> KLPerDim:
    """KL(q(z_d|x,c) || N(0, 1)) per latent dimension d, averaged over ``split`` (nats)."""
    total = None
    for start in range(0, len(split), batch_size):
        part = model.kl_per_dim(split.x[start:start + batch_size], split.y[start:start + batch_size])
        part = part * min(batch_size, len(split) - start)
        total = part if total is None else total + part
    return KLPerDim((total / len(split)).cpu().numpy())


def training_curves(history: Sequence[Mapping[str, float]]) -> TrainingCurves:
    """The recon and KL columns of a fit history (one mapping per epoch), as arrays."""
    def column(key: str) -> np.ndarray:
        return np.array([h[key] for h in history], dtype=float)

    return TrainingCurves(epochs=column("epoch"), train_recon=column("train_recon"), train_kl=column("train_kl"),
                          val_recon=column("val_recon"), val_kl=column("val_kl"))


def fit_figure_data(result: Any, split: Split | None = None) -> dict[str, FigureData]:
    """The data of every figure of a :class:`bench.training.loop.FitResult`, keyed like
    :data:`bench.figures.draw.FIGURE_FILES` (images from the val split unless ``split`` is given)."""
    model, data = result.model, result.data
    split = split if split is not None else data.val
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return {
                "reconstructions": reconstructions(model, split),
                "class_samples": class_samples(model, data.class_names),
                "latent_traversal": latent_traversal(model, split),
                "recon_vs_kl": training_curves(result.history),
                "kl_per_dim": kl_per_dim(model, split),
            }
    finally:
        model.train(was_training)
