"""Just enough plotting, drawn straight onto a Pillow image: text, image cells, and axes with ticks,
lines, markers, bars and a legend.

The run figures (:mod:`bench.figures.draw`) are drawn with this instead of matplotlib, whose import
(~0.3 s) and figure machinery (tens of ms a plot) would be most of what tracking a short run costs;
here a figure takes a few milliseconds. Coordinates are pixels, origin top-left. Text uses DejaVu
Sans (the font matplotlib ships; found without importing matplotlib), else Pillow's default font.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Color = tuple[int, int, int]
BLACK: Color = (0, 0, 0)
GREY: Color = (178, 178, 178)
TAB_BLUE: Color = (31, 119, 180)
TAB_ORANGE: Color = (255, 127, 14)
#: viridis at 0, 1/4, 1/2, 3/4 and 1; :func:`viridis` interpolates between them.
_VIRIDIS = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=float)


@functools.lru_cache(maxsize=None)
def font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans at ``size`` pixels (matplotlib's copy), else Pillow's default font."""
    spec = importlib.util.find_spec("matplotlib")  # locates the package without importing it
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.exists():
            return ImageFont.truetype(str(path), size)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def viridis(t: float) -> Color:
    """The viridis colour map at ``t`` in [0, 1]."""
    x = min(max(float(t), 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(x), len(_VIRIDIS) - 2)
    rgb = _VIRIDIS[i] + (x - i) * (_VIRIDIS[i + 1] - _VIRIDIS[i])
    return tuple(int(round(v)) for v in rgb)  # type: ignore[return-value]


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """About ``target`` round tick values (steps of 1, 2, 2.5 or 5 x 10^k) within [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(target, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def tick_label(value: float, ticks: Sequence[float]) -> str:
    """``value`` with the fewest decimals that show the tick spacing exactly (0.25 -> 2 decimals)."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = 0
    while decimals < 6 and abs(round(step, decimals) - step) > 1e-9 * step:
        decimals += 1
    return f"{value:.{decimals}f}"


def padded_range(values: Sequence[float], pad: float = 0.05, floor: float | None = None) -> tuple[float, float]:
    """(lo, hi) around finite ``values`` with ``pad`` of the span either side (never empty)."""
    finite = [float(v) for v in values if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if floor is not None:
        lo = min(lo, floor)
    span = hi - lo or abs(hi) or 1.0
    return (lo if floor is not None and lo == floor else lo - pad * span), hi + pad * span


class Canvas:
    """A white image to draw on (RGB, or L for grey-only content)."""

    def __init__(self, width: int, height: int, mode: str = "RGB") -> None:
        self.image = Image.new(mode, (int(width), int(height)), "white")
        self.draw = ImageDraw.Draw(self.image)

    def text(self, xy: tuple[float, float], text: str, size: int = 11, anchor: str = "la", fill: Color = BLACK,
             vertical: bool = False) -> None:
        """``text`` at ``xy``; ``anchor`` as in Pillow (e.g. "mm" centred, "rm" right-middle).
        ``vertical`` turns it 90 degrees (reads bottom to top), centred on ``xy``."""
        colour = fill if self.image.mode == "RGB" else int(sum(fill) / 3)
        if not vertical:
            self.draw.text(xy, text, font=font(size), fill=colour, anchor=anchor)
            return
        left, top, right, bottom = self.draw.textbbox((0, 0), text, font=font(size), anchor="lt")
        mask = Image.new("L", (right - left + 2, bottom - top + 2), 0)
        ImageDraw.Draw(mask).text((1, 1), text, font=font(size), fill=255, anchor="lt")
        mask = mask.rotate(90, expand=True)
        solid = Image.new(self.image.mode, mask.size, colour)
        self.image.paste(solid, (int(xy[0] - mask.width / 2), int(xy[1] - mask.height / 2)), mask)

    def paste_array(self, pixels: np.ndarray, xy: tuple[int, int], scale: int = 1) -> None:
        """An (H, W) grey or (H, W, 3) RGB array in [0, 1], each pixel ``scale`` x ``scale``."""
        data = (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if data.ndim == 2 and self.image.mode == "RGB":
            data = np.repeat(data[:, :, None], 3, axis=2)
        tile = Image.fromarray(data)
        if scale > 1:
            tile = tile.resize((tile.width * scale, tile.height * scale), Image.Resampling.NEAREST)
        self.image.paste(tile, xy)

    def save_png(self, path) -> None:
        self.image.save(path, format="PNG")


class Axes:
    """A data rectangle at ``box`` = (left, top, right, bottom) pixels, framed, with ticks and labels."""

    def __init__(self, canvas: Canvas, box: tuple[int, int, int, int], xlim: tuple[float, float],
                 ylim: tuple[float, float], *, title: str = "", xlabel: str = "", ylabel: str = "",
                 xticks: Sequence[float] | None = None) -> None:
        self.canvas, self.draw = canvas, canvas.draw
        self.left, self.top, self.right, self.bottom = box
        self.xlim, self.ylim = xlim, ylim
        self.draw.rectangle(box, outline=BLACK)
        xs = [t for t in (xticks if xticks is not None else nice_ticks(*xlim)) if xlim[0] <= t <= xlim[1]]
        ys = [t for t in nice_ticks(*ylim) if ylim[0] <= t <= ylim[1]]
        for t in xs:
            x = self.x(t)
            self.draw.line([(x, self.bottom), (x, self.bottom + 3)], fill=BLACK)
            canvas.text((x, self.bottom + 5), tick_label(t, xs), size=10, anchor="mt")
        for t in ys:
            y = self.y(t)
            self.draw.line([(self.left - 3, y), (self.left, y)], fill=BLACK)
            canvas.text((self.left - 5, y), tick_label(t, ys), size=10, anchor="rm")
        centre_x, centre_y = (self.left + self.right) / 2, (self.top + self.bottom) / 2
        if title:
            canvas.text((centre_x, self.top - 5), title, size=12, anchor="md")
        if xlabel:
            canvas.text((centre_x, self.bottom + 19), xlabel, size=11, anchor="mt")
        if ylabel:
            widest = max((font(10).getlength(tick_label(t, ys)) for t in ys), default=0.0)
            canvas.text((self.left - 14 - widest, centre_y), ylabel, size=11, vertical=True)

    def x(self, value: float) -> float:
        lo, hi = self.xlim
        return self.left + (value - lo) / (hi - lo) * (self.right - self.left)

    def y(self, value: float) -> float:
        lo, hi = self.ylim
        return self.bottom - (value - lo) / (hi - lo) * (self.bottom - self.top)

    def points(self, xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float]]:
        return [(self.x(a), self.y(b)) for a, b in zip(xs, ys) if math.isfinite(a) and math.isfinite(b)]

    def line(self, xs: Sequence[float], ys: Sequence[float], color: Color, *, dashed: bool = False,
             markers: bool = False, width: int = 2) -> None:
        pts = self.points(xs, ys)
        if dashed:
            for a, b in zip(pts, pts[1:]):
                self._dashes(a, b, color, width)
        elif len(pts) > 1:
            self.draw.line(pts, fill=color, width=width, joint="curve")
        if markers:
            self.scatter(xs, ys, [color] * len(pts), radius=2)

    def _dashes(self, a, b, color: Color, width: int, on: float = 6.0, off: float = 4.0) -> None:
        length = math.dist(a, b)
        pos = 0.0
        while pos < length:
            end = min(pos + on, length)
            self.draw.line([(a[0] + (b[0] - a[0]) * pos / length, a[1] + (b[1] - a[1]) * pos / length),
                            (a[0] + (b[0] - a[0]) * end / length, a[1] + (b[1] - a[1]) * end / length)],
                           fill=color, width=width)
            pos = end + off

    def scatter(self, xs: Sequence[float], ys: Sequence[float], colors: Sequence[Color], radius: int = 3) -> None:
        for (px, py), color in zip(self.points(xs, ys), colors):
            self.draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=color)

    def bars(self, xs: Sequence[float], heights: Sequence[float], color: Color, width: float = 0.8) -> None:
        base = self.y(max(self.ylim[0], 0.0))
        for x, h in zip(xs, heights):
            if math.isfinite(h):
                x0, x1 = self.x(x - width / 2), self.x(x + width / 2)
                top = self.y(h)
                self.draw.rectangle([x0, min(top, base), max(x1 - 1, x0), max(top, base)], fill=color)

    def label(self, x: float, y: float, text: str, *, right: bool = False) -> None:
        """``text`` just beside the data point (x, y): left of it with ``right=False``, else right."""
        px, py = self.x(x), self.y(y)
        self.canvas.text((px + (6 if right else -6), py), text, size=10, anchor="lm" if right else "rm")

    def legend(self, entries: Sequence[tuple[str, Color, bool]],
               data: Sequence[tuple[Sequence[float], Sequence[float]]] = ()) -> None:
        """(label, colour, dashed) entries in a box, in the top corner that hides fewest ``data`` points
        ((xs, ys) series)."""
        rows = 16
        width = 34 + max(font(10).getlength(label) for label, _, _ in entries)
        height = rows * len(entries) + 4
        y0 = self.top + 6
        corners = (self.right - width - 6, self.left + 6)
        pts = [p for xs, ys in data for p in self.points(xs, ys)]
        x0 = min(corners, key=lambda x: sum(x - 4 <= px <= x + width + 4 and py <= y0 + height + 4 for px, py in pts))
        self.draw.rectangle([x0, y0, x0 + width, y0 + height], fill="white", outline=GREY)
        for i, (label, color, dashed) in enumerate(entries):
            y = y0 + 10 + i * rows
            if dashed:
                self._dashes((x0 + 5, y), (x0 + 27, y), color, 2, on=5.0, off=3.0)
            else:
                self.draw.line([(x0 + 5, y), (x0 + 27, y)], fill=color, width=2)
            self.canvas.text((x0 + 31, y), label, size=10, anchor="lm")
