"""Explanation figure: the input's 12 leads with the top prototypes drawn over them.

For each shown prototype the best-matching window of the input is shaded and the prototype's
source segment (from its training ECG) is overlaid at that position in the same colour, so the
reader can compare the two waveforms lead by lead. Uses matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from datamodules.types import CANONICAL_LEADS
from medclip.proto.explain import ExplanationResult, PrototypeExplanation

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


def plot_explanation(
    result: ExplanationResult, path: str | Path, max_prototypes: int = 5, dpi: int = 110
) -> Path:
    """Write the explanation PNG to ``path`` (atomically) and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sig = result.signal_mv
    fs = result.fs_hz
    t = np.arange(sig.shape[1]) / fs
    shown = _shown(result, max_prototypes)
    fig, axes = plt.subplots(12, 1, figsize=(14, 16), sharex=True)
    for lead, ax in enumerate(axes):
        ax.plot(t, sig[lead], color="black", linewidth=0.7)
        ax.set_ylabel(CANONICAL_LEADS[lead], rotation=0, ha="right", va="center")
        ax.tick_params(labelsize=7)
        for i, e in enumerate(shown):
            color = _COLORS[i % len(_COLORS)]
            a, b = e.input_window_s
            whole = (b - a) >= 0.9 * t[-1]
            if not whole:
                ax.axvspan(a, b, color=color, alpha=0.12)
            seg = e.source_segment[lead]
            ts = a + np.arange(seg.shape[0]) / fs
            ax.plot(ts, seg, color=color, linewidth=0.9, alpha=0.35 if whole else 0.85)
    axes[-1].set_xlabel("time (s)")
    handles = []
    from matplotlib.lines import Line2D

    for i, e in enumerate(shown):
        src = "unprojected" if e.source_ecg_id is None else f"ecg_id {e.source_ecg_id}"
        handles.append(
            Line2D(
                [0],
                [0],
                color=_COLORS[i % len(_COLORS)],
                label=(
                    f"{e.label}: {e.branch} prototype {e.prototype_id} ({e.prototype_class}), "
                    f"sim {e.similarity:.3f}, contribution {e.contribution:.3f}; source {src} "
                    f"{e.source_window_s[0]:.2f}-{e.source_window_s[1]:.2f} s"
                ),
            )
        )
    preds = ", ".join(f"{lab.label} ({lab.probability:.2f})" for lab in result.labels)
    fig.suptitle(
        f"ProtoECGNet explanation: {preds}\n{result.note} Trained on: {result.training_data}",
        fontsize=10,
    )
    if handles:
        fig.legend(handles=handles, loc="lower center", fontsize=8, ncol=1, frameon=False)
    fig.tight_layout(rect=(0.0, 0.01 + 0.012 * len(handles), 1.0, 0.96))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    os.replace(tmp, out)
    return out
