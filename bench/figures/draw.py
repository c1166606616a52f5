"""Figures of a trained CVAE, logged as PNG artifacts of its MLflow run: what each shows, and drawing it.

A figure is described by plain numpy data (:class:`ImageGrid`, :class:`TrainingCurves`,
:class:`KLPerDim`), computed from the model by :mod:`bench.figures.compute` and drawn here. The split
lets ``cvae-bench train`` compute the data in the training process and draw it in its tracking
process (:mod:`bench.tracking.process`): this module imports neither torch nor, until something is
drawn, Pillow. Images are decoder means in [0, 1]; KL and reconstruction are nats per example.

Drawing takes a few milliseconds a figure (:mod:`bench.figures.raster_plot`, straight onto a Pillow image):
image grids are placed pixel for pixel, enlarged by a whole factor; the plots have titles, axis
labels, ticks and legends like their matplotlib originals, without matplotlib's ~0.3 s import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Union

import numpy as np

if TYPE_CHECKING:
    from PIL.Image import Image

#: Artifact file of each figure, under the run's artifact root.
FIGURE_FILES = {
    "reconstructions": "figures/reconstructions.png",
    "class_samples": "figures/class_samples.png",
    "latent_traversal": "figures/latent_traversal.png",
    "recon_vs_kl": "figures/recon_vs_kl.png",
    "kl_per_dim": "figures/kl_per_dim.png",
}

#: Image grids: each image is enlarged by a whole factor to about this many pixels high.
CELL_TARGET_PX = 32
#: Text heights in pixels: titles, and the labels of rows.
TITLE_PX, LABEL_PX = 13, 11
#: Height of the band above an image grid that holds its title (pixels).
TITLE_BAND_PX = 26


# --------------------------------------------------------------------------------------------------
# What a figure shows


@dataclass(frozen=True)
class ImageGrid:
    """Images tiled row-major in one array, with a title and one optional label per row.

    ``pixels`` is (H, W) grey or (H, W, 3) RGB, float32 in [0, 1]; each cell is ``cell_px`` pixels
    square with ``pad`` pixels of white between cells and around the grid.
    """

    pixels: np.ndarray
    title: str
    cell_px: int
    row_labels: tuple[str, ...] = ()
    pad: int = 1


@dataclass(frozen=True)
class TrainingCurves:
    """Per-epoch reconstruction and KL terms of training and validation, nats per example."""

    epochs: np.ndarray
    train_recon: np.ndarray
    train_kl: np.ndarray
    val_recon: np.ndarray
    val_kl: np.ndarray


@dataclass(frozen=True)
class KLPerDim:
    """KL(q(z_d|x,c) || N(0, 1)) of each latent dimension d, averaged over a split (nats per example)."""

    kl: np.ndarray


FigureData = Union[ImageGrid, TrainingCurves, KLPerDim]


def tile(images: np.ndarray, nrow: int, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> one (rows*(H+pad)+pad, nrow*(W+pad)+pad[, C]) float32 array, row-major."""
    x = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    n, c, h, w = x.shape
    rows = -(-n // nrow)
    grid = np.ones((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top:top + h, left:left + w] = x[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


# --------------------------------------------------------------------------------------------------
# Drawing


def draw(data: FigureData) -> "Image":
    """The picture of ``data`` (a Pillow image, saved as PNG when logged)."""
    if isinstance(data, ImageGrid):
        return draw_image_grid(data)
    if isinstance(data, TrainingCurves):
        return draw_training_curves(data)
    if isinstance(data, KLPerDim):
        return draw_kl_per_dim(data)
    raise TypeError(f"no figure for {type(data).__name__}")


def cell_scale(cell_px: int) -> int:
    """The whole factor :func:`draw_image_grid` enlarges images of ``cell_px`` pixels by."""
    return max(1, round(CELL_TARGET_PX / cell_px)) if cell_px else 1


def grid_origin(grid: ImageGrid) -> tuple[int, int]:
    """Where :func:`draw_image_grid` puts the top-left pixel of the grid (x, y)."""
    from bench.figures.raster_plot import font

    labels = max((font(LABEL_PX).getlength(label) for label in grid.row_labels), default=0.0)
    return 8 + (int(labels) + 6 if grid.row_labels else 0), TITLE_BAND_PX


def draw_image_grid(grid: ImageGrid) -> "Image":
    """The grid enlarged pixel for pixel (nearest neighbour), its title above, row labels at the left."""
    from bench.figures.raster_plot import Canvas, font

    scale = cell_scale(grid.cell_px)
    h, w = grid.pixels.shape[0] * scale, grid.pixels.shape[1] * scale
    left, top = grid_origin(grid)
    width = max(left + w + 8, int(font(TITLE_PX).getlength(grid.title)) + 16)
    canvas = Canvas(width, top + h + 8, mode="L" if grid.pixels.ndim == 2 else "RGB")
    canvas.paste_array(grid.pixels, (left, top), scale)
    canvas.text((width / 2, 6), grid.title, size=TITLE_PX, anchor="mt")
    for i, label in enumerate(grid.row_labels):
        centre = top + (grid.pad + grid.cell_px / 2 + i * (grid.cell_px + grid.pad)) * scale
        canvas.text((left - 5, centre), label, size=LABEL_PX, anchor="rm")
    return canvas.image


def _epoch_ticks(epochs: np.ndarray) -> list[float]:
    from bench.figures.raster_plot import nice_ticks

    ticks = nice_ticks(float(epochs.min()), float(epochs.max())) if len(epochs) else []
    return [t for t in ticks if t == int(t)] or [float(t) for t in epochs[:1]]


def draw_training_curves(curves: TrainingCurves) -> "Image":
    """Recon and KL per epoch (train dashed, val solid), and the validation rate-distortion path
    (points coloured dark to yellow by epoch, the first and last named)."""
    from bench.figures.raster_plot import GREY, TAB_BLUE, TAB_ORANGE, Axes, Canvas, padded_range, viridis

    panel, height = 300, 280
    canvas = Canvas(3 * panel, height)
    boxes = [(i * panel + 62, 26, i * panel + panel - 14, height - 46) for i in range(3)]
    epochs = np.asarray(curves.epochs, dtype=float)
    xlim = padded_range(epochs, 0.04)
    for box, term, title in ((boxes[0], "recon", "reconstruction (distortion)"), (boxes[1], "kl", "KL (rate)")):
        train, val = getattr(curves, f"train_{term}"), getattr(curves, f"val_{term}")
        ax = Axes(canvas, box, xlim, padded_range([*train, *val]), title=title, xlabel="epoch",
                  ylabel="nats / example", xticks=_epoch_ticks(epochs))
        ax.line(epochs, train, TAB_BLUE, dashed=True, markers=True)
        ax.line(epochs, val, TAB_ORANGE, markers=True)
        ax.legend([("train", TAB_BLUE, True), ("val", TAB_ORANGE, False)], [(epochs, train), (epochs, val)])
    rate, distortion = np.asarray(curves.val_kl, dtype=float), np.asarray(curves.val_recon, dtype=float)
    ax = Axes(canvas, boxes[2], padded_range(rate, 0.12), padded_range(distortion, 0.08),
              title="validation rate-distortion path", xlabel="val_kl (rate, nats)",
              ylabel="val_recon (distortion, nats)")
    ax.line(rate, distortion, GREY, width=1)
    span = max(len(epochs) - 1, 1)
    ax.scatter(rate, distortion, [viridis(i / span) for i in range(len(epochs))])
    if len(epochs):
        ax.label(rate[0], distortion[0], f"epoch {int(epochs[0])}", right=rate[0] < rate.mean())
        ax.label(rate[-1], distortion[-1], f"epoch {int(epochs[-1])}", right=rate[-1] < rate.mean())
    return canvas.image


def draw_kl_per_dim(data: KLPerDim) -> "Image":
    """Bar chart of the KL of each latent dimension (nats per example), total in the title."""
    from bench.figures.raster_plot import TAB_BLUE, Axes, Canvas, nice_ticks, padded_range

    kl = np.asarray(data.kl, dtype=float)
    n = len(kl)
    width, height = max(380, 14 * n + 100), 240
    canvas = Canvas(width, height)
    ticks = [t for t in nice_ticks(0.0, max(n - 1, 1)) if t == int(t)]
    ax = Axes(canvas, (74, 26, width - 14, height - 46), (-0.7, n - 0.3), padded_range(kl, 0.06, floor=0.0),
              title=f"KL per latent dimension (total {kl.sum():.2f} nats)", xlabel="latent dimension",
              ylabel="nats / example", xticks=ticks)
    ax.bars(np.arange(n), kl, TAB_BLUE)
    return canvas.image


# --------------------------------------------------------------------------------------------------
# Logging


def warm_up() -> None:
    """Import the drawing code, load its fonts and the PNG encoder, so that the first figure is as
    fast as the rest."""
    import io

    from bench.figures.raster_plot import Canvas, font

    for size in {TITLE_PX, LABEL_PX, 10, 11, 12}:
        font(size)
    Canvas(8, 8).save_png(io.BytesIO())


def save_png(data: FigureData, path) -> None:
    """Draw ``data`` and write it as a PNG file at ``path``."""
    draw(data).save(path, format="PNG", compress_level=1)


def fit_figures(result: Any, split: Any = None) -> dict[str, "Image"]:
    """All figures of a :class:`bench.training.loop.FitResult`, keyed like :data:`FIGURE_FILES` (val split)."""
    from bench.figures.compute import fit_figure_data

    return {name: draw(data) for name, data in fit_figure_data(result, split).items()}
