"""Pictures for the demo as RGB ``uint8`` arrays (matplotlib Agg, Pillow; nothing shown on screen).

Arrays rather than file paths: Gradio copies them into its own cache, so the app never has to
serve files from the bundle or the upload folders.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from medclip.ecg_plot import plot_ecg_12lead
from medclip.io import CANONICAL_LEADS, Cxr, Ecg

_LEAD_GAP_MV = 2.5


def figure_to_array(fig: Figure, dpi: int = 100) -> np.ndarray:
    """Render a matplotlib figure to ``(H, W, 3)`` uint8."""
    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


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


def _stacked(ax: Any, signal: np.ndarray, fs: float, t0: float, title: str, color: str) -> None:
    """12 leads stacked top to bottom (one LineCollection: fast to draw)."""
    from matplotlib.collections import LineCollection

    t = t0 + np.arange(signal.shape[1]) / fs
    segments = []
    for lead in range(signal.shape[0]):
        y = np.asarray(signal[lead], dtype=np.float64)
        if not np.isfinite(y).any():
            continue
        segments.append(np.column_stack([t, y - np.nanmedian(y) - lead * _LEAD_GAP_MV]))
    ax.add_collection(LineCollection(segments, colors=color, linewidths=0.7))
    ax.set_xlim(t[0], t[-1] if len(t) > 1 else t[0] + 1.0)
    ax.set_ylim(-(len(CANONICAL_LEADS) - 0.2) * _LEAD_GAP_MV, 1.2 * _LEAD_GAP_MV)
    ax.set_yticks([-i * _LEAD_GAP_MV for i in range(len(CANONICAL_LEADS))])
    ax.set_yticklabels(list(CANONICAL_LEADS), fontsize=6)
    ax.set_xlabel("time (s)", fontsize=7)
    ax.tick_params(axis="x", labelsize=6)
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.25)


def prototype_pair_array(
    signal_mv: np.ndarray,
    fs_hz: float,
    input_window_s: tuple[float, float],
    source_segment: np.ndarray,
    source_window_s: tuple[float, float],
    caption: str,
    dpi: int = 70,
) -> np.ndarray:
    """The input's best-matching window beside the prototype's source segment (12 leads each)."""
    a, b = input_window_s
    i0 = max(0, round(a * fs_hz))
    i1 = min(signal_mv.shape[1], max(i0 + 2, round(b * fs_hz)))
    fig = Figure(figsize=(7.5, 4.2))
    left, right = fig.subplots(1, 2, sharey=True)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.11, top=0.86, wspace=0.08)
    _stacked(left, signal_mv[:, i0:i1], fs_hz, i0 / fs_hz, f"input ECG, {a:.2f}-{b:.2f} s", "k")
    s0, s1 = source_window_s
    _stacked(
        right,
        np.asarray(source_segment),
        fs_hz,
        s0,
        f"prototype source segment, {s0:.2f}-{s1:.2f} s",
        "tab:red",
    )
    fig.suptitle(caption, fontsize=8)
    return figure_to_array(fig, dpi=dpi)


def explanation_array(result: Any, max_prototypes: int = 5) -> np.ndarray:
    """:func:`medclip.proto.plot.plot_explanation` rendered to an array."""
    from medclip.proto.plot import plot_explanation

    with tempfile.TemporaryDirectory(prefix="medclip-demo-") as tmp:
        path = plot_explanation(result, Path(tmp) / "explanation.png", max_prototypes, dpi=70)
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))


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
    """An image file as RGB uint8, downscaled to ``max_side``."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        rgb.thumbnail((max_side, max_side))
        return np.asarray(rgb)
