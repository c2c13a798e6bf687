"""Small PNG charts drawn with Pillow only: loss-vs-ratio curves and the calibration scatter."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

__all__ = ["SIZE", "line_chart", "scatter_chart", "nice_ticks"]

SIZE = (720, 480)
COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127)]
_MARGIN = dict(left=72, right=170, top=36, bottom=52)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count, 1)
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= m * step)
    start = math.floor(lo / step) * step
    ticks, v = [], start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _label(v: float) -> str:
    return f"{v:.3g}"


class _Axes:
    """Maps data to pixels and draws frame, ticks, grid and labels."""

    def __init__(self, draw: ImageDraw.ImageDraw, xs, ys, title, xlabel, ylabel, size=SIZE):
        self.draw, self.font = draw, ImageFont.load_default()
        w, h = size
        self.box = (_MARGIN["left"], _MARGIN["top"], w - _MARGIN["right"], h - _MARGIN["bottom"])
        finite = lambda v: [x for x in v if math.isfinite(x)] or [0.0, 1.0]
        self.xt = nice_ticks(min(finite(xs)), max(finite(xs)))
        self.yt = nice_ticks(min(finite(ys)), max(finite(ys)))
        x0, y0, x1, y1 = self.box
        draw.rectangle(self.box, outline=(0, 0, 0))
        for v in self.xt:
            px = self.px(v, 0)[0]
            draw.line([(px, y0), (px, y1)], fill=(230, 230, 230))
            draw.line([(px, y1), (px, y1 + 4)], fill=(0, 0, 0))
            self._text((px, y1 + 6), _label(v), "mt")
        for v in self.yt:
            py = self.px(0, v)[1]
            draw.line([(x0, py), (x1, py)], fill=(230, 230, 230))
            draw.line([(x0 - 4, py), (x0, py)], fill=(0, 0, 0))
            self._text((x0 - 6, py), _label(v), "rm")
        draw.rectangle(self.box, outline=(0, 0, 0))
        self._text(((x0 + x1) / 2, 8), title, "mt")
        self._text(((x0 + x1) / 2, y1 + 24), xlabel, "mt")
        self._text((8, y0 - 24), ylabel, "lt")

    def _text(self, xy, text, anchor):
        # anchors by hand (l/m/r, t/m): bitmap fonts (Pillow without FreeType) reject ``anchor``
        left, top, right, bottom = self.draw.textbbox((0, 0), text, font=self.font)
        w, h = right - left, bottom - top
        x = xy[0] - {"l": 0, "m": w / 2, "r": w}[anchor[0]] - left
        y = xy[1] - {"t": 0, "m": h / 2}[anchor[1]] - top
        self.draw.text((x, y), text, fill=(0, 0, 0), font=self.font)

    def px(self, x: float, y: float) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        fx = (x - self.xt[0]) / ((self.xt[-1] - self.xt[0]) or 1)
        fy = (y - self.yt[0]) / ((self.yt[-1] - self.yt[0]) or 1)
        return x0 + fx * (x1 - x0), y1 - fy * (y1 - y0)

    def legend(self, entries: Sequence[tuple[str, tuple]]):
        x, y = self.box[2] + 12, self.box[1] + 4
        for i, (name, color) in enumerate(entries):
            cy = y + 16 * i + 6
            self.draw.line([(x, cy), (x + 18, cy)], fill=color, width=3)
            self._text((x + 24, cy), name, "lm")


def line_chart(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str = "",
               xlabel: str = "", ylabel: str = "", size=SIZE) -> Image.Image:
    """One line with point markers per named series {name: (xs, ys)}; legend on the right."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    xs = [float(x) for s in series.values() for x in s[0]]
    ys = [float(y) for s in series.values() for y in s[1]]
    axes = _Axes(draw, xs, ys, title, xlabel, ylabel, size)
    entries = []
    for i, (name, (sx, sy)) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        pts = [axes.px(float(x), float(y)) for x, y in zip(sx, sy) if math.isfinite(float(y))]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2)
        for px, py in pts:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=color)
        entries.append((name, color))
    axes.legend(entries)
    return image


def scatter_chart(x: Sequence[float], y: Sequence[float], bins: Sequence[tuple[float, float]] = (),
                  title: str = "", xlabel: str = "", ylabel: str = "", size=SIZE,
                  diagonal: bool = True, hlines: Sequence[tuple[float, str]] = ()) -> Image.Image:
    """Points (x, y), binned means (bins: (x, y) pairs) as a line, and the y = x diagonal
    (``diagonal``) or labelled horizontal lines (``hlines``: (y, label) pairs)."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    x, y = [float(v) for v in x], [float(v) for v in y]
    if diagonal:
        lo = min(x + y) if x else 0.0
        hi = max(x + y) if x else 1.0
        axes = _Axes(draw, x + [lo, hi], y + [lo, hi], title, xlabel, ylabel, size)
        draw.line([axes.px(lo, lo), axes.px(hi, hi)], fill=(160, 160, 160), width=1)
    else:
        levels = [float(v) for v, _ in hlines]
        axes = _Axes(draw, x or [0.0, 1.0], (y + levels) or [0.0, 1.0], title, xlabel, ylabel, size)
        x0, x1 = (min(x), max(x)) if x else (0.0, 1.0)
        for i, (level, _) in enumerate(hlines):
            draw.line([axes.px(x0, level), axes.px(x1, level)], fill=COLORS[(i + 2) % len(COLORS)], width=1)
    for px, py in (axes.px(a, b) for a, b in zip(x, y)):
        draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=COLORS[0])
    if len(bins) > 1:
        draw.line([axes.px(a, b) for a, b in bins], fill=COLORS[1], width=2)
    for px, py in (axes.px(a, b) for a, b in bins):
        draw.rectangle([px - 3, py - 3, px + 3, py + 3], fill=COLORS[1])
    extra = [("y = x", (160, 160, 160))] if diagonal else [
        (label, COLORS[(i + 2) % len(COLORS)]) for i, (_, label) in enumerate(hlines)]
    axes.legend([("frames", COLORS[0]), ("bin means", COLORS[1]), *extra])
    return image
