"""Linear probes on frozen features (logistic regression, full-batch L-BFGS).

A probe is ``p = sigmoid(W z + b)`` per label (``multilabel``) or ``softmax(W z + b)`` over
classes (``multiclass``), where ``z`` is the feature vector standardised with the training
mean/std. The L2 penalty is chosen from a small grid by macro AUROC on validation data (the
caller's validation split, or a seeded 20 % hold-out of the training rows, grouped when groups
are given); the probe is then refit on all training rows. Missing labels (NaN) are ignored in
the loss. A label without both classes in the training rows cannot be learnt: it predicts its
training prevalence and is listed in :attr:`LinearProbe.constant_labels`.

Helpers for the evaluation protocols:

* :func:`label_fraction_subset`: the 1 / 10 / 100 % label-budget subsets (MERL-style), seeded,
  with at least one positive per label when the pool has one.
* :func:`aggregate_windows`: max over the windows of each record (PTB-XL benchmark test-time
  aggregation).

Weights save to safetensors + JSON (no pickle): :meth:`LinearProbe.save` / :meth:`LinearProbe.load`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medclip.metrics import SingleClassWarning, auroc
from medclip.safe_load import write_json_atomic

logger = logging.getLogger(__name__)

_MODES = ("multilabel", "multiclass")


@dataclass(frozen=True)
class ProbeConfig:
    """Settings of a linear probe.

    Attributes:
        mode: ``multilabel`` (independent sigmoid per label, targets 1/0/NaN) or ``multiclass``
            (softmax; targets are integer class ids ``(N,)`` or one-hot ``(N, C)``).
        weight_decays: L2 penalties tried (mean loss + ``wd * ||W||^2``).
        max_iter: L-BFGS iterations per fit.
        val_fraction: hold-out share of the training rows used to choose the penalty when no
            validation data is given.
        seed: seed for the hold-out split and the initialisation.
    """

    mode: str = "multilabel"
    weight_decays: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
    max_iter: int = 200
    val_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"probe mode {self.mode!r} is not one of {list(_MODES)}")
        if not self.weight_decays or any(w < 0 for w in self.weight_decays):
            raise ValueError("weight_decays must be a non-empty list of values >= 0")
        if self.max_iter < 1:
            raise ValueError("max_iter must be >= 1")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError("val_fraction must lie in (0, 1)")
        object.__setattr__(self, "weight_decays", tuple(float(w) for w in self.weight_decays))


def _targets(y: Any, mode: str, n_classes: int | None = None) -> np.ndarray:
    """``(N, L)`` float targets: multilabel 1/0/NaN, multiclass one-hot."""
    a = np.asarray(y, dtype=np.float64)
    if mode == "multiclass" and a.ndim == 1:
        k = int(n_classes if n_classes is not None else np.nanmax(a) + 1)
        if np.isnan(a).any() or (a < 0).any() or (a >= k).any():
            raise ValueError(f"multiclass targets must be class ids in [0, {k})")
        out = np.zeros((len(a), k))
        out[np.arange(len(a)), a.astype(np.int64)] = 1.0
        return out
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"targets must be (N,) or (N, L), got {a.shape}")
    return a


def _split_holdout(
    n: int, fraction: float, seed: int, groups: Sequence[Any] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (group-aware) train / hold-out row indices."""
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        n_val = max(1, round(n * fraction))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    g = np.asarray([str(x) for x in groups])
    uniq = np.unique(g)
    perm = rng.permutation(len(uniq))
    n_val = max(1, round(len(uniq) * fraction))
    val_groups = set(uniq[perm[:n_val]].tolist())
    is_val = np.array([x in val_groups for x in g])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


