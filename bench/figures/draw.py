"""Drawing the figures of a trained CVAE (:mod:`bench.figures.kinds`) with matplotlib, as PNG artifacts.

Each figure is a :class:`matplotlib.figure.Figure` with a :class:`FigureCanvasAgg` of its own: no
pyplot, no global figure registry, so figures can be drawn from any thread. matplotlib is imported
inside the functions, so ``import bench.figures.draw`` costs no more than numpy; the writer
process (:mod:`bench.tracking.writer_process`) calls :func:`warm_up` (matplotlib's import, a first
drawing and the frames of the run's figures: ~0.4 s of CPU) while the command sets up. Drawing a
run's five figures then takes ~0.2-0.3 s of one core (2-core EPYC; the three-panel training curves
~0.12 s), at the end of the run.

Image grids are enlarged by a whole factor (nearest neighbour) and placed at whole pixels, so each
image pixel becomes an exact square of the PNG. Sizes below are pixels at :data:`DPI`.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

# What the figures show; re-exported here for the callers that draw them.
from bench.figures.kinds import FIGURE_FILES, FigureData, ImageGrid, KLPerDim, TrainingCurves

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FIGURE_FILES", "FigureData", "ImageGrid", "KLPerDim", "TrainingCurves", "DPI", "GridLayout",
           "draw", "grid_layout", "save_png", "warm_up"]

#: Dots per inch of every figure: 1 pt of text is DPI / 72 pixels.
DPI = 100
#: Image grids: each image is enlarged by a whole factor to about this many pixels high (unless the
#: grid asks for another size, :attr:`ImageGrid.display_px`).
CELL_TARGET_PX = 32
#: Font sizes (points): figure titles, axes titles and labels, tick and row labels.
TITLE_PT, LABEL_PT, TICK_PT = 11, 10, 9
#: Image grids: white margin around everything, height of the title band (pixels).
MARGIN_PX, TITLE_BAND_PX = 8, 28
#: Gap between a row label and the grid (pixels).
ROW_LABEL_GAP_PX = 6


def draw(data: FigureData) -> "Figure":
    """The figure of ``data`` (a matplotlib Figure with an Agg canvas; :func:`save_png` writes it)."""
    if isinstance(data, ImageGrid):
        return draw_image_grid(data)
    if isinstance(data, TrainingCurves):
        return draw_training_curves(data)
    if isinstance(data, KLPerDim):
        return draw_kl_per_dim(data)
    raise TypeError(f"no figure for {type(data).__name__}")


def save_png(data: FigureData, path) -> None:
    """Draw ``data`` and write it as a PNG file at ``path`` (``path`` may also be a binary file object).

    The figure is not kept anywhere (no pyplot registry to close it in): it is freed when this returns.
    """
    _write_png(draw(data), path)


def warm_up() -> None:
    """Import matplotlib and its Agg backend, draw a tiny image grid and bar chart to PNG, and build
    the frames of a run's figures ahead (~0.4 s of CPU, once a process, meant for while training
    runs), so that drawing at the end of the run costs ~40 % less than from nothing."""
    import io

    for data in (ImageGrid(np.ones((10, 19), np.float32), "warm up ± 0.1", cell_px=8, row_labels=("z0 (0.1)",)),
                 KLPerDim(np.ones(2))):
        _write_png(draw(data), io.BytesIO())
    for kind, count in ((ImageGrid, 3), (TrainingCurves, 1), (KLPerDim, 1)):
        for _ in range(count):
            frame = _FRAME_BUILDERS[kind]()
            _write_png(frame, io.BytesIO())  # creates the tick artists, which drawing again reuses
            with _spare_frames_lock:
                _spare_frames.setdefault(kind, []).append(frame)


def _write_png(figure: "Figure", path) -> None:
    # zlib level 1: a few times faster than the default 6, for files ~20 % larger.
    figure.savefig(path, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})


# A figure is drawn on a frame: its figure and axes with what does not depend on the data (titles,
# labels, tick settings). Creating those and their tick artists is ~40 % of drawing a figure, so
# warm_up builds and draws once the frames a run needs (3 grids, 1 of each plot); each is used once,
# then frames are built as they are needed. A drawn frame gives the same picture as a new one.
_spare_frames: dict[type, list["Figure"]] = {}
_spare_frames_lock = threading.Lock()


def _frame(kind: type) -> "Figure":
    """A frame for a figure of ``kind``: one :func:`warm_up` built, if one is left, else a new one."""
    with _spare_frames_lock:
        spares = _spare_frames.get(kind)
        if spares:
            return spares.pop()
    return _FRAME_BUILDERS[kind]()


# --------------------------------------------------------------------------------------------------
# Image grids


@dataclass(frozen=True)
class GridLayout:
    """Where :func:`draw_image_grid` puts a grid: the enlargement ``scale`` (whole factor), the
    top-left pixel of the grid (``left``, ``top``) and the figure's size (``width``, ``height``), pixels."""

    scale: int
    left: int
    top: int
    width: int
    height: int


