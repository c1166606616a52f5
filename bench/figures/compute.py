"""The data each figure of a trained CVAE shows, computed from the model (numpy arrays out).

:mod:`bench.figures.kinds` describes the figures and :mod:`bench.figures.draw` draws them; this module
runs the model to fill them in. Image grids are tiled by :func:`torchvision.utils.make_grid`.
:func:`fit_figure_data` leaves the model as it found it (the same train/eval mode) and draws nothing
from the global torch RNG (prior samples come from their own seeded generator), so computing the
figures before the final test metrics does not change those metrics (tracked and untracked runs
report the same numbers), and a thread may compute them while another trains: a save and restore of
the global RNG state there would rewind the other thread's stream (batched trials,
:mod:`studies.batch_runner`).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from bench.data import Split
from bench.figures.kinds import FigureData, ImageGrid, KLPerDim, TrainingCurves
from models import CVAE

#: White pixels between the cells of an image grid and around it.
GRID_PAD = 1


@functools.lru_cache(maxsize=None)
def make_grid_function() -> Callable[..., torch.Tensor]:
    """:func:`torchvision.utils.make_grid`; when torchvision is not imported yet, from its ``utils.py``
    alone (:func:`load_torchvision_utils`), else (or if that fails) by the ordinary import."""
    if "torchvision.utils" not in sys.modules:
        try:
            return load_torchvision_utils().make_grid
        except Exception:  # noqa: BLE001 - a torchvision whose utils.py needs the package: import it
            pass
    from torchvision.utils import make_grid

    return make_grid


def load_torchvision_utils():
    """torchvision's ``utils.py`` executed on its own, as a private module (not in ``sys.modules``).

    ``import torchvision.utils`` runs the package's ``__init__``, whose ``ops`` import ``torch._dynamo``:
    ~0.5 s of the end of every tracked run (figures are computed after training), for one function
    of a file that imports only torch, numpy and PIL.
    """
    package = importlib.util.find_spec("torchvision")  # locates the package without importing it
    if package is None or not package.submodule_search_locations:
        raise ImportError("torchvision is not installed")
    path = Path(next(iter(package.submodule_search_locations))) / "utils.py"
    spec = importlib.util.spec_from_file_location("bench.figures._torchvision_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def image_grid(images: torch.Tensor, nrow: int, title: str, row_labels: Sequence[str] = (),
               display_px: int | None = None) -> ImageGrid:
    """(N, C, H, W) images in [0, 1] tiled ``nrow`` to a row by :func:`torchvision.utils.make_grid`.

    The grid's pixels are (rows*(H+1)+1, nrow*(W+1)+1) for C = 1 (make_grid repeats a grey channel
    three times: one is kept) or (..., ..., 3) for C = 3, float32, white between cells. ``display_px``:
    see :class:`ImageGrid`.
    """
    images = images.detach().float().clamp(0.0, 1.0).cpu()
    grid = make_grid_function()(images, nrow=nrow, padding=GRID_PAD, pad_value=1.0)
    pixels = grid[0] if images.shape[1] == 1 else grid.permute(1, 2, 0)
    return ImageGrid(pixels.contiguous().numpy(), title, cell_px=images.shape[-2],
                     row_labels=tuple(row_labels), pad=GRID_PAD, display_px=display_px)


def reconstructions(model: CVAE, split: Split, n: int = 10) -> ImageGrid:
    """The first ``n`` examples of ``split`` (top row) over their reconstructions (bottom row)."""
    n = min(n, len(split))
    x, y = split.x[:n], split.y[:n]
    images = torch.cat([x, model.reconstruct(x, y).to(x.dtype)])
    return image_grid(images, nrow=n, title="originals (top) and reconstructions (bottom)",
                      row_labels=("data", "recon"))


def class_samples(model: CVAE, class_names: Sequence[str], per_class: int = 10, seed: int = 0) -> ImageGrid:
    """Samples from the prior, one row per class (decoder means, z ~ N(0, I) from ``seed``)."""
    device = next(model.parameters()).device
    k, latent = len(class_names), model.cfg.latent_dim
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(k * per_class, latent, generator=gen).to(device)
    y = torch.arange(k, device=device).repeat_interleave(per_class)
    images = model.generate(y, z)
    return image_grid(images, nrow=per_class, title="class-conditional samples (one row per class)",
                      row_labels=[str(c) for c in class_names])


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
    return image_grid(images, nrow=steps,
                      title=f"latent traversal, class {int(y[0])}: mu ± {span:g} per dim (KL nats)",
                      row_labels=[f"z{d} ({kl[d]:.2f})" for d in order.tolist()])


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
    :data:`bench.figures.kinds.FIGURE_FILES` (images from the val split unless ``split`` is given)."""
    model, data = result.model, result.data
    split = split if split is not None else data.val
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return {
                "reconstructions": reconstructions(model, split),
                "class_samples": class_samples(model, data.class_names),
                "latent_traversal": latent_traversal(model, split),
                "recon_vs_kl": training_curves(result.history),
                "kl_per_dim": kl_per_dim(model, split),
            }
    finally:
        model.train(was_training)
