"""Pictures for the demo as RGB ``uint8`` arrays (matplotlib Agg, Pillow; nothing shown on screen).

Arrays rather than file paths: Gradio copies them into its own cache, so the app never has to
serve files from the bundle or the upload folders.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from medclip.ecg_plot import plot_ecg_12lead
from medclip.io import CANONICAL_LEADS, Cxr, Ecg
from medclip.raster import (
    TextLine,
    points_to_px,
    render_rgb,
    stack_rows,
    text_band,
    text_columns,
)

_LEAD_GAP_MV = 2.5


def figure_to_array(fig: Figure, dpi: int = 100) -> np.ndarray:
    """Render a matplotlib figure to ``(H, W, 3)`` uint8 (its pixel buffer is freed at once)."""
    return render_rgb(fig, dpi)


def xray_array(cxr: Cxr, max_side: int = 512) -> np.ndarray:
    """The X-ray as ``(H, W)`` uint8 for display, the longer side at most ``max_side`` pixels."""
    pix = np.nan_to_num(np.asarray(cxr.pixels, dtype=np.float32), nan=0.0).clip(0.0, 1.0)
    img = Image.fromarray((pix * 255.0).round().astype(np.uint8))
    scale = max_side / max(img.size)
    if scale < 1.0:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(img)


def ecg_array(
    ecg: Ecg, highlight: tuple[tuple[float, float], ...] = (), dpi: int = 90
) -> np.ndarray:
    """The 12-lead ECG in the standard 3 x 4 + rhythm-strip layout, as an RGB array."""
    fig = plot_ecg_12lead(ecg, highlight=highlight)
    return figure_to_array(fig, dpi=dpi)


def _grid_step(span_s: float) -> float:
    """Spacing of vertical grid lines for a window of ``span_s`` seconds (ECG paper's 0.2 s
    for short windows)."""
    for step in (0.2, 0.5, 1.0, 2.0):
        if span_s / step <= 16:
            return step
    return 5.0


def _pair_panel(
    signal: np.ndarray, fs: float, x0: float, width_s: float, step_s: float
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Vertices of 12 stacked leads starting at ``x0`` (each lead median-centred, leads
    ``_LEAD_GAP_MV`` apart) and of the panel's grid lines (every ``step_s`` from the window
    start, plus the lead baselines)."""
    t = x0 + np.arange(signal.shape[1]) / fs
    traces = []
    for lead in range(signal.shape[0]):
        y = np.asarray(signal[lead], dtype=np.float64)
        if np.isfinite(y).any():
            traces.append(np.column_stack([t, y - np.nanmedian(y) - lead * _LEAD_GAP_MV]))
    y_lo = -(len(CANONICAL_LEADS) - 0.4) * _LEAD_GAP_MV
    y_hi = 0.6 * _LEAD_GAP_MV
    grid = [np.array([[x, y_lo], [x, y_hi]]) for x in x0 + np.arange(0.0, width_s + 1e-9, step_s)]
    grid += [
        np.array([[x0, -i * _LEAD_GAP_MV], [x0 + width_s, -i * _LEAD_GAP_MV]])
        for i in range(len(CANONICAL_LEADS))
    ]
    return traces, grid


