"""What each figure of a trained CVAE shows, as plain numpy data (no torch, no matplotlib).

:mod:`bench.figures.compute` fills these in from the model (training process) and
:mod:`bench.figures.draw` draws them (possibly in the tracking process, which must never import
torch: these classes are what travels between the two, pickled). Images are decoder means in
[0, 1]; KL and reconstruction terms are nats per example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

#: Artifact file of each figure, under the run's artifact root.
FIGURE_FILES = {
    "reconstructions": "figures/reconstructions.png",
    "class_samples": "figures/class_samples.png",
    "latent_traversal": "figures/latent_traversal.png",
    "recon_vs_kl": "figures/recon_vs_kl.png",
    "kl_per_dim": "figures/kl_per_dim.png",
}


@dataclass(frozen=True)
class ImageGrid:
    """Images tiled row-major in one array, with a title and one optional label per row.

    ``pixels`` is (H, W) grey or (H, W, 3) RGB, float32 in [0, 1]; each cell is ``cell_px`` pixels
    square with ``pad`` pixels of white between cells and around the grid, so
    H = rows * (cell_px + pad) + pad. ``display_px``: how many pixels high a cell is drawn, about (the
    image is enlarged by a whole factor; None: the figures' default, 32).
    """

    pixels: np.ndarray
    title: str
    cell_px: int
    row_labels: tuple[str, ...] = ()
    pad: int = 1
    display_px: int | None = None


@dataclass(frozen=True)
class TrainingCurves:
    """Per-epoch reconstruction and KL terms of training and validation, nats per example.

    Every field is a float array of shape (epochs,); ``epochs`` holds the epoch numbers (1-based).
    """

    epochs: np.ndarray
    train_recon: np.ndarray
    train_kl: np.ndarray
    val_recon: np.ndarray
    val_kl: np.ndarray


@dataclass(frozen=True)
class KLPerDim:
    """KL(q(z_d|x,c) || N(0, 1)) of each latent dimension d, averaged over a split: (latent_dim,) nats per example."""

    kl: np.ndarray


FigureData = Union[ImageGrid, TrainingCurves, KLPerDim]
