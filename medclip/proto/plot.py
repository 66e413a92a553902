"""Explanation figure: the input's 12 leads with the top prototypes drawn over them.

For each shown prototype the best-matching window of the input is shaded and the prototype's
source segment (from its training ECG) is overlaid at that position in the same colour, so the
reader can compare the two waveforms lead by lead. A title band (predicted labels, research-use
note, training data) sits above the plot and a legend band (one line per prototype: label,
branch, class, similarity, contribution, source ECG and window) below it.

Fast enough to draw per request in the demo: the 12 leads share one axes on a common millivolt
scale (each lead gets the height its traces need; a 1 mV bar shows the scale), each set of traces
is one collection, the layout is fixed (no ``tight_layout``), and the long texts are drawn by
:mod:`medclip.raster` (Pillow) instead of matplotlib's per-glyph text rendering. A ``Figure``
with the Agg canvas, not pyplot: no global state, safe in a server's worker threads.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from datamodules.types import CANONICAL_LEADS
from medclip.proto.explain import ExplanationResult, PrototypeExplanation
from medclip.raster import TextLine, points_to_px, render_rgb, stack_rows, text_band

#: Plot layout, inches: height per lead, x-axis band below, margin above.
_LEAD_IN = 0.8
_XAXIS_IN = 0.5
_TOP_IN = 0.1
_MIN_BAND_MV = 1.0  # smallest vertical room per lead


_COLORS = (
    "tab:red",
    "tab:blue",
    "tab:green",
    "tab:orange",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
    "tab:gray",
)


def _shown(result: ExplanationResult, max_prototypes: int) -> list[PrototypeExplanation]:
    """Prototypes to draw: interleave labels so each predicted label gets its best first; a
    prototype supporting several labels is drawn once."""
    out: list[PrototypeExplanation] = []
    seen: set[tuple[str, int]] = set()
    depth = max((len(lab.prototypes) for lab in result.labels), default=0)
    for i in range(depth):
        for lab in result.labels:
            if i < len(lab.prototypes) and len(out) < max_prototypes:
                e = lab.prototypes[i]
                if (e.branch, e.prototype_id) not in seen:
                    seen.add((e.branch, e.prototype_id))
                    out.append(e)
    return out


def lead_offsets_mv(
    traces: list[np.ndarray], min_band_mv: float = _MIN_BAND_MV
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Baselines (mV) that stack leads top to bottom without overlap on one millivolt scale.

    Args:
        traces: ``(L, T)`` arrays in mV with the same leads (the input and the drawn source
            segments).
        min_band_mv: smallest distance between neighbouring leads.

    Returns:
        ``(offsets, up, down)``, each ``(L,)``: ``offsets`` is 0 for the first lead and
        decreases; the distance between leads ``i`` and ``i + 1`` is lead ``i``'s deepest
        excursion ``down[i]`` plus lead ``i + 1``'s highest ``up[i + 1]`` (robust: 0.5th / 99.5th
        percentiles over all traces, both >= 0) with 10% room.
    """
    n = max(np.asarray(x).shape[0] for x in traces)
    up = np.zeros(n)
    down = np.zeros(n)
    for x in traces:
        x = np.asarray(x, dtype=np.float64)
        if x.size == 0 or not np.isfinite(x).any():
            continue
        finite = np.isfinite(x).any(axis=1)
        lo, hi = np.full(len(x), 0.0), np.full(len(x), 0.0)
        lo[finite], hi[finite] = np.nanpercentile(x[finite], [0.5, 99.5], axis=1)
        up[: len(x)] = np.maximum(up[: len(x)], hi)
        down[: len(x)] = np.maximum(down[: len(x)], -lo)
    gaps = np.maximum(down[:-1] + up[1:], min_band_mv) * 1.1
    return -np.concatenate([[0.0], np.cumsum(gaps)]), up, down


def _stacked(t: np.ndarray, sig: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """``(T, 2)`` vertices per lead, lead ``i`` shifted to ``offsets[i]``."""
    return [
        np.column_stack([t, np.asarray(sig[i], dtype=np.float64) + offsets[i]])
        for i in range(sig.shape[0])
    ]


def _legend_text(e: PrototypeExplanation) -> str:
    src = "unprojected" if e.source_ecg_id is None else f"ecg_id {e.source_ecg_id}"
    return (
        f"{e.label}: {e.branch} prototype {e.prototype_id} ({e.prototype_class}), "
        f"sim {e.similarity:.3f}, contribution {e.contribution:.3f}; source {src} "
        f"{e.source_window_s[0]:.2f}-{e.source_window_s[1]:.2f} s"
    )


def _decorate(
    ax: Any, offsets: np.ndarray, leads: list[str], x_max: float, bottom: float, top: float
) -> None:
    """Frame, lead names, time grid and tick labels drawn as plain artists: matplotlib's tick
    machinery costs more than all the traces."""
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator

    ax.axis("off")
    ax.add_patch(
        Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, linewidth=0.8, clip_on=False)
    )
    for y, lead in zip(offsets, leads):
        ax.text(-0.004 * x_max, y, lead, ha="right", va="center", fontsize=8)
    ticks = [float(x) for x in MaxNLocator(12).tick_values(0.0, x_max) if 0.0 <= x <= x_max]
    ax.add_collection(
        LineCollection(
            [np.array([[x, bottom], [x, top]]) for x in ticks],
            colors="0.8",
            linewidths=0.6,
            zorder=0.6,  # over the shaded windows, under the traces
        )
    )
    below = ax.get_xaxis_transform()  # x in data, y in axes fractions
    for x in ticks:
        ax.text(x, -0.008, f"{x:g}", transform=below, ha="center", va="top", fontsize=8)
    ax.text(0.5, -0.04, "time (s)", transform=ax.transAxes, ha="center", va="top", fontsize=9)