def _text_width_px(text: str, points: float) -> float:
    """Width of ``text`` in DejaVu Sans (matplotlib's default font) at ``points``, in pixels at :data:`DPI`."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    width, _, _ = text_to_path.get_text_width_height_descent(text, FontProperties(size=points), ismath=False)
    return width * DPI / 72.0


def grid_layout(grid: ImageGrid) -> GridLayout:
    """The layout of ``grid``'s figure: title band above, row labels at the left, grid centred."""
    scale = max(1, round((grid.display_px or CELL_TARGET_PX) / grid.cell_px)) if grid.cell_px else 1
    height_px, width_px = grid.pixels.shape[0] * scale, grid.pixels.shape[1] * scale
    labels_px = max((_text_width_px(label, TICK_PT) for label in grid.row_labels), default=0.0)
    label_band = math.ceil(labels_px) + ROW_LABEL_GAP_PX if grid.row_labels else 0
    body = label_band + width_px
    width = max(body, math.ceil(_text_width_px(grid.title, TITLE_PT))) + 2 * MARGIN_PX
    return GridLayout(scale=scale, left=(width - body) // 2 + label_band, top=TITLE_BAND_PX, width=width,
                      height=TITLE_BAND_PX + height_px + MARGIN_PX)


def draw_image_grid(grid: ImageGrid) -> "Figure":
    """The grid enlarged pixel for pixel (nearest neighbour), its title above, one label per row at the
    left, no axes ticks or frame."""
    layout = grid_layout(grid)
    figure = _frame(ImageGrid)
    figure.set_size_inches(layout.width / DPI, layout.height / DPI)
    height_px, width_px = grid.pixels.shape[0] * layout.scale, grid.pixels.shape[1] * layout.scale
    bottom = layout.height - layout.top - height_px  # matplotlib counts from the bottom-left corner
    (ax,) = figure.axes
    ax.set_position((layout.left / layout.width, bottom / layout.height,
                     width_px / layout.width, height_px / layout.height))
    ax.imshow(_rgb_bytes(grid.pixels), interpolation="nearest", aspect="auto")
    figure.text(0.5, 1.0 - (TITLE_BAND_PX / 2) / layout.height, grid.title, ha="center", va="center",
                fontsize=TITLE_PT)
    # imshow puts pixel centres at whole data coordinates: pixel row r spans r - 0.5 .. r + 0.5.
    label_x = -0.5 - ROW_LABEL_GAP_PX / layout.scale
    for row, label in enumerate(grid.row_labels):
        centre = grid.pad + row * (grid.cell_px + grid.pad) + (grid.cell_px - 1) / 2
        ax.text(label_x, centre, label, ha="right", va="center", fontsize=TICK_PT)
    return figure


def _grid_frame() -> "Figure":
    """A figure with one axes, no ticks or frame (:func:`draw_image_grid` sizes and places them)."""
    figure = _new_figure(100, 100)
    figure.add_axes((0.0, 0.0, 1.0, 1.0)).set_axis_off()
    return figure


