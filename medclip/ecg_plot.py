"""12-lead ECG figures in the standard clinical layout (matplotlib Agg, no display needed).

Layout (as printed by ECG carts): four columns of 2.5 s and three rows,

    I    aVR  V1  V4
    II   aVL  V2  V5
    III  aVF  V3  V6

each cell showing its lead during its column's 2.5 s, plus a 10 s rhythm strip (lead II by
default) underneath. Paper scale 25 mm/s and 10 mm/mV on a pink millimetre grid (minor lines every
0.04 s / 0.1 mV, major every 0.2 s / 0.5 mV); a 1 mV calibration pulse opens each row.
Missing leads (all-NaN rows or ``lead_mask`` False) are labelled "missing", never drawn as a flat
line.

    fig = plot_ecg_12lead(read_ecg("records100/00000/00001_lr"))
    save_ecg_plot(ecg, "ecg.png")                  # full size
    save_ecg_plot(ecg, "thumb.png", preview=True)  # small preview for case tables
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from datamodules.types import CANONICAL_LEADS, Ecg
from medclip.plots import save_figure

#: Lead names per row of the 3 x 4 layout (columns = 2.5 s slots).
LAYOUT_3X4: tuple[tuple[str, ...], ...] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)

_MM_PER_S = 25.0
_MM_PER_MV = 10.0
_ROW_MV = 3.0  # vertical space per row in mV (30 mm)
_CAL_S = 0.2  # calibration pulse width (s), drawn left of t = 0
_CLIP_MV = 1.45  # traces are clipped to +-1.45 mV around their row so rows never overlap
_GRID_MINOR = "#f6c9c9"
_GRID_MAJOR = "#e58f8f"


def _as_signal(ecg: Ecg | np.ndarray, fs: float | None) -> tuple[np.ndarray, float, np.ndarray]:
    """``(12, T)`` float signal, fs in Hz and a bool ``(12,)`` mask of present leads."""
    if isinstance(ecg, Ecg):
        sig = np.asarray(ecg.signal, dtype=np.float64)
        rate = float(ecg.fs)
        mask = np.asarray(ecg.lead_mask, dtype=bool)
    else:
        if fs is None:
            raise ValueError("plot_ecg_12lead: give fs (Hz) with a raw (12, T) array")
        sig = np.asarray(ecg, dtype=np.float64)
        rate = float(fs)
        mask = np.ones(sig.shape[0] if sig.ndim == 2 else 0, dtype=bool)
    if sig.ndim != 2 or sig.shape[0] != len(CANONICAL_LEADS) or sig.shape[1] < 2:
        raise ValueError(f"expected a (12, T) signal in canonical lead order, got {sig.shape}")
    if not rate > 0:
        raise ValueError(f"sampling rate must be positive, got {rate}")
    if mask.shape != (12,):
        mask = np.ones(12, dtype=bool)
    mask = mask & ~np.isnan(sig).all(axis=1)
    return sig, rate, mask


def _draw_grid(ax: object, x0: float, x1: float, y0: float, y1: float) -> None:
    """ECG paper: minor lines every 0.04 s / 0.1 mV, major every 0.2 s / 0.5 mV."""
    for step, color, width in ((0.04, _GRID_MINOR, 0.3), (0.2, _GRID_MAJOR, 0.6)):
        xs = np.arange(np.floor(x0 / step) * step, x1 + 1e-9, step)
        ys = np.arange(np.floor(y0 / (step * 2.5)) * step * 2.5, y1 + 1e-9, step * 2.5)
        ax.vlines(xs, y0, y1, colors=color, linewidth=width, zorder=0)  # type: ignore[attr-defined]
        ax.hlines(ys, x0, x1, colors=color, linewidth=width, zorder=0)  # type: ignore[attr-defined]


def _calibration(ax: object, y: float) -> None:
    """A 1 mV, 0.2 s calibration pulse ending at t = 0."""
    x = [-_CAL_S, -0.75 * _CAL_S, -0.75 * _CAL_S, -0.25 * _CAL_S, -0.25 * _CAL_S, 0.0]
    ax.plot(x, [y, y, y + 1.0, y + 1.0, y, y], color="black", linewidth=0.8)  # type: ignore[attr-defined]


def plot_ecg_12lead(
    ecg: Ecg | np.ndarray,
    fs: float | None = None,
    *,
    title: str | None = None,
    rhythm_lead: str = "II",
    start_s: float = 0.0,
    duration_s: float = 10.0,
    highlight: Sequence[tuple[float, float]] = (),
    show_labels: bool = True,
    width_in: float = 11.0,
) -> Figure:
    """Draw a 12-lead ECG in the 3 x 4 + rhythm-strip layout.

    Args:
        ecg: an :class:`~datamodules.types.Ecg` or a ``(12, T)`` array in mV, canonical lead order.
        fs: sampling rate in Hz (only for a raw array).
        title: figure title (never put patient identifiers here).
        rhythm_lead: lead of the full-length strip at the bottom.
        start_s: first second shown.
        duration_s: seconds shown (4 columns of ``duration_s / 4``).
        highlight: ``(start_s, end_s)`` windows (relative to the record start) shaded on every
            row, e.g. a prototype's matching segment.
        show_labels: print lead names.
        width_in: figure width in inches (height follows the 25 mm/s : 10 mm/mV aspect).

    Returns:
        A matplotlib :class:`~matplotlib.figure.Figure` (Agg canvas; save with
        :func:`save_ecg_plot` or :func:`medclip.plots.save_figure`).

    Raises:
        ValueError: for a signal that is not ``(12, T)``, a bad rate or an unknown lead.
    """
    sig, rate, mask = _as_signal(ecg, fs)
    if rhythm_lead not in CANONICAL_LEADS:
        raise ValueError(f"rhythm_lead {rhythm_lead!r} is not one of {list(CANONICAL_LEADS)}")
    if not duration_s > 0:
        raise ValueError("duration_s must be positive")
    lead_row = {name: i for i, name in enumerate(CANONICAL_LEADS)}
    col_s = duration_s / 4.0
    n_rows = len(LAYOUT_3X4) + 1
    x0, x1 = -_CAL_S - 0.1, duration_s
    y_top = 0.0
    y_bottom = -_ROW_MV * n_rows
    aspect = _MM_PER_MV / _MM_PER_S  # data units: s on x, mV on y
    height_in = width_in * aspect * (y_top - y_bottom) / (x1 - x0) + 0.5
    fig = Figure(figsize=(width_in, height_in))
    ax = fig.add_axes((0.01, 0.04, 0.98, 0.9 if title else 0.95))
    _draw_grid(ax, x0, x1, y_bottom, y_top)
    first = round(start_s * rate)

    def segment(lead: str, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray] | None:
        i0 = first + round(t0 * rate)
        i1 = min(first + round(t1 * rate), sig.shape[1])
        if i1 - i0 < 2:
            return None
        y = sig[lead_row[lead], i0:i1]
        t = (np.arange(i0, i1) - first) / rate
        return t, y - np.nanmedian(y) if np.isfinite(y).any() else y

    def draw_lead(lead: str, t0: float, t1: float, base: float) -> None:
        if show_labels:
            ax.text(t0 + 0.04, base + 0.9, lead, fontsize=8, fontweight="bold", va="bottom")
        if not mask[lead_row[lead]]:
            ax.text(t0 + col_s / 2, base, "missing", fontsize=7, color="0.4", ha="center")
            return
        seg = segment(lead, t0, t1)
        if seg is not None:
            ax.plot(
                seg[0], base + np.clip(seg[1], -_CLIP_MV, _CLIP_MV), color="black", linewidth=0.7
            )

    for r, row in enumerate(LAYOUT_3X4):
        base = -_ROW_MV * r - _ROW_MV / 2
        _calibration(ax, base)
        for c, lead in enumerate(row):
            t0, t1 = c * col_s, (c + 1) * col_s
            draw_lead(lead, t0, t1, base)
            if c:
                ax.vlines(t0, base - 0.3, base + 0.3, colors="black", linewidth=0.8)
    base = -_ROW_MV * (n_rows - 1) - _ROW_MV / 2
    _calibration(ax, base)
    if show_labels:
        ax.text(0.04, base + 0.9, rhythm_lead, fontsize=8, fontweight="bold", va="bottom")
    if mask[lead_row[rhythm_lead]]:
        seg = segment(rhythm_lead, 0.0, duration_s)
        if seg is not None:
            ax.plot(
                seg[0], base + np.clip(seg[1], -_CLIP_MV, _CLIP_MV), color="black", linewidth=0.7
            )
    else:
        ax.text(duration_s / 2, base, "missing", fontsize=7, color="0.4", ha="center")
    for h0, h1 in highlight:
        lo, hi = max(float(h0) - start_s, 0.0), min(float(h1) - start_s, duration_s)
        if hi > lo:
            ax.axvspan(lo, hi, color="tab:orange", alpha=0.18, zorder=1)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y_bottom, y_top)
    ax.set_aspect(aspect)
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.text(
        0.01,
        0.005,
        f"25 mm/s, 10 mm/mV, {rate:g} Hz. Research use only - not for clinical decisions.",
        fontsize=6,
        color="0.4",
    )
    return fig


def save_ecg_plot(
    ecg: Ecg | np.ndarray,
    path: str | Path,
    fs: float | None = None,
    *,
    preview: bool = False,
    dpi: int | None = None,
    **kwargs: object,
) -> Path:
    """Render :func:`plot_ecg_12lead` to a PNG atomically.

    Args:
        ecg: the record (see :func:`plot_ecg_12lead`).
        path: output PNG.
        fs: sampling rate for a raw array.
        preview: a small, label-free thumbnail (about 440 px wide) for case tables.
        dpi: resolution (default 110, or 40 for previews).
        **kwargs: passed to :func:`plot_ecg_12lead`.

    Returns:
        The written path.
    """
    if preview:
        kwargs.setdefault("show_labels", False)
    fig = plot_ecg_12lead(ecg, fs, **kwargs)  # type: ignore[arg-type]
    return save_figure(fig, path, dpi=dpi or (40 if preview else 110))
