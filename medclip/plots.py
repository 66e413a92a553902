"""Evaluation figures (matplotlib, Agg canvas; no display needed).

Figures are written atomically: rendered to a temporary file in the target folder, then moved
into place with ``os.replace``.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from medclip.metrics import _as_2d, _auroc_1d, _label_names

logger = logging.getLogger(__name__)

RESEARCH_FOOTNOTE = "Research use only - not for clinical decisions."


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=dpi)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _roc_axes(fig: Figure, title: str) -> Any:
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title(title)
    fig.text(0.01, 0.01, RESEARCH_FOOTNOTE, fontsize=7, color="0.4")
    return ax


def plot_roc_curves(
    y_true: Any,
    y_score: Any,
    path: str | Path,
    labels: Sequence[str] | None = None,
    title: str = "ROC curves",
) -> Path:
    """One PNG with a ROC curve per label, AUROC in the legend.

    Labels with one class only (no ROC) are listed in the legend as "n/a".

    Args:
        y_true: ``(N, L)`` with 1, 0 or NaN.
        y_score: ``(N, L)`` scores.
        path: output PNG.
        labels: ``L`` names.
        title: figure title.
    """
    y, s = _as_2d(y_true, y_score)
    names = _label_names(labels, y.shape[1])
    fig = Figure(figsize=(6.4, 6.0))
    ax = _roc_axes(fig, title)
    for j, name in enumerate(names):
        valid = ~np.isnan(y[:, j])
        yj, sj = y[valid, j], s[valid, j]
        auc = _auroc_1d(yj, sj)
        if np.isnan(auc):
            ax.plot([], [], label=f"{name} (n/a: one class)")
            continue
        fpr, tpr, _ = roc_curve(yj, sj)
        ax.plot(fpr, tpr, linewidth=1.4, label=f"{name} (AUROC {auc:.3f})")
    ax.legend(loc="lower right", fontsize=7)
    return save_figure(fig, path)


def save_roc_pngs(
    y_true: Any,
    y_score: Any,
    out_dir: str | Path,
    labels: Sequence[str] | None = None,
    prefix: str = "roc",
) -> list[Path]:
    """``<prefix>_all.png`` plus one ``<prefix>_<label>.png`` per label in ``out_dir``."""
    y, s = _as_2d(y_true, y_score)
    names = _label_names(labels, y.shape[1])
    out = Path(out_dir)
    paths = [plot_roc_curves(y, s, out / f"{prefix}_all.png", names)]
    for j, name in enumerate(names):
        slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or f"label_{j}"
        paths.append(
            plot_roc_curves(y[:, [j]], s[:, [j]], out / f"{prefix}_{slug}.png", [name], name)
        )
    return paths
