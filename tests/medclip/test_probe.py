"""Linear probes: fitting, penalty selection, missing labels, persistence, label budgets."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from medclip.metrics import auroc
from medclip.probe import (
    LinearProbe,
    ProbeConfig,
    aggregate_windows,
    fit_linear_probe,
    label_fraction_subset,
)


def _data(n: int = 300, d: int = 12, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w = rng.normal(size=(k, d))
    y = (x @ w.T + 0.5 * rng.normal(size=(n, k)) > 0).astype(float)
    return x, y


def test_multilabel_probe_learns_a_linear_rule() -> None:
    x, y = _data()
    probe = fit_linear_probe(x[:200], y[:200], labels=["a", "b", "c"])
    result = auroc(y[200:], probe.predict_proba(x[200:]))
    assert result.macro > 0.9
    assert set(probe.selection) == {f"{w:g}" for w in ProbeConfig().weight_decays}
    assert probe.weight_decay in ProbeConfig().weight_decays
    p = probe.predict_proba(x[:5])
    assert p.shape == (5, 3) and ((p > 0) & (p < 1)).all()


def test_missing_labels_are_ignored_not_taken_as_negative() -> None:
    x, y = _data(seed=1)
    y_masked = y.copy()
    y_masked[y[:, 0] == 1, 0] = np.nan  # hide every positive of label 0 but one
    y_masked[np.flatnonzero(y[:, 0] == 1)[0], 0] = 1.0
    zeroed = np.nan_to_num(y_masked)
    cfg = ProbeConfig(weight_decays=(1e-2,))
    nan_probe = fit_linear_probe(x, y_masked, cfg=cfg)
    zero_probe = fit_linear_probe(x, zeroed, cfg=cfg)
    # zeros would push label 0 towards "never"; NaN leaves its other labels untouched
    assert not np.allclose(nan_probe.weight[0], zero_probe.weight[0])
    np.testing.assert_allclose(nan_probe.weight[1:], zero_probe.weight[1:], atol=2e-3)


def test_multiclass_rows_sum_to_one_and_argmax_is_accurate() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(240, 6))
    y = np.argmax(x[:, :3], axis=1)
    probe = fit_linear_probe(
        x[:160], y[:160], labels=["a", "b", "c"], cfg=ProbeConfig(mode="multiclass")
    )
    p = probe.predict_proba(x[160:])
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    assert (p.argmax(axis=1) == y[160:]).mean() > 0.8


def test_single_class_label_predicts_its_prevalence() -> None:
    x, y = _data(seed=3)
    y[:, 2] = 0.0
    probe = fit_linear_probe(x, y, labels=["a", "b", "never"])
    assert probe.constant_labels == ("never",)
    np.testing.assert_allclose(probe.predict_proba(x[:4])[:, 2], 0.0)


def test_save_and_load_round_trip_without_pickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = _data(seed=4)
    probe = fit_linear_probe(x, y, labels=["a", "b", "c"])
    probe.save(tmp_path, "head")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.json", "head.safetensors"]

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    again = LinearProbe.load(tmp_path, "head")
    np.testing.assert_allclose(again.predict_proba(x[:7]), probe.predict_proba(x[:7]), atol=1e-6)
    assert again.labels == ("a", "b", "c") and again.weight_decay == probe.weight_decay


def test_label_fraction_subset_is_seeded_and_keeps_every_label() -> None:
    _, y = _data(n=500, k=4, seed=5)
    rare = np.zeros(500)
    rare[[17]] = 1.0  # a label with a single positive
    y = np.column_stack([y, rare])
    a = label_fraction_subset(500, 0.01, seed=0, y=y)
    b = label_fraction_subset(500, 0.01, seed=0, y=y)
    c = label_fraction_subset(500, 0.01, seed=1, y=y)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(a) == 5 and 17 in a
    assert (y[a] == 1).any(axis=0).all()
    assert len(label_fraction_subset(500, 0.1, seed=0)) == 50
    np.testing.assert_array_equal(label_fraction_subset(500, 1.0), np.arange(500))
    with pytest.raises(ValueError):
        label_fraction_subset(10, 0.0)


def test_aggregate_windows_takes_the_max_per_record() -> None:
    scores = np.array([[0.1, 0.9], [0.7, 0.2], [0.3, 0.3], [0.5, 0.6]])
    owner = np.array([0, 0, 2, 2])
    out = aggregate_windows(scores, owner, n_records=3)
    np.testing.assert_allclose(out[0], [0.7, 0.9])
    assert np.isnan(out[1]).all()  # record without windows
    np.testing.assert_allclose(out[2], [0.5, 0.6])


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        ProbeConfig(mode="softmax")
    with pytest.raises(ValueError):
        ProbeConfig(weight_decays=())
    with pytest.raises(ValueError, match="rows"):
        fit_linear_probe(np.zeros((5, 2)), np.zeros((4, 1)))
