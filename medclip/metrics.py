"""Evaluation metrics: AUROC with bootstrap CIs, validation-tuned F1, Fmax, retrieval R@K.

Rules from ANCHORS.md §3-§4:

* AUROC is computed **once over the full evaluation set**, never as a mean of per-batch AUROCs
  (collect scores with :class:`ScoreCollector`, then call :func:`auroc`).
* A label with one class only in the evaluated rows has no AUROC: it is reported as NaN, listed
  in ``excluded`` and left out of the macro average, with a :class:`SingleClassWarning`.
* Missing labels (NaN in ``y_true``, e.g. uncertain CheXpert labels under the ``ignore``
  policy) are dropped per label.
* Decision thresholds are tuned on validation data only: :func:`fit_thresholds` on validation,
  :func:`f1_at` on test. :func:`fmax` is the CAFA-style maximum over thresholds *on the set it is
  given* (an optimistic number, as in the PTB-XL benchmark); for an honest test F, tune its
  threshold on validation with :func:`fmax` and apply it with :func:`sample_f1_at`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

logger = logging.getLogger(__name__)


class SingleClassWarning(UserWarning):
    """A label has only one class in the evaluated rows; its AUROC is undefined."""


def _np(x: Any) -> np.ndarray:
    """numpy float64 copy of a numpy array, torch tensor or nested sequence."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _as_2d(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    y, s = _np(y_true), _np(y_score)
    if y.ndim == 1:
        y = y[:, None]
    if s.ndim == 1:
        s = s[:, None]
    if y.shape != s.shape:
        raise ValueError(f"y_true {y.shape} and y_score {s.shape} must have the same shape")
    if not np.isfinite(s).all():
        raise ValueError("y_score contains NaN or inf")
    ok = np.isnan(y) | (y == 0) | (y == 1)
    if not ok.all():
        raise ValueError("y_true must hold 0, 1 or NaN (missing)")
    return y, s


def _label_names(labels: Sequence[str] | None, n: int) -> tuple[str, ...]:
    if labels is None:
        return tuple(f"label_{i}" for i in range(n))
    if len(labels) != n:
        raise ValueError(f"{len(labels)} label names for {n} columns")
    return tuple(labels)


