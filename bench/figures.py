"""Figures of a trained CVAE, logged as PNG artifacts of its MLflow run: what each shows, and drawing it.

A figure is described by plain numpy data (:class:`ImageGrid`, :class:`TrainingCurves`,
:class:`KLPerDim`), computed from the model by :mod:`bench.figure_data` and drawn here. The split
lets ``cvae-bench train`` compute the data in the training process and draw it in its tracking
process (:mod:`bench.tracking_process`): this module imports neither torch nor, until something is
drawn, matplotlib. Images are decoder means in [0, 1]; KL and reconstruction are nats per example.

Drawing is kept cheap (tens of ms a figure): image grids are placed pixel for pixel on the figure
(``figimage``, no axes, labels as figure text), plots are small and use a fixed layout (no
constrained layout). Figures are built without pyplot (no global figure registry, safe from worker
threads, no GUI backend needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Union

import numpy as np

if TYPE_CHECKING:  # matplotlib costs ~0.3 s to import: only a process that draws pays for it
    from matplotlib.figure import Figure

#: Artifact file of each figure, under the run's artifact root.
FIGURE_FILES = {
    "reconstructions": "figures/reconstructions.png",
    "class_samples": "figures/class_samples.png",
    "latent_traversal": "figures/latent_traversal.png",
    "recon_vs_kl": "figures/recon_vs_kl.png",
    "kl_per_dim": "figures/kl_per_dim.png",
}

#: Every figure is made at this resolution (pixels per inch), the one RunTracker.log_figure saves at.
DPI = 100
#: Image grids: each image is enlarged by a whole factor to about this many pixels high.
CELL_TARGET_PX = 32
#: Line and bar plots: small type, so that small figures (few pixels to draw) stay legible.
PLOT_STYLE = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
              "legend.fontsize": 7, "lines.markersize": 4}


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


def draw(data: FigureData) -> "Figure":
    """The matplotlib figure showing ``data``."""
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


def draw_image_grid(grid: ImageGrid) -> "Figure":
    """The grid enlarged pixel for pixel (nearest neighbour), its title above, row labels at the left."""
    from matplotlib.figure import Figure

    scale = cell_scale(grid.cell_px)
    image = np.repeat(np.repeat(grid.pixels, scale, axis=0), scale, axis=1)
    h, w = image.shape[:2]
    # Margins in pixels; text widths estimated from the font size (7 pt labels, 9 pt title at DPI).
    left = 8 + (6 * max(map(len, grid.row_labels)) if grid.row_labels else 0)
    top, bottom, right = 22, 6, 8
    width = max(left + w + right, 16 + 7 * len(grid.title))
    height = top + h + bottom
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    x0 = left + (width - left - right - w) // 2
    fig.figimage(image, xo=x0, yo=bottom, cmap="gray" if image.ndim == 2 else None, vmin=0.0, vmax=1.0,
                 origin="upper")
    fig.text(0.5, 1 - 4 / height, grid.title, ha="center", va="top", fontsize=9)
    for i, label in enumerate(grid.row_labels):
        centre = bottom + h - (grid.pad + grid.cell_px / 2 + i * (grid.cell_px + grid.pad)) * scale
        fig.text((x0 - 4) / width, centre / height, label, ha="right", va="center", fontsize=7)
    return fig


def draw_training_curves(curves: TrainingCurves) -> "Figure":
    """Recon and KL per epoch (train dashed, val solid), and the validation rate-distortion path."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(PLOT_STYLE):
        fig = Figure(figsize=(8.4, 2.5), dpi=DPI)
        fig.subplots_adjust(left=0.065, right=0.985, bottom=0.17, top=0.9, wspace=0.3)
        ax_recon, ax_kl, ax_rd = fig.subplots(1, 3)
        for split, style in (("train", "--"), ("val", "-")):
            ax_recon.plot(curves.epochs, getattr(curves, f"{split}_recon"), style, marker=".", label=split)
            ax_kl.plot(curves.epochs, getattr(curves, f"{split}_kl"), style, marker=".", label=split)
        ax_recon.set(title="reconstruction (distortion)", xlabel="epoch", ylabel="nats / example")
        ax_kl.set(title="KL (rate)", xlabel="epoch", ylabel="nats / example")
        ax_recon.legend()
        ax_kl.legend()
        ax_rd.plot(curves.val_kl, curves.val_recon, "-", color="0.7", zorder=1)
        ax_rd.scatter(curves.val_kl, curves.val_recon, c=curves.epochs, cmap="viridis", s=12, zorder=2)
        if len(curves.epochs):  # the colour runs dark (first epoch) to yellow (last): name both ends
            for i, side in ((0, -1), (-1, 1)):
                ax_rd.annotate(f"epoch {int(curves.epochs[i])}", (curves.val_kl[i], curves.val_recon[i]),
                               xytext=(5 * side, 0), textcoords="offset points", va="center",
                               ha="left" if side > 0 else "right")
        ax_rd.set(title="validation rate-distortion path", xlabel="val_kl (rate, nats)",
                  ylabel="val_recon (distortion, nats)")
    return fig


def draw_kl_per_dim(data: KLPerDim) -> "Figure":
    """Bar chart of the KL of each latent dimension (nats per example), total in the title."""
    import matplotlib
    from matplotlib.figure import Figure

    kl = np.asarray(data.kl, dtype=float)
    with matplotlib.rc_context(PLOT_STYLE):
        fig = Figure(figsize=(max(3.2, 0.13 * len(kl) + 1.0), 2.2), dpi=DPI)
        fig.subplots_adjust(left=0.15, right=0.97, bottom=0.2, top=0.88)
        ax = fig.add_subplot()
        ax.bar(np.arange(len(kl)), kl, color="tab:blue")
        ax.set(title=f"KL per latent dimension (total {kl.sum():.2f} nats)", xlabel="latent dimension",
               ylabel="nats / example")
    return fig


def warm_up() -> None:
    """Import matplotlib and draw one small figure with text (fonts loaded), so the next draw is fast."""
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1), dpi=DPI)
    fig.text(0.5, 0.5, "0.1 nats", fontsize=9)
    fig.savefig(io.BytesIO(), format="png")


# --------------------------------------------------------------------------------------------------
# Logging


def log_figures(tracker: Any, figure_data: Mapping[str, FigureData]) -> None:
    """Draw each figure of ``figure_data`` (keyed like :data:`FIGURE_FILES`) and log it through ``tracker``."""
    for name, data in figure_data.items():
        fig = draw(data)
        tracker.log_figure(fig, FIGURE_FILES[name])
        fig.clear()


def fit_figures(result: Any, split: Any = None) -> dict[str, "Figure"]:
    """All figures of a :class:`bench.fit.FitResult`, keyed like :data:`FIGURE_FILES` (val split)."""
    from .figure_data import fit_figure_data

    return {name: draw(data) for name, data in fit_figure_data(result, split).items()}


def log_fit_figures(tracker: Any, result: Any) -> None:
    """Make every figure of ``result`` and log it as a PNG artifact through ``tracker``."""
    from .figure_data import fit_figure_data

    log_figures(tracker, fit_figure_data(result))
