"""Figures to RGB arrays, fast enough to draw per request (the demo) and lean on memory.

* :func:`render_rgb`: a matplotlib figure to ``(H, W, 3)`` uint8 through the Agg canvas, whose
  pixel buffer is released at once (a figure is a web of reference cycles that the garbage
  collector frees late, and dozens of pending multi-MB buffers make a server's memory creep).
* :func:`text_band`, :func:`text_columns`: titles, legends and captions drawn with Pillow.
  matplotlib 3.11 rasterises text glyph by glyph in Python, so a figure's long titles and legend
  lines can cost more than all its traces; Pillow draws the same font (matplotlib's DejaVu Sans)
  about ten times faster. Plots keep their short texts (tick labels) in matplotlib.
* :func:`stack_rows`: bands and plots of one width, top to bottom.

    plot = render_rgb(fig, dpi=70)
    title = text_band([TextLine("ProtoECGNet explanation: AFIB (0.93)")], plot.shape[1], 10)
    legend = text_band([TextLine("prototype 3 ...", key_color="tab:red")], plot.shape[1], 8,
                       align="left")
    image = stack_rows([title, plot, legend])      # (H, W, 3) uint8
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

#: Pillow's FreeType fonts are not documented as thread-safe: one band is drawn at a time.
_LOCK = threading.Lock()
_KEY_PX = 28  # length of a legend key line


def render_rgb(fig: Any, dpi: float) -> np.ndarray:
    """Render a matplotlib ``Figure`` at ``dpi`` to ``(H, W, 3)`` uint8.

    The figure is left with a plain canvas: the Agg canvas and its pixel buffer are freed on
    return instead of whenever the garbage collector gets to the figure. Draw it again with a
    new canvas if needed.
    """
    from matplotlib.backend_bases import FigureCanvasBase
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    FigureCanvasBase(fig)  # detach: nothing refers to the Agg canvas any more
    return rgb


@dataclass(frozen=True)
class TextLine:
    """One line of a band.

    Attributes:
        text: the text (wrapped to the band's width when too long).
        key_color: a matplotlib colour: draws a short line of that colour before the text (a
            legend entry); None for plain text.
        bold: bold face.
    """

    text: str
    key_color: str | None = None
    bold: bool = False


@lru_cache(maxsize=16)
def _font(size_px: int, bold: bool) -> Any:
    """matplotlib's DejaVu Sans as a Pillow font of ``size_px`` pixels."""
    from matplotlib import font_manager
    from PIL import ImageFont

    props = font_manager.FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal")
    try:
        return ImageFont.truetype(font_manager.findfont(props), size_px)
    except OSError:  # pragma: no cover - matplotlib always ships DejaVu Sans
        return ImageFont.load_default(size_px)


def _rgb(color: str) -> tuple[int, int, int]:
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return round(r * 255), round(g * 255), round(b * 255)


def _wrap(text: str, font: Any, width_px: float) -> list[str]:
    """Greedy word wrap of ``text`` to ``width_px``."""
    out: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            trial = f"{line} {word}" if line else word
            if line and font.getlength(trial) > width_px:
                out.append(line)
                line = word
            else:
                line = trial
        out.append(line)
    return out


def text_band(
    lines: Sequence[TextLine],
    width_px: int,
    size_px: int,
    *,
    align: str = "center",
    pad_px: int | None = None,
    color: str = "black",
) -> np.ndarray:
    """Lines of text on white, as an RGB array.

    Args:
        lines: the lines, top to bottom (long ones wrap).
        width_px: band width (the width of the plot it goes with).
        size_px: font size in pixels (``points * dpi / 72``).
        align: ``"center"``, or ``"left"``: a left-aligned block centred as a whole, as a
            figure legend is.
        pad_px: margin around the text (default half the font size).
        color: text colour.

    Returns:
        ``(H, width_px, 3)`` uint8; ``H`` is 0 when there are no lines.
    """
    from PIL import Image, ImageDraw

    if align not in ("center", "left"):
        raise ValueError(f"align must be 'center' or 'left', got {align!r}")
    if width_px < 1 or size_px < 1:
        raise ValueError("width_px and size_px must be >= 1")
    if not lines:
        return np.full((0, width_px, 3), 255, dtype=np.uint8)
    pad = size_px // 2 if pad_px is None else pad_px
    step = round(size_px * 1.3)
    key_px = round(_KEY_PX * size_px / 11)
    with _LOCK:
        rows: list[tuple[TextLine, str, Any, bool]] = []
        for ln in lines:
            font = _font(size_px, ln.bold)
            room = width_px - 2 * pad - (key_px + size_px // 2 if ln.key_color else 0)
            for k, part in enumerate(_wrap(ln.text, font, max(room, size_px))):
                rows.append((ln, part, font, k == 0))
        widths = [
            font.getlength(part) + (key_px + size_px // 2 if ln.key_color else 0)
            for ln, part, font, _ in rows
        ]
        block_x = max(pad, round((width_px - max(widths)) / 2))
        img = Image.new("RGB", (width_px, 2 * pad + step * len(rows)), "white")
        draw = ImageDraw.Draw(img)
        ink = _rgb(color)
        for i, ((ln, part, font, first), w) in enumerate(zip(rows, widths)):
            y = pad + i * step
            x = block_x if align == "left" else max(pad, round((width_px - w) / 2))
            if ln.key_color:
                if first:
                    mid = y + step // 2
                    draw.line((x, mid, x + key_px, mid), fill=_rgb(ln.key_color), width=2)
                x += key_px + size_px // 2
            draw.text((x, y), part, fill=ink, font=font)
        return np.asarray(img)


def text_columns(texts: Sequence[str], width_px: int, size_px: int) -> np.ndarray:
    """One centred text per equal-width column, side by side (e.g. titles of two panels).

    Returns:
        ``(H, width_px, 3)`` uint8 (columns that wrap to more lines make the band taller).
    """
    if not texts:
        return np.full((0, width_px, 3), 255, dtype=np.uint8)
    edges = np.linspace(0, width_px, len(texts) + 1).round().astype(int)
    cols = [
        text_band([TextLine(t)], int(b - a), size_px) for t, a, b in zip(texts, edges, edges[1:])
    ]
    height = max(c.shape[0] for c in cols)
    padded = [
        np.pad(c, ((0, height - c.shape[0]), (0, 0), (0, 0)), constant_values=255) for c in cols
    ]
    return np.concatenate(padded, axis=1)


def stack_rows(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Stack RGB arrays of the same width top to bottom (empty ones are skipped)."""
    keep = [np.asarray(p) for p in parts if np.asarray(p).shape[0] > 0]
    if not keep:
        raise ValueError("nothing to stack")
    widths = {p.shape[1] for p in keep}
    if len(widths) != 1:
        raise ValueError(f"parts differ in width: {sorted(widths)}")
    return np.ascontiguousarray(np.concatenate([p[..., :3] for p in keep], axis=0))


def points_to_px(points: float, dpi: float) -> int:
    """A font size in points as pixels at ``dpi`` (at least 1)."""
    return max(1, round(points * dpi / 72.0))


__all__ = ["TextLine", "points_to_px", "render_rgb", "stack_rows", "text_band", "text_columns"]