@dataclass
class LinearProbe:
    """A fitted linear probe (see the module docstring).

    Attributes:
        weight: ``(L, D)`` float32.
        bias: ``(L,)`` float32.
        mean: ``(D,)`` feature mean of the training rows.
        std: ``(D,)`` feature std of the training rows (floored at 1e-6).
        mode: ``multilabel`` or ``multiclass``.
        labels: ``L`` label / class names.
        weight_decay: the chosen L2 penalty.
        constant_labels: labels that predict their training prevalence (one class in training).
        prevalence: ``(L,)`` training prevalence (used for constant labels).
        selection: penalty -> validation macro AUROC of the grid search.
    """

    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    mode: str
    labels: tuple[str, ...]
    weight_decay: float
    constant_labels: tuple[str, ...] = ()
    prevalence: np.ndarray | None = None
    selection: dict[str, float | None] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        """Feature size ``D``."""
        return int(self.weight.shape[1])

    def decision_function(self, x: Any) -> np.ndarray:
        """``(N, L)`` logits of ``(N, D)`` features."""
        z = (np.asarray(x, dtype=np.float32) - self.mean) / self.std
        if z.ndim != 2 or z.shape[1] != self.n_features:
            raise ValueError(f"features must be (N, {self.n_features}), got {z.shape}")
        out: np.ndarray = z @ self.weight.T + self.bias
        return out

    def predict_proba(self, x: Any) -> np.ndarray:
        """``(N, L)`` probabilities (rows sum to 1 in ``multiclass`` mode)."""
        logits = torch.from_numpy(self.decision_function(x).astype(np.float64))
        if self.mode == "multiclass":
            return torch.softmax(logits, dim=1).numpy()
        p = torch.sigmoid(logits).numpy()
        if self.constant_labels and self.prevalence is not None:
            idx = [self.labels.index(lab) for lab in self.constant_labels]
            p[:, idx] = self.prevalence[idx]
        return p

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path, name: str = "probe") -> Path:
        """Write ``<name>.safetensors`` + ``<name>.json`` into ``folder`` (atomic per file)."""
        from safetensors.torch import save_file

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {
            "weight": torch.from_numpy(np.ascontiguousarray(self.weight, dtype=np.float32)),
            "bias": torch.from_numpy(np.ascontiguousarray(self.bias, dtype=np.float32)),
            "mean": torch.from_numpy(np.ascontiguousarray(self.mean, dtype=np.float32)),
            "std": torch.from_numpy(np.ascontiguousarray(self.std, dtype=np.float32)),
        }
        if self.prevalence is not None:
            tensors["prevalence"] = torch.from_numpy(
                np.ascontiguousarray(self.prevalence, dtype=np.float32)
            )
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".safetensors", dir=out)
        os.close(fd)
        try:
            save_file(tensors, tmp)
            os.replace(tmp, out / f"{name}.safetensors")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        meta = {
            "format": "medclip-linear-probe",
            "version": 1,
            "mode": self.mode,
            "labels": list(self.labels),
            "weight_decay": self.weight_decay,
            "constant_labels": list(self.constant_labels),
            "selection": self.selection,
        }
        write_json_atomic(out / f"{name}.json", meta, allow_nan=False)
        return out

    @classmethod
    def load(cls, folder: str | Path, name: str = "probe") -> LinearProbe:
        """Inverse of :meth:`save` (safetensors + JSON, no pickle)."""
        from safetensors.torch import load_file

        root = Path(folder)
        meta = json.loads((root / f"{name}.json").read_text(encoding="utf-8"))
        if meta.get("format") != "medclip-linear-probe":
            raise ValueError(f"{root / (name + '.json')}: not a medclip linear probe")
        t = load_file(str(root / f"{name}.safetensors"))
        return cls(
            weight=t["weight"].numpy(),
            bias=t["bias"].numpy(),
            mean=t["mean"].numpy(),
            std=t["std"].numpy(),
            mode=str(meta["mode"]),
            labels=tuple(meta["labels"]),
            weight_decay=float(meta["weight_decay"]),
            constant_labels=tuple(meta.get("constant_labels") or ()),
            prevalence=t["prevalence"].numpy() if "prevalence" in t else None,
            selection=dict(meta.get("selection") or {}),
        )


