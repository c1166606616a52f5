"""Figures of a trained CVAE, logged as PNG artifacts of its MLflow run.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global figure
registry, safe from worker threads, no GUI backend needed). Images are decoder means in [0, 1].
:func:`log_fit_figures` makes and logs them all for a :class:`bench.fit.FitResult`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from models import CVAE

from .datasets import Split

#: Artifact file of each figure, under the run's artifact root.
FIGURE_FILES = {
    "reconstructions": "figures/reconstructions.png",
    "class_samples": "figures/class_samples.png",
    "latent_traversal": "figures/latent_traversal.png",
    "recon_vs_kl": "figures/recon_vs_kl.png",
    "kl_per_dim": "figures/kl_per_dim.png",
}


def _tile(images: torch.Tensor, nrow: int, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> one (rows*(H+pad)+pad, nrow*(W+pad)+pad[, C]) array, row-major."""
    x = images.detach().float().clamp(0, 1).cpu().numpy()
    n, c, h, w = x.shape
    rows = -(-n // nrow)
    grid = np.ones((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top:top + h, left:left + w] = x[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def _image_figure(grid: np.ndarray, title: str, *, row_labels: Sequence[str] = (), cell_px: int = 0,
                  inches_per_cell: float = 0.45, ncols: int = 1, nrows: int = 1) -> Figure:
    fig = Figure(figsize=(max(3.0, ncols * inches_per_cell + 1.0), max(1.6, nrows * inches_per_cell + 0.7)),
                 layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    if row_labels and cell_px:
        ax.set_yticks([1 + cell_px / 2 + i * (cell_px + 1) for i in range(len(row_labels))], list(row_labels),
                      fontsize=7)
    else:
        ax.set_yticks([])
    return fig


def reconstruction_grid(model: CVAE, split: Split, n: int = 10) -> Figure:
    """The first ``n`` examples of ``split`` (top row) over their reconstructions (bottom row)."""
    n = min(n, len(split))
    x, y = split.x[:n], split.y[:n]
    images = torch.cat([x, model.reconstruct(x, y).to(x.dtype)])
    return _image_figure(_tile(images, nrow=n), "originals (top) and reconstructions (bottom)",
                         row_labels=("data", "recon"), cell_px=x.shape[-2], ncols=n, nrows=2)


def class_samples(model: CVAE, class_names: Sequence[str], per_class: int = 10, seed: int = 0) -> Figure:
    """Samples from the prior, one row per class (decoder means, z ~ N(0, I) from ``seed``)."""
    device = next(model.parameters()).device
    k, latent = len(class_names), model.cfg.latent_dim
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(k * per_class, latent, generator=gen).to(device)
    y = torch.arange(k, device=device).repeat_interleave(per_class)
    model.eval()
    images = model.generate(y, z)
    model.train()
    return _image_figure(_tile(images, nrow=per_class), "class-conditional samples (one row per class)",
                         row_labels=[str(c) for c in class_names], cell_px=images.shape[-2], ncols=per_class,
                         nrows=k)


def latent_traversal(model: CVAE, split: Split, dims: int = 6, steps: int = 9, span: float = 2.5) -> Figure:
    """Vary the ``dims`` latent dimensions of highest KL around the posterior mean of one example.

    Row i sets latent ``d_i`` to ``mu[d_i] + t`` for ``steps`` values of t in [-span, span] (prior
    standard deviations), every other dimension at the posterior mean; the condition stays that
    example's class. Dimensions are ranked by :meth:`CVAE.kl_per_dim` on ``split``.
    """
    model.eval()
    x, y = split.x[:1], split.y[:1]
    kl = model.kl_per_dim(split.x[:500], split.y[:500])
    order = torch.argsort(kl, descending=True)[:min(dims, kl.numel())]
    mu = model.posterior_mean(x, y)[0]
    offsets = torch.linspace(-span, span, steps, device=mu.device)
    z = mu.repeat(len(order) * steps, 1)
    for row, d in enumerate(order.tolist()):
        z[row * steps:(row + 1) * steps, d] += offsets
    images = model.generate(y.repeat(z.shape[0]), z)
    model.train()
    labels = [f"z{d} ({kl[d]:.2f})" for d in order.tolist()]
    return _image_figure(_tile(images, nrow=steps),
                         f"latent traversal, class {int(y[0])}: mu ± {span:g} per dim (KL nats)",
                         row_labels=labels, cell_px=images.shape[-2], ncols=steps, nrows=len(order))


def recon_vs_kl(history: Sequence[Mapping[str, float]]) -> Figure:
    """Per-epoch recon and KL (train and val, nats per example), and the val rate-distortion path."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(11, 3.2), layout="constrained")
    ax_recon, ax_kl, ax_rd = fig.subplots(1, 3)
    for split, style in (("train", "--"), ("val", "-")):
        ax_recon.plot(epochs, [h[f"{split}_recon"] for h in history], style, marker=".", label=split)
        ax_kl.plot(epochs, [h[f"{split}_kl"] for h in history], style, marker=".", label=split)
    ax_recon.set(title="reconstruction (distortion)", xlabel="epoch", ylabel="nats / example")
    ax_kl.set(title="KL (rate)", xlabel="epoch", ylabel="nats / example")
    ax_recon.legend(fontsize=8)
    ax_kl.legend(fontsize=8)
    rate, distortion = [h["val_kl"] for h in history], [h["val_recon"] for h in history]
    ax_rd.plot(rate, distortion, "-", color="0.7", zorder=1)
    points = ax_rd.scatter(rate, distortion, c=epochs, cmap="viridis", zorder=2)
    fig.colorbar(points, ax=ax_rd, label="epoch")
    ax_rd.set(title="validation rate-distortion path", xlabel="val_kl (rate, nats)",
              ylabel="val_recon (distortion, nats)")
    return fig


def kl_per_dim(model: CVAE, split: Split, batch_size: int = 500) -> Figure:
    """Bar chart of KL(q(z_d|x,c) || N(0, 1)) per latent dimension d, averaged over ``split`` (nats)."""
    model.eval()
    total = None
    for start in range(0, len(split), batch_size):
        part = model.kl_per_dim(split.x[start:start + batch_size], split.y[start:start + batch_size])
        part = part * min(batch_size, len(split) - start)
        total = part if total is None else total + part
    model.train()
    kl = (total / len(split)).cpu().numpy()
    fig = Figure(figsize=(max(4.0, 0.18 * len(kl) + 1.5), 3.0), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(np.arange(len(kl)), kl, color="tab:blue")
    ax.set(title=f"KL per latent dimension (total {kl.sum():.2f} nats)", xlabel="latent dimension",
           ylabel="nats / example")
    return fig


def fit_figures(result: Any, split: Split | None = None) -> dict[str, Figure]:
    """All figures of a :class:`bench.fit.FitResult`, keyed like :data:`FIGURE_FILES` (val split)."""
    model, data = result.model, result.data
    split = split if split is not None else data.val
    with torch.no_grad():
        return {
            "reconstructions": reconstruction_grid(model, split),
            "class_samples": class_samples(model, data.class_names),
            "latent_traversal": latent_traversal(model, split),
            "recon_vs_kl": recon_vs_kl(result.history),
            "kl_per_dim": kl_per_dim(model, split),
        }


def log_fit_figures(tracker: Any, result: Any) -> None:
    """Make every figure of ``result`` and log it as a PNG artifact through ``tracker``."""
    for name, fig in fit_figures(result).items():
        tracker.log_figure(fig, FIGURE_FILES[name])
        fig.clear()
