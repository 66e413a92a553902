"""Case-based explanations: which training-ECG prototypes drive each predicted label.

For each predicted label (probability >= its validation-tuned threshold; the most likely label
when none passes) the top-k distinct prototypes (several prototypes projected onto the same
training patch are listed once) by contribution ``fusion weight x similarity`` (the
similarity standardised with training statistics, as the fusion layer sees it; see
:mod:`medclip.proto.model`) are listed
with their branch, class, similarity, source ``ecg_id`` and time window, the source segment, and
the window of the input ECG that matched best.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from datamodules.types import Ecg
from medclip.proto.bundle import RESEARCH_NOTE, ProtoBundle
from medclip.proto.data import preprocess_record, preprocess_signal, standardise


@dataclass(frozen=True)
class PrototypeExplanation:
    """One prototype's part in one predicted label.

    Attributes:
        label: the predicted label this prototype supports.
        branch: rhythm, morphology or global.
        prototype_id: prototype index within its branch.
        prototype_class: the class the prototype belongs to.
        similarity: similarity of the input to the prototype (cosine; scaled for 2D branches).
        similarity_z: the same, standardised with training statistics (the fusion layer's input).
        contribution: fusion weight ``[label, prototype]`` x ``similarity_z``: this prototype's
            summand of the label's logit (positive = supports the label).
        source_ecg_id: the training record the prototype was projected onto (None if unprojected).
        source_window_s: ``(start_s, end_s)`` of the source patch.
        input_window_s: ``(start_s, end_s)`` of the best-matching window of the input ECG.
        source_segment: ``(12, S)`` source segment in mV.
    """

    label: str
    branch: str
    prototype_id: int
    prototype_class: str
    similarity: float
    similarity_z: float
    contribution: float
    source_ecg_id: int | None
    source_window_s: tuple[float, float]
    input_window_s: tuple[float, float]
    source_segment: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class LabelExplanation:
    """A predicted label with its probability, threshold and supporting prototypes."""

    label: str
    probability: float
    threshold: float
    above_threshold: bool
    prototypes: tuple[PrototypeExplanation, ...]


@dataclass(frozen=True)
class ExplanationResult:
    """Explanations of one ECG.

    Attributes:
        labels: explained labels, most probable first.
        probabilities: every label's fused probability.
        signal_mv: ``(12, T)`` the input after preprocessing, in mV (for plotting).
        fs_hz: its sampling rate.
        training_data: the bundle's training data name.
        note: the research-use notice.
    """

    labels: tuple[LabelExplanation, ...]
    probabilities: dict[str, float]
    signal_mv: np.ndarray = field(repr=False, compare=False)
    fs_hz: float = 100.0
    training_data: str = ""
    note: str = RESEARCH_NOTE


def prepare_input(bundle: ProtoBundle, ecg: Ecg | np.ndarray, fs_hz: float | None) -> np.ndarray:
    """An :class:`Ecg` or a raw ``(12, T)`` mV array at ``fs_hz`` -> ``(12, length)`` mV after the
    bundle's preprocessing (resample, high-pass, crop/pad; masked leads zero)."""
    if isinstance(ecg, Ecg):
        return preprocess_record(ecg, bundle.preprocessing)
    return preprocess_signal(ecg, fs_hz or bundle.preprocessing.fs_hz, bundle.preprocessing)


@torch.no_grad()
def explain_ecg(
    bundle: ProtoBundle,
    ecg: Ecg | np.ndarray,
    fs_hz: float | None = None,
    k: int | None = None,
    threshold: float | None = None,
) -> ExplanationResult:
    """Explain one ECG.

    Args:
        bundle: a loaded bundle.
        ecg: an :class:`Ecg` (e.g. from :func:`datamodules.ecg_io.read_ecg`) or a ``(12, T)``
            array in mV in canonical lead order.
        fs_hz: the array's sampling rate (default: the bundle's); ignored for an :class:`Ecg`.
        k: prototypes per label (default ``config.explain_top_k``).
        threshold: one probability threshold for all labels (default: the bundle's per-label
            thresholds tuned on validation).
    """
    model = bundle.model
    pre = bundle.preprocessing
    k = k or bundle.config.explain_top_k
    x_mv = prepare_input(bundle, ecg, fs_hz)
    x = torch.from_numpy(standardise(x_mv, pre))[None]
    device = next(model.parameters()).device
    out = model(x.to(device))
    probs = torch.sigmoid(out.logits[0]).cpu().numpy()
    sim = out.similarity[0].cpu().numpy()
    z = model.fusion_input(out.similarity)[0].cpu().numpy()
    weight = model.fusion.weight.detach().cpu().numpy()
    thr = np.full(len(model.labels), threshold) if threshold is not None else bundle.thresholds
    order = np.argsort(-probs)
    chosen = [int(i) for i in order if probs[i] >= thr[i]]
    if not chosen:
        chosen = [int(order[0])]
    slices = model.prototype_slices()
    owner: list[tuple[str, int]] = [
        (n, p) for n in model.branch_names for p in range(model.branch(n).n_prototypes)
    ]
    best_window = {
        n: out.branches[n].windows[0].argmax(dim=0).cpu().numpy() for n in model.branch_names
    }
    labels: list[LabelExplanation] = []
    for j in chosen:
        contrib = weight[j] * z
        items: list[PrototypeExplanation] = []
        seen: set[tuple[str, int | None, float]] = set()
        for g in np.argsort(-contrib, kind="stable"):
            if len(items) == k:
                break
            n, p = owner[int(g)]
            src = bundle.sources[n][p]
            key = (n, src.ecg_id, src.start_s)
            if src.ecg_id is not None and key in seen:
                continue  # prototypes projected onto the same patch are listed once
            seen.add(key)
            assert slices[n].start + p == int(g)
            branch = model.branch(n)
            w = int(best_window[n][p])
            items.append(
                PrototypeExplanation(
                    label=model.labels[j],
                    branch=n,
                    prototype_id=p,
                    prototype_class=src.class_name,
                    similarity=float(sim[g]),
                    similarity_z=float(z[g]),
                    contribution=float(contrib[g]),
                    source_ecg_id=src.ecg_id,
                    source_window_s=(src.start_s, src.end_s),
                    input_window_s=branch.window_seconds(w, pre.fs_hz),
                    source_segment=bundle.segments[n][p],
                )
            )
        labels.append(
            LabelExplanation(
                label=model.labels[j],
                probability=float(probs[j]),
                threshold=float(thr[j]),
                above_threshold=bool(probs[j] >= thr[j]),
                prototypes=tuple(items),
            )
        )
    return ExplanationResult(
        labels=tuple(labels),
        probabilities={lbl: float(p) for lbl, p in zip(model.labels, probs)},
        signal_mv=x_mv,
        fs_hz=pre.fs_hz,
        training_data=bundle.training_data,
    )


def format_table(result: ExplanationResult) -> str:
    """Plain-text table of an explanation, headed by the research-use notice."""
    lines = [
        result.note,
        f"Model trained on: {result.training_data}",
        "contrib = fusion weight x standardised similarity (sim z); positive supports the label",
        "",
    ]
    header = (
        f"{'label':<10} {'prob':>6}  {'branch':<10} {'proto':>5} {'class':<9} {'sim':>8} "
        f"{'sim z':>7} {'contrib':>8}  {'source ecg_id':>13} {'source window s':>16} "
        f"{'input window s':>15}"
    )
    for lab in result.labels:
        flag = "" if lab.above_threshold else "  (below threshold; most likely label)"
        lines.append(f"{lab.label}: p={lab.probability:.3f} (threshold {lab.threshold:.3f}){flag}")
        lines.append(header)
        for e in lab.prototypes:
            src = "-" if e.source_ecg_id is None else str(e.source_ecg_id)
            sw = f"{e.source_window_s[0]:.2f}-{e.source_window_s[1]:.2f}"
            iw = f"{e.input_window_s[0]:.2f}-{e.input_window_s[1]:.2f}"
            lines.append(
                f"{e.label:<10} {lab.probability:>6.3f}  {e.branch:<10} {e.prototype_id:>5} "
                f"{e.prototype_class:<9} {e.similarity:>8.4f} {e.similarity_z:>7.2f} "
                f"{e.contribution:>8.3f}  "
                f"{src:>13} {sw:>16} {iw:>15}"
            )
        lines.append("")
    return "\n".join(lines)