def _fit_weights(
    z: np.ndarray, y: np.ndarray, mode: str, wd: float, max_iter: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Full-batch L-BFGS (scipy) on standardised features ``z (N, D)`` and targets ``y (N, L)``.

    Loss: multilabel = sum over labels of the mean BCE over that label's known rows (NaN
    targets ignored); multiclass = mean cross-entropy. Plus ``wd * ||W||^2``.
    """
    from scipy.optimize import minimize
    from scipy.special import expit, log_softmax, softmax

    rng = np.random.default_rng(seed)
    n_feat, n_out = z.shape[1], y.shape[1]
    valid = ~np.isnan(y)
    target = np.nan_to_num(y, nan=0.0)
    per_label = np.maximum(valid.sum(axis=0), 1).astype(np.float64)  # (L,)

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta[: n_out * n_feat].reshape(n_out, n_feat)
        b = theta[n_out * n_feat :]
        logits = z @ w.T + b
        if mode == "multiclass":
            loss = float(-(target * log_softmax(logits, axis=1)).sum() / len(z))
            d = (softmax(logits, axis=1) - target) / len(z)
        else:
            # stable BCE with logits: max(x, 0) - x * t + log(1 + exp(-|x|))
            bce = np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))
            loss = float(((bce * valid).sum(axis=0) / per_label).sum())
            d = (expit(logits) - target) * valid / per_label
        loss += wd * float((w * w).sum())
        gw = d.T @ z + 2.0 * wd * w
        gb = d.sum(axis=0)
        return loss, np.concatenate([gw.ravel(), gb])

    theta0 = np.concatenate([0.01 * rng.standard_normal(n_out * n_feat), np.zeros(n_out)])
    res = minimize(loss_grad, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    theta = res.x
    return theta[: n_out * n_feat].reshape(n_out, n_feat), theta[n_out * n_feat :]


def _macro_auroc(y: np.ndarray, p: np.ndarray) -> float:
    log = logging.getLogger("medclip.metrics")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingleClassWarning)
            return auroc(y, p).macro
    finally:
        log.setLevel(level)


def fit_linear_probe(
    x_train: Any,
    y_train: Any,
    *,
    labels: Sequence[str] | None = None,
    x_val: Any | None = None,
    y_val: Any | None = None,
    groups: Sequence[Any] | None = None,
    cfg: ProbeConfig | None = None,
) -> LinearProbe:
    """Fit a linear probe, choosing the L2 penalty on validation data.

    Args:
        x_train: ``(N, D)`` features.
        y_train: ``(N, L)`` multilabel targets (1/0/NaN), or for ``multiclass`` class ids
            ``(N,)`` / one-hot ``(N, C)``.
        labels: ``L`` names (default ``label_i``).
        x_val: ``(M, D)`` validation features (default: a hold-out of the training rows).
        y_val: validation targets, same form as ``y_train``.
        groups: ``N`` group keys (e.g. patients) so the hold-out never splits a group.
        cfg: probe settings.

    Returns:
        The probe refit on all training rows with the chosen penalty.
    """
    cfg = cfg or ProbeConfig()
    x = np.asarray(x_train, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"x_train must be (N >= 2, D), got {x.shape}")
    n_cls = None
    if cfg.mode == "multiclass":
        ya = np.asarray(y_train)
        n_cls = len(labels) if labels is not None else None
        if ya.ndim == 1 and n_cls is None:
            n_cls = int(np.max(ya)) + 1
    y = _targets(y_train, cfg.mode, n_cls)
    if len(y) != len(x):
        raise ValueError(f"{len(x)} feature rows but {len(y)} target rows")
    names = tuple(labels) if labels is not None else tuple(f"label_{j}" for j in range(y.shape[1]))
    if len(names) != y.shape[1]:
        raise ValueError(f"{len(names)} label names for {y.shape[1]} target columns")

    if x_val is not None and y_val is not None:
        xv = np.asarray(x_val, dtype=np.float64)
        yv = _targets(y_val, cfg.mode, y.shape[1])
        tr_idx = np.arange(len(x))
    elif len(cfg.weight_decays) > 1:
        tr_idx, va_idx = _split_holdout(len(x), cfg.val_fraction, cfg.seed, groups)
        xv, yv = x[va_idx], y[va_idx]
    else:
        tr_idx, xv, yv = np.arange(len(x)), None, None

    def standardise(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = x[rows].mean(axis=0)
        std = np.maximum(x[rows].std(axis=0), 1e-6)
        return mean, std

    def fit_on(
        rows: np.ndarray, wd: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        mean, std = standardise(rows)
        w, b = _fit_weights((x[rows] - mean) / std, y[rows], cfg.mode, wd, cfg.max_iter, cfg.seed)
        return w, b, mean, std

    selection: dict[str, float | None] = {}
    best_wd = cfg.weight_decays[len(cfg.weight_decays) // 2]
    if xv is not None and yv is not None and len(cfg.weight_decays) > 1:
        best_score = -math.inf
        for wd in cfg.weight_decays:
            w, b, mean, std = fit_on(tr_idx, wd)
            probe = LinearProbe(
                w.astype(np.float32), b.astype(np.float32), mean, std, cfg.mode, names, wd
            )
            score = _macro_auroc(yv, probe.predict_proba(xv))
            selection[f"{wd:g}"] = None if math.isnan(score) else float(score)
            # ties (and NaN) keep the larger penalty: prefer the simpler model
            if not math.isnan(score) and score >= best_score:
                best_score, best_wd = score, wd
    w, b, mean, std = fit_on(np.arange(len(x)), best_wd)
    valid = ~np.isnan(y)
    with np.errstate(invalid="ignore"):
        prevalence = np.nansum(y, axis=0) / np.maximum(valid.sum(axis=0), 1)
    constant: tuple[str, ...] = ()
    if cfg.mode == "multilabel":
        constant = tuple(n for n, p in zip(names, prevalence) if p <= 0.0 or p >= 1.0)
        if constant:
            logger.info(
                "probe: labels with one class in training predict a constant: %s",
                ", ".join(constant),
            )
    return LinearProbe(
        weight=w.astype(np.float32),
        bias=b.astype(np.float32),
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        mode=cfg.mode,
        labels=names,
        weight_decay=float(best_wd),
        constant_labels=constant,
        prevalence=prevalence.astype(np.float32),
        selection=selection,
    )


def label_fraction_subset(
    n: int, fraction: float, seed: int = 0, y: Any | None = None, min_rows: int = 1
) -> np.ndarray:
    """Sorted row indices of a seeded ``fraction`` of ``n`` training rows.

    With ``y`` (``(n, L)`` multilabel or ``(n,)`` class ids), one positive row per label (per
    class) is drawn first where the pool has one, so small budgets still see every label.

    Args:
        n: pool size.
        fraction: share in (0, 1]; 1.0 returns every row.
        seed: RNG seed.
        y: optional labels for the per-label guarantee.
        min_rows: lower bound on the subset size.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    if fraction >= 1.0:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    size = min(n, max(min_rows, math.ceil(n * fraction)))
    chosen: list[int] = []
    if y is not None:
        a = np.asarray(y, dtype=np.float64)
        cols = (a[:, None] == np.unique(a[~np.isnan(a)])[None, :]) if a.ndim == 1 else a == 1.0
        for j in rng.permutation(cols.shape[1]):
            pos = np.flatnonzero(cols[:, j])
            if pos.size and not np.isin(pos, chosen).any():
                chosen.append(int(rng.choice(pos)))
    chosen = list(dict.fromkeys(chosen))[:size]
    rest = np.setdiff1d(np.arange(n), chosen)
    extra = rng.choice(rest, size=max(0, size - len(chosen)), replace=False)
    return np.sort(np.concatenate([np.asarray(chosen, dtype=np.int64), extra.astype(np.int64)]))