def prototype_pair_array(
    signal_mv: np.ndarray,
    fs_hz: float,
    input_window_s: tuple[float, float],
    source_segment: np.ndarray,
    source_window_s: tuple[float, float],
    caption: str,
    dpi: int = 70,
) -> np.ndarray:
    """The input's best-matching window beside the prototype's source segment (12 leads each).

    Both panels share one axes without ticks (axes and their ticks are what costs most to draw):
    lead names on the left, grid lines every 0.2 s (longer windows: 0.5, 1 or 2 s) from each
    window's start, whose absolute times are in the panel titles; caption, titles and the scale
    note are Pillow text bands (:mod:`medclip.raster`).
    """
    from matplotlib.collections import LineCollection

    a, b = input_window_s
    s0, s1 = source_window_s
    i0 = max(0, round(a * fs_hz))
    i1 = min(signal_mv.shape[1], max(i0 + 2, round(b * fs_hz)))
    source = np.asarray(source_segment)
    width_s = max((i1 - i0) / fs_hz, source.shape[1] / fs_hz, 1.0 / fs_hz)
    gap_s = 0.06 * width_s
    step = _grid_step(width_s)
    left, left_grid = _pair_panel(signal_mv[:, i0:i1], fs_hz, 0.0, width_s, step)
    right, right_grid = _pair_panel(source, fs_hz, width_s + gap_s, width_s, step)
    label_room = 0.09 * width_s
    fig = Figure(figsize=(7.5, 3.4))
    ax: Any = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.axis("off")
    ax.add_collection(LineCollection(left_grid + right_grid, colors="0.85", linewidths=0.5))
    ax.add_collection(LineCollection(left, colors="black", linewidths=0.7))
    ax.add_collection(LineCollection(right, colors="tab:red", linewidths=0.7))
    for i, lead in enumerate(CANONICAL_LEADS):
        ax.text(-0.015 * width_s, -i * _LEAD_GAP_MV, lead, ha="right", va="center", fontsize=6)
    ax.set_xlim(-label_room, 2 * width_s + gap_s + 0.01 * width_s)
    ax.set_ylim(-(len(CANONICAL_LEADS) - 0.2) * _LEAD_GAP_MV, 0.9 * _LEAD_GAP_MV)
    plot = figure_to_array(fig, dpi=dpi)
    width = plot.shape[1]
    offset = round(width * label_room / (2 * width_s + gap_s + 0.01 * width_s + label_room))
    titles = text_columns(
        [f"input ECG, {a:.2f}-{b:.2f} s", f"prototype source segment, {s0:.2f}-{s1:.2f} s"],
        width - offset,
        points_to_px(8, dpi),
    )
    titles = np.pad(titles, ((0, 0), (offset, 0), (0, 0)), constant_values=255)
    return stack_rows(
        [
            text_band([TextLine(caption)], width, points_to_px(8, dpi)),
            titles,
            plot,
            text_band(
                [TextLine(f"grid lines every {step:g} s; leads {_LEAD_GAP_MV:g} mV apart")],
                width,
                points_to_px(7, dpi),
            ),
        ]
    )


def explanation_array(result: Any, max_prototypes: int = 5, dpi: int = 70) -> np.ndarray:
    """:func:`medclip.proto.plot.explanation_image` (the figure of ``medclip proto explain``)."""
    from medclip.proto.plot import explanation_image

    return explanation_image(result, max_prototypes, dpi=dpi)


def placeholder_array(text: str, size: int = 160) -> np.ndarray:
    """A grey square with ``text`` (for cases without a preview image)."""
    img = Image.new("RGB", (size, size), (235, 235, 235))
    draw = ImageDraw.Draw(img)
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > 22:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    for i, ln in enumerate(lines[:8]):
        draw.text((8, 8 + 14 * i), ln, fill=(60, 60, 60))
    return np.asarray(img)


def load_image_array(path: str | Path, max_side: int = 320) -> np.ndarray:
    """An image file as RGB uint8, downscaled to ``max_side`` (read-only; cached per file).

    The case index's previews never change while the demo runs, so decoded ones are kept (at
    most 128, a few MB); a file that changes on disk is read again.
    """
    st = Path(path).stat()
    return _decoded_image(str(path), st.st_mtime_ns, st.st_size, max_side)


@lru_cache(maxsize=128)
def _decoded_image(path: str, mtime_ns: int, size: int, max_side: int) -> np.ndarray:
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        rgb.thumbnail((max_side, max_side))
        arr = np.asarray(rgb).copy()
    arr.setflags(write=False)
    return arr