def _plot_figure(
    result: ExplanationResult, shown: list[PrototypeExplanation], width_in: float
) -> Figure:
    """The traces, windows and overlays on one axes (no title, no legend)."""
    sig = np.asarray(result.signal_mv, dtype=np.float64)
    fs = float(result.fs_hz)
    n_leads, n_samples = sig.shape
    t = np.arange(n_samples) / fs
    end_s = float(t[-1]) if n_samples > 1 else 1.0 / fs
    offsets, up, down = lead_offsets_mv([sig, *(e.source_segment for e in shown)])
    height_in = _TOP_IN + _LEAD_IN * n_leads + _XAXIS_IN
    fig = Figure(figsize=(width_in, height_in))
    left = 0.5 / width_in
    ax: Any = fig.add_axes(
        (left, _XAXIS_IN / height_in, 1.0 - left - 0.15 / width_in, _LEAD_IN * n_leads / height_in)
    )
    ax.add_collection(LineCollection(_stacked(t, sig, offsets), colors="black", linewidths=0.7))
    x_max = end_s
    for i, e in enumerate(shown):
        color = _COLORS[i % len(_COLORS)]
        a, b = e.input_window_s
        whole = (b - a) >= 0.9 * end_s
        if not whole:
            ax.axvspan(a, b, color=color, alpha=0.12, linewidth=0, zorder=0.5)
        seg = np.asarray(e.source_segment, dtype=np.float64)
        ts = a + np.arange(seg.shape[1]) / fs
        x_max = max(x_max, float(ts[-1]) if len(ts) else a)
        ax.add_collection(
            LineCollection(
                _stacked(ts, seg, offsets),
                colors=color,
                linewidths=0.9,
                alpha=0.35 if whole else 0.85,
                zorder=3,
            )
        )
    top = float(up[0]) * 1.1 + 0.1
    bottom = float(offsets[-1] - 1.1 * down[-1]) - 0.1
    ax.set_xlim(0.0, x_max)
    ax.set_ylim(bottom, top)
    _decorate(ax, offsets, list(CANONICAL_LEADS[:n_leads]), x_max, bottom, top)
    bar_x = x_max * 0.995  # 1 mV scale bar at the top right
    ax.plot([bar_x, bar_x], [top - 1.05, top - 0.05], color="black", linewidth=1.5)
    ax.text(bar_x - 0.004 * x_max, top - 0.55, "1 mV", ha="right", va="center", fontsize=7)
    return fig


def explanation_image(
    result: ExplanationResult, max_prototypes: int = 5, dpi: int = 110, width_in: float = 14.0
) -> np.ndarray:
    """The explanation as an RGB image: title band, the 12-lead plot, legend band.

    Args:
        result: from :func:`medclip.proto.explain.explain_ecg`.
        max_prototypes: prototypes drawn (labels interleaved, each one's best first).
        dpi: pixels per inch (the width is ``width_in * dpi`` pixels).
        width_in: width in inches.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    shown = _shown(result, max_prototypes)
    plot = render_rgb(_plot_figure(result, shown, width_in), dpi)
    width = plot.shape[1]
    preds = ", ".join(f"{lab.label} ({lab.probability:.2f})" for lab in result.labels)
    title = text_band(
        [
            TextLine(f"ProtoECGNet explanation: {preds}"),
            TextLine(f"{result.note} Trained on: {result.training_data}"),
        ],
        width,
        points_to_px(10, dpi),
    )
    legend = text_band(
        [
            TextLine(_legend_text(e), key_color=_COLORS[i % len(_COLORS)])
            for i, e in enumerate(shown)
        ],
        width,
        points_to_px(8, dpi),
        align="left",
    )
    return stack_rows([title, plot, legend])


def plot_explanation(
    result: ExplanationResult, path: str | Path, max_prototypes: int = 5, dpi: int = 110
) -> Path:
    """Write :func:`explanation_image` as a PNG to ``path`` (atomically) and return it."""
    from PIL import Image

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(explanation_image(result, max_prototypes, dpi=dpi))
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