def aggregate_windows(scores: Any, owner: Any, n_records: int | None = None) -> np.ndarray:
    """Max of window scores per record.

    Args:
        scores: ``(W, L)`` scores of all windows.
        owner: ``(W,)`` record index of each window.
        n_records: number of records (default ``owner.max() + 1``).

    Returns:
        ``(n_records, L)``; records without windows are NaN.
    """
    s = np.asarray(scores, dtype=np.float64)
    o = np.asarray(owner, dtype=np.int64)
    if s.ndim != 2 or o.shape != (s.shape[0],):
        raise ValueError(f"scores {s.shape} and owner {o.shape} must be (W, L) and (W,)")
    n = int(n_records if n_records is not None else (o.max() + 1 if o.size else 0))
    out = np.full((n, s.shape[1]), -np.inf)
    np.maximum.at(out, o, s)
    seen = np.bincount(o, minlength=n)[:n] > 0
    out[~seen] = np.nan
    return out


def probe_summary(probe: LinearProbe) -> dict[str, Any]:
    """JSON-friendly description of a fitted probe (no weights)."""
    return {
        "mode": probe.mode,
        "labels": list(probe.labels),
        "n_features": probe.n_features,
        "weight_decay": probe.weight_decay,
        "constant_labels": list(probe.constant_labels),
        "selection": probe.selection,
    }


__all__ = [
    "LinearProbe",
    "ProbeConfig",
    "aggregate_windows",
    "fit_linear_probe",
    "label_fraction_subset",
    "probe_summary",
    "write_json_atomic",
]