def _auroc_1d(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUROC of one label (ties count one half); NaN if one class only."""
    valid = ~np.isnan(y)
    y, s = y[valid], s[valid]
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _auroc_columns(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``(L,)`` AUROC per column of ``(N, L)`` arrays (vectorised when nothing is missing)."""
    if not np.isnan(y).any():
        n_pos = y.sum(axis=0)
        n_neg = y.shape[0] - n_pos
        ranks = rankdata(s, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = ((ranks * y).sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        auc[(n_pos == 0) | (n_neg == 0)] = np.nan
        return np.asarray(auc, dtype=np.float64)
    return np.array([_auroc_1d(y[:, j], s[:, j]) for j in range(y.shape[1])])


@dataclass(frozen=True, eq=False)
class AurocResult:
    """Per-label and macro AUROC over the full set.

    Attributes:
        labels: label names.
        per_label: ``(L,)`` AUROC, NaN for excluded labels.
        macro: mean of the defined per-label AUROCs (NaN if none).
        excluded: labels with one class only (no AUROC, not in the macro).
        n_positive: ``(L,)`` positives per label.
        n_negative: ``(L,)`` negatives per label.
    """

    labels: tuple[str, ...]
    per_label: np.ndarray
    macro: float
    excluded: tuple[str, ...]
    n_positive: np.ndarray
    n_negative: np.ndarray

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (NaN becomes None)."""
        return {
            "macro_auroc": _clean(self.macro),
            "per_label": {k: _clean(v) for k, v in zip(self.labels, self.per_label)},
            "excluded": list(self.excluded),
            "n_positive": dict(zip(self.labels, self.n_positive.astype(int).tolist())),
            "n_negative": dict(zip(self.labels, self.n_negative.astype(int).tolist())),
        }


def _clean(v: float) -> float | None:
    return None if np.isnan(v) else float(v)


def auroc(y_true: Any, y_score: Any, labels: Sequence[str] | None = None) -> AurocResult:
    """AUROC per label and macro, computed once over all rows.

    Args:
        y_true: ``(N, L)`` (or ``(N,)``) with 1, 0 or NaN (missing).
        y_score: ``(N, L)`` scores, higher = more likely positive.
        labels: ``L`` names (default ``label_i``).

    Warns:
        SingleClassWarning: when a label has only one class; it is excluded from the macro.
    """
    y, s = _as_2d(y_true, y_score)
    names = _label_names(labels, y.shape[1])
    per = _auroc_columns(y, s)
    n_pos = np.nansum(y, axis=0)
    n_neg = (~np.isnan(y)).sum(axis=0) - n_pos
    excluded = tuple(n for n, v in zip(names, per) if np.isnan(v))
    if excluded:
        msg = (
            f"AUROC undefined for {list(excluded)}: only one class present; "
            "excluded from the macro average"
        )
        warnings.warn(msg, SingleClassWarning, stacklevel=2)
        logger.warning(msg)
    defined = per[~np.isnan(per)]
    macro = float(defined.mean()) if defined.size else float("nan")
    return AurocResult(names, per, macro, excluded, n_pos, n_neg)


@dataclass(frozen=True, eq=False)
class AurocCI:
    """AUROC point estimates with percentile bootstrap confidence intervals.

    Attributes:
        point: the full-set :class:`AurocResult`.
        macro_low: lower CI bound of the macro AUROC.
        macro_high: upper CI bound of the macro AUROC.
        per_label_low: ``(L,)`` lower bounds (NaN for excluded labels).
        per_label_high: ``(L,)`` upper bounds.
        n_boot: resamples.
        seed: RNG seed.
        level: confidence level, e.g. 0.95.
    """

    point: AurocResult
    macro_low: float
    macro_high: float
    per_label_low: np.ndarray
    per_label_high: np.ndarray
    n_boot: int
    seed: int
    level: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        d = self.point.as_dict()
        d["macro_ci"] = [_clean(self.macro_low), _clean(self.macro_high)]
        d["per_label_ci"] = {
            k: [_clean(lo), _clean(hi)]
            for k, lo, hi in zip(self.point.labels, self.per_label_low, self.per_label_high)
        }
        d.update(n_boot=self.n_boot, seed=self.seed, level=self.level)
        return d


def bootstrap_auroc(
    y_true: Any,
    y_score: Any,
    labels: Sequence[str] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> AurocCI:
    """AUROC with percentile bootstrap CIs (rows resampled with replacement, CheXzero style).

    Each resample recomputes every label's AUROC over the whole resample; a label with one class
    in a resample is skipped for that resample. The macro of a resample averages the labels
    that are defined on the full set.

    Args:
        y_true: ``(N, L)`` with 1, 0 or NaN.
        y_score: ``(N, L)`` scores.
        labels: ``L`` names.
        n_boot: number of resamples (default 1000).
        seed: seed of ``numpy.random.default_rng``.
        level: confidence level in (0, 1).
    """
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    if not 0 < level < 1:
        raise ValueError("level must lie in (0, 1)")
    y, s = _as_2d(y_true, y_score)
    point = auroc(y, s, labels)
    keep = ~np.isnan(point.per_label)
    rng = np.random.default_rng(seed)
    boots = np.full((n_boot, y.shape[1]), np.nan)
    n = y.shape[0]
    for b in range(n_boot):
        idx = rng.integers(0, n, size=n)
        boots[b] = _auroc_columns(y[idx], s[idx])
    alpha = (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns / resamples
        lo = np.nanquantile(boots, alpha, axis=0)
        hi = np.nanquantile(boots, 1 - alpha, axis=0)
        macro_b = np.nanmean(boots[:, keep], axis=1) if keep.any() else np.full(n_boot, np.nan)
        m_lo = float(np.nanquantile(macro_b, alpha)) if keep.any() else float("nan")
        m_hi = float(np.nanquantile(macro_b, 1 - alpha)) if keep.any() else float("nan")
    lo[~keep] = np.nan
    hi[~keep] = np.nan
    return AurocCI(point, m_lo, m_hi, lo, hi, n_boot, seed, level)


@dataclass
class ScoreCollector:
    """Collects ``(y_true, y_score)`` batch by batch; metrics are computed once at the end.

    Use this instead of averaging per-batch AUROCs (which is biased and undefined for batches
    where a label has one class).
    """

    _y: list[np.ndarray] = field(default_factory=list)
    _s: list[np.ndarray] = field(default_factory=list)

    def update(self, y_true: Any, y_score: Any) -> None:
        """Append a batch: ``(B, L)`` labels and scores."""
        y, s = _as_2d(y_true, y_score)
        if self._y and y.shape[1] != self._y[0].shape[1]:
            raise ValueError("every batch must have the same number of labels")
        self._y.append(y)
        self._s.append(s)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All rows so far: ``(N, L)`` labels and scores."""
        if not self._y:
            raise ValueError("no batches collected")
        return np.concatenate(self._y), np.concatenate(self._s)

    def auroc(self, labels: Sequence[str] | None = None) -> AurocResult:
        """:func:`auroc` over every collected row."""
        return auroc(*self.arrays(), labels)


# --------------------------------------------------------------------------- F1 and Fmax


def _best_f1_threshold(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """Threshold (predict ``s >= t``) with the highest F1 on one label, and that F1."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(1 - y_sorted)
    n_pos = tp[-1]
    # only cut after the last element of a group of tied scores
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    f1 = 2 * tp / (2 * tp + fp + (n_pos - tp))
    f1 = np.where(last, f1, -1.0)
    best = int(np.argmax(f1))
    return float(s_sorted[best]), float(f1[best])


def fit_thresholds(
    y_val: Any, p_val: Any, labels: Sequence[str] | None = None, default: float = 0.5
) -> np.ndarray:
    """Per-label thresholds maximising F1 on **validation** data.

    Args:
        y_val: ``(N, L)`` validation labels (1, 0, NaN).
        p_val: ``(N, L)`` validation scores.
        labels: names, for warnings.
        default: threshold for labels without validation positives (with a warning).

    Returns:
        ``(L,)`` thresholds; predict positive when ``p >= threshold``.
    """
    y, s = _as_2d(y_val, p_val)
    names = _label_names(labels, y.shape[1])
    thr = np.full(y.shape[1], float(default))
    for j in range(y.shape[1]):
        valid = ~np.isnan(y[:, j])
        yj, sj = y[valid, j], s[valid, j]
        if yj.size == 0 or yj.sum() == 0:
            warnings.warn(
                f"{names[j]}: no positives in validation data; threshold set to {default}",
                SingleClassWarning,
                stacklevel=2,
            )
            continue
        thr[j] = _best_f1_threshold(yj, sj)[0]
    return thr


@dataclass(frozen=True, eq=False)
class F1Result:
    """F1 at fixed thresholds.

    Attributes:
        labels: names.
        per_label: ``(L,)`` F1 (NaN when a label has neither positives nor predictions).
        macro: mean of the defined per-label F1.
        micro: F1 over all label decisions pooled.
        thresholds: ``(L,)`` thresholds used.
    """

    labels: tuple[str, ...]
    per_label: np.ndarray
    macro: float
    micro: float
    thresholds: np.ndarray


def f1_at(
    y_test: Any, p_test: Any, thresholds: Any, labels: Sequence[str] | None = None
) -> F1Result:
    """F1 of ``p >= thresholds`` on test data, thresholds from :func:`fit_thresholds`."""
    y, s = _as_2d(y_test, p_test)
    thr = np.broadcast_to(_np(thresholds), (y.shape[1],)).astype(np.float64)
    names = _label_names(labels, y.shape[1])
    valid = ~np.isnan(y)
    pred = (s >= thr) & valid
    pos = (y == 1) & valid
    tp = (pred & pos).sum(axis=0)
    fp = (pred & ~pos).sum(axis=0)
    fn = (~pred & pos & valid).sum(axis=0)
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan).astype(np.float64)
    defined = per[~np.isnan(per)]
    macro = float(defined.mean()) if defined.size else float("nan")
    d_all = denom.sum()
    micro = float(2 * tp.sum() / d_all) if d_all > 0 else float("nan")
    return F1Result(names, per, macro, micro, thr.copy())


@dataclass(frozen=True)
class FmaxResult:
    """Sample-centric maximum F-measure.

    Attributes:
        fmax: the best F over thresholds.
        threshold: the threshold reaching it.
        precision: sample-averaged precision at that threshold.
        recall: sample-averaged recall at that threshold.
    """

    fmax: float
    threshold: float
    precision: float
    recall: float


def _sample_pr(y: np.ndarray, s: np.ndarray, t: float) -> tuple[float, float]:
    valid = ~np.isnan(y)
    pos = (y == 1) & valid
    pred = (s >= t) & valid
    tp = (pred & pos).sum(axis=1)
    n_pred = pred.sum(axis=1)
    n_pos = pos.sum(axis=1)
    has_pred, has_pos = n_pred > 0, n_pos > 0
    prec = float((tp[has_pred] / n_pred[has_pred]).mean()) if has_pred.any() else 0.0
    rec = float((tp[has_pos] / n_pos[has_pos]).mean()) if has_pos.any() else 0.0
    return prec, rec


def _f(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def sample_f1_at(y_true: Any, y_score: Any, threshold: float) -> float:
    """CAFA-style sample-centric F at one global threshold (tune it on validation).

    Precision is averaged over samples with at least one prediction, recall over samples with at
    least one positive label.
    """
    y, s = _as_2d(y_true, y_score)
    return _f(*_sample_pr(y, s, float(threshold)))


def fmax(y_true: Any, y_score: Any, thresholds: Any | None = None) -> FmaxResult:
    """Maximum of :func:`sample_f1_at` over thresholds (default ``0.00, 0.01, ..., 1.00``).

    This is optimistic on the set it is computed on; report it alongside validation-tuned F1.
    """
    y, s = _as_2d(y_true, y_score)
    grid = np.linspace(0.0, 1.0, 101) if thresholds is None else _np(thresholds).ravel()
    best = FmaxResult(0.0, float(grid[0]), 0.0, 0.0)
    for t in grid:
        p, r = _sample_pr(y, s, float(t))
        f = _f(p, r)
        if f > best.fmax:
            best = FmaxResult(f, float(t), p, r)
    return best


# --------------------------------------------------------------------------- retrieval


def retrieval_ranks(
    queries: Any, gallery: Any, targets: Any | None = None, *, chunk: int = 1024
) -> np.ndarray:
    """1-based rank of each query's correct gallery item under cosine similarity.

    Args:
        queries: ``(Q, E)`` embeddings.
        gallery: ``(N, E)`` embeddings.
        targets: ``(Q,)`` index of the correct gallery item (default: ``arange(Q)``, paired).
        chunk: queries per matrix product.

    Returns:
        ``(Q,)`` int ranks; rank = 1 + number of gallery items scoring strictly higher.
    """
    q = _np(queries)
    g = _np(gallery)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"queries {q.shape} and gallery {g.shape} must be (Q, E) and (N, E)")
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    tgt = np.arange(len(q)) if targets is None else _np(targets).astype(np.int64)
    if tgt.shape != (len(q),) or tgt.min(initial=0) < 0 or tgt.max(initial=0) >= len(g):
        raise ValueError("targets must be (Q,) indices into the gallery")
    ranks = np.empty(len(q), dtype=np.int64)
    for i in range(0, len(q), chunk):
        sim = q[i : i + chunk] @ g.T
        correct = sim[np.arange(len(sim)), tgt[i : i + chunk]]
        ranks[i : i + chunk] = 1 + (sim > correct[:, None]).sum(axis=1)
    return ranks


@dataclass(frozen=True)
class RetrievalMetrics:
    """Recall@K and rank statistics.

    Attributes:
        recall: K -> fraction of queries whose correct item is in the top K.
        mean_rank: mean 1-based rank.
        median_rank: median 1-based rank.
        n_queries: Q.
    """

    recall: dict[int, float]
    mean_rank: float
    median_rank: float
    n_queries: int

    def as_dict(self) -> dict[str, float]:
        """Flat dict: ``R@1``, ``R@5``, ..., ``mean_rank``, ``median_rank``."""
        d: dict[str, float] = {f"R@{k}": v for k, v in self.recall.items()}
        d.update(mean_rank=self.mean_rank, median_rank=self.median_rank)
        return d


def recall_at_k(ranks: Any, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Fraction of ranks ``<= k`` for each ``k``."""
    r = _np(ranks)
    return {int(k): float((r <= k).mean()) for k in ks}


def retrieval_metrics(
    queries: Any, gallery: Any, targets: Any | None = None, ks: Sequence[int] = (1, 5, 10)
) -> RetrievalMetrics:
    """R@K, mean and median rank of paired (or ``targets``-matched) retrieval."""
    ranks = retrieval_ranks(queries, gallery, targets)
    return RetrievalMetrics(
        recall=recall_at_k(ranks, ks),
        mean_rank=float(ranks.mean()),
        median_rank=float(np.median(ranks)),
        n_queries=len(ranks),
    )


def label_precision_at_k(
    query_labels: Any, gallery_labels: Any, retrieved: Any, k: int, match: str = "any"
) -> float:
    """Mean fraction of the top-``k`` retrieved cases that share the query's labels.

    Args:
        query_labels: ``(Q, L)`` binary (NaN counts as negative).
        gallery_labels: ``(N, L)`` binary.
        retrieved: ``(Q, >=k)`` gallery rows, best first; ``-1`` (no result) counts as a miss.
        k: cut-off.
        match: ``any`` (at least one shared positive label) or ``exact`` (same label vector).
    """
    if match not in ("any", "exact"):
        raise ValueError("match must be 'any' or 'exact'")
    ql = np.nan_to_num(_np(query_labels)) > 0.5
    gl = np.nan_to_num(_np(gallery_labels)) > 0.5
    r = np.asarray(retrieved, dtype=np.int64)
    if r.ndim != 2 or r.shape[1] < k or r.shape[0] != ql.shape[0]:
        raise ValueError(f"retrieved must be (Q, >= {k}) with Q = {ql.shape[0]}")
    r = r[:, :k]
    found = r >= 0
    cand = gl[np.clip(r, 0, None)]  # (Q, k, L)
    if match == "any":
        rel = (cand & ql[:, None, :]).any(axis=2)
    else:
        rel = (cand == ql[:, None, :]).all(axis=2)
    return float((rel & found).sum(axis=1).mean() / k)