def _rgb_bytes(pixels: np.ndarray) -> np.ndarray:
    """(H, W) grey or (H, W, 3) RGB in [0, 1] -> (H, W, 3) uint8, rounded to nearest.

    imshow copies uint8 RGB as it is; floats would pass through a 256-entry colour map (grey) or be
    truncated (RGB), off by up to 2/255."""
    data = (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.repeat(data[:, :, None], 3, axis=2) if data.ndim == 2 else data


# --------------------------------------------------------------------------------------------------
# Plots


def draw_training_curves(curves: TrainingCurves) -> "Figure":
    """Three panels: reconstruction and KL per epoch (train dashed, val solid; nats per example), and
    the validation rate-distortion path (val_kl vs val_recon, points coloured by epoch from dark to
    yellow, the first and last epoch named)."""
    figure = _frame(TrainingCurves)
    axes = figure.axes
    epochs = np.asarray(curves.epochs, dtype=float)
    for ax, term in ((axes[0], "recon"), (axes[1], "kl")):
        ax.plot(epochs, getattr(curves, f"train_{term}"), "o--", color="C0", markersize=3, linewidth=1.5,
                label="train")
        ax.plot(epochs, getattr(curves, f"val_{term}"), "o-", color="C1", markersize=3, linewidth=1.5, label="val")
        ax.legend(fontsize=TICK_PT, loc="best")
    ax = axes[2]
    rate, distortion = np.asarray(curves.val_kl, dtype=float), np.asarray(curves.val_recon, dtype=float)
    ax.plot(rate, distortion, "-", color="0.7", linewidth=1, zorder=1)
    ax.scatter(rate, distortion, c=np.arange(len(epochs)), cmap="viridis", s=18, zorder=2)
    if len(epochs):
        for i in {0, len(epochs) - 1}:
            right = rate[i] < np.nanmean(rate)  # name the point on the side away from the path's centre
            ax.annotate(f"epoch {int(epochs[i])}", (rate[i], distortion[i]), xytext=(6 if right else -6, 0),
                        textcoords="offset points", ha="left" if right else "right", va="center",
                        fontsize=TICK_PT)
        ax.margins(x=0.15, y=0.08)  # room for the names
    return figure


def _curves_frame() -> "Figure":
    """Three labelled panels, 1100 x 330 pixels: recon and KL per epoch (whole epochs on x), rate-distortion."""
    from matplotlib.ticker import MaxNLocator

    width, height = 1100, 330
    figure = _new_figure(width, height)
    figure.subplots_adjust(left=64 / width, right=1 - 14 / width, bottom=48 / height, top=1 - 32 / height,
                           wspace=0.32)
    recon, kl, path = figure.subplots(1, 3)
    _label(recon, "reconstruction (distortion)", "epoch", "nats / example")
    _label(kl, "KL (rate)", "epoch", "nats / example")
    _label(path, "validation rate-distortion path", "val_kl (rate, nats)", "val_recon (distortion, nats)")
    for ax in (recon, kl):
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    return figure


def draw_kl_per_dim(data: KLPerDim) -> "Figure":
    """Bar chart of the KL of each latent dimension (nats per example), the total in the title."""
    kl = np.asarray(data.kl, dtype=float)
    figure = _frame(KLPerDim)
    width, height = max(420, 14 * len(kl) + 110), 260
    figure.set_size_inches(width / DPI, height / DPI)
    figure.subplots_adjust(left=64 / width, right=1 - 14 / width, bottom=44 / height, top=1 - 28 / height)
    (ax,) = figure.axes
    ax.bar(np.arange(len(kl)), kl, width=0.8, color="C0")
    ax.set_title(f"KL per latent dimension (total {kl.sum():.2f} nats)", fontsize=LABEL_PT, y=1.0)
    ax.set_xlim(-0.7, len(kl) - 0.3)
    return figure


def _kl_frame() -> "Figure":
    """One labelled panel: latent dimension (whole numbers) on x, nats / example on y."""
    from matplotlib.ticker import MaxNLocator

    figure = _new_figure(420, 260)
    ax = figure.add_subplot()
    _label(ax, "", "latent dimension", "nats / example")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    return figure


_FRAME_BUILDERS = {ImageGrid: _grid_frame, TrainingCurves: _curves_frame, KLPerDim: _kl_frame}


# --------------------------------------------------------------------------------------------------


def _new_figure(width_px: int, height_px: int) -> "Figure":
    """An empty white figure of ``width_px`` x ``height_px`` pixels at :data:`DPI`, on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(figure)
    return figure


def _label(ax, title: str, xlabel: str, ylabel: str) -> None:
    """Title, axis labels and tick labels of a plot, in the figure's font sizes, ~5 ticks an axis."""
    # An explicit y keeps the title off matplotlib's search for decorations above the axes: a
    # third of the drawing time of a plot, for axes that have none.
    ax.set_title(title, fontsize=LABEL_PT, y=1.0)
    ax.set_xlabel(xlabel, fontsize=LABEL_PT)
    ax.set_ylabel(ylabel, fontsize=LABEL_PT)
    ax.tick_params(labelsize=TICK_PT)
    ax.locator_params(nbins=5)
