"""Metrics: full-set AUROC, bootstrap CIs, validation-tuned F1, Fmax, retrieval R@K."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

from medclip import metrics
from medclip.metrics import SingleClassWarning


def _multilabel(n: int = 300, n_labels: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_labels)) < 0.3).astype(float)
    s = y * rng.uniform(0.2, 1.5, n_labels) + rng.standard_normal((n, n_labels))
    return y, 1 / (1 + np.exp(-s))


def test_auroc_matches_sklearn_with_ties_and_missing() -> None:
    y, s = _multilabel()
    s = np.round(s, 1)  # many ties
    y[::7, 1] = np.nan  # uncertain labels ignored
    res = metrics.auroc(y, s, ["a", "b", "c", "d"])
    for j in range(4):
        ok = ~np.isnan(y[:, j])
        assert res.per_label[j] == pytest.approx(roc_auc_score(y[ok, j], s[ok, j]))
    assert res.macro == pytest.approx(np.mean(res.per_label))
    assert res.excluded == () and res.as_dict()["per_label"]["a"] == pytest.approx(res.per_label[0])


def test_auroc_is_computed_once_over_the_full_set_not_per_batch() -> None:
    """Regression (ANCHORS §1.6/STYLE §6): the mean of per-batch AUROCs is not the AUROC."""
    rng = np.random.default_rng(1)
    # batch-dependent score offsets: within each batch the ranking is perfect, across not
    y = np.tile([0.0, 1.0], 50)[:, None]
    offsets = np.repeat(rng.uniform(-3, 3, 10), 10)[:, None]
    s = y + offsets
    collector = metrics.ScoreCollector()
    per_batch = []
    for i in range(0, 100, 10):
        collector.update(torch.tensor(y[i : i + 10]), torch.tensor(s[i : i + 10]))
        per_batch.append(roc_auc_score(y[i : i + 10, 0], s[i : i + 10, 0]))
    full = collector.auroc(["x"])
    assert full.macro == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]))
    assert np.mean(per_batch) == pytest.approx(1.0)
    assert full.macro < 0.9  # averaging batches would have reported 1.0


def test_single_class_label_is_flagged_and_excluded() -> None:
    y, s = _multilabel()
    y[:, 2] = 0.0
    with pytest.warns(SingleClassWarning, match="c"):
        res = metrics.auroc(y, s, ["a", "b", "c", "d"])
    assert res.excluded == ("c",) and np.isnan(res.per_label[2])
    assert res.macro == pytest.approx(np.nanmean(res.per_label[[0, 1, 3]]))
    assert res.as_dict()["per_label"]["c"] is None


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate() -> None:
    y, s = _multilabel(200)
    a = metrics.bootstrap_auroc(y, s, n_boot=200, seed=3)
    b = metrics.bootstrap_auroc(y, s, n_boot=200, seed=3)
    c = metrics.bootstrap_auroc(y, s, n_boot=200, seed=4)
    assert a.macro_low == b.macro_low and a.macro_high == b.macro_high
    assert a.macro_low != c.macro_low
    assert a.macro_low < a.point.macro < a.macro_high
    assert (a.per_label_low < a.point.per_label).all()
    assert (a.point.per_label < a.per_label_high).all()
    assert a.as_dict()["n_boot"] == 200
    # a wider level gives a wider interval
    w = metrics.bootstrap_auroc(y, s, n_boot=200, seed=3, level=0.99)
    assert w.macro_high - w.macro_low > a.macro_high - a.macro_low


def test_bootstrap_default_is_1000_resamples() -> None:
    y, s = _multilabel(60, 2)
    assert metrics.bootstrap_auroc(y, s).n_boot == 1000


def test_thresholds_are_fit_on_validation_only() -> None:
    y_val, p_val = _multilabel(400, 3, seed=5)
    y_test, p_test = _multilabel(400, 3, seed=6)
    thr = metrics.fit_thresholds(y_val, p_val)
    # the chosen threshold is F1-optimal on validation (checked against a dense grid)
    for j in range(3):
        pred = p_val[:, j][None, :] >= np.unique(p_val[:, j])[:, None]  # every cut at once
        pos = y_val[:, j][None, :] == 1
        tp, fp, fn = (pred & pos).sum(1), (pred & ~pos).sum(1), (~pred & pos).sum(1)
        best = (2 * tp / (2 * tp + fp + fn)).max()
        assert f1_score(y_val[:, j], p_val[:, j] >= thr[j]) == pytest.approx(best)
    res = metrics.f1_at(y_test, p_test, thr)
    for j in range(3):
        assert res.per_label[j] == pytest.approx(f1_score(y_test[:, j], p_test[:, j] >= thr[j]))
    # thresholds do not depend on test data
    np.testing.assert_array_equal(thr, metrics.fit_thresholds(y_val, p_val))
    assert res.macro == pytest.approx(res.per_label.mean())


def test_fit_thresholds_without_positives_warns() -> None:
    y, p = _multilabel(50, 2)
    y[:, 1] = 0
    with pytest.warns(SingleClassWarning, match="no positives"):
        thr = metrics.fit_thresholds(y, p, ["a", "b"], default=0.4)
    assert thr[1] == 0.4


def test_fmax_sample_centric() -> None:
    y = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 0]], dtype=float)
    p = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.6], [0.7, 0.35, 0.5]])
    res = metrics.fmax(y, p)
    # t in (0.3, 0.35]: predicted {0}, {1, 2}, {0, 1, 2}; precision (1 + 1 + 2/3) / 3, recall 1
    assert res.fmax == pytest.approx(16 / 17)
    assert 0.3 < res.threshold <= 0.35
    assert res.precision == pytest.approx(8 / 9) and res.recall == pytest.approx(1.0)
    # t in (0.5, 0.6]: precision 1, recall (1 + 1 + 1/2) / 3
    assert metrics.sample_f1_at(y, p, 0.55) == pytest.approx(2 * (5 / 6) / (1 + 5 / 6))
    assert res.fmax == pytest.approx(metrics.sample_f1_at(y, p, res.threshold))
    assert metrics.sample_f1_at(y, p, 0.95) == 0.0


def test_retrieval_ranks_and_recall() -> None:
    rng = np.random.default_rng(7)
    g = rng.standard_normal((50, 8))
    q = g + 0.01 * rng.standard_normal((50, 8))
    r = metrics.retrieval_metrics(q, g)
    assert r.recall[1] == 1.0 and r.mean_rank == 1.0 and r.median_rank == 1.0
    # a query equal to gallery item 3 but targeting item 4: rank = 1 + #items beating item 4
    ranks = metrics.retrieval_ranks(g[[3]], g, targets=[4])
    sim = (g / np.linalg.norm(g, axis=1, keepdims=True)) @ (g[3] / np.linalg.norm(g[3]))
    assert ranks[0] == 1 + (sim > sim[4]).sum()
    assert metrics.recall_at_k([1, 3, 7, 20], ks=(1, 5, 10)) == {1: 0.25, 5: 0.5, 10: 0.75}
    assert set(r.as_dict()) == {"R@1", "R@5", "R@10", "mean_rank", "median_rank"}


def test_label_precision_at_k() -> None:
    gallery = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=float)
    query = np.array([[1, 0], [0, 1]], dtype=float)
    retrieved = np.array([[0, 1, 2], [3, 2, -1]])
    # query 0: rows 0 (shares label 0) and 1 (no); query 1: rows 3 (no) and 2 (shares label 1)
    assert metrics.label_precision_at_k(query, gallery, retrieved, k=2) == pytest.approx(0.5)
    exact = metrics.label_precision_at_k(query, gallery, retrieved, k=3, match="exact")
    assert exact == pytest.approx((1 / 3 + 0) / 2)


def test_input_checks() -> None:
    with pytest.raises(ValueError, match="same shape"):
        metrics.auroc(np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        metrics.auroc(np.array([0, 2, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="NaN or inf"):
        metrics.auroc(np.array([0, 1]), np.array([0.1, np.nan]))
