"""Pairing CXR studies with ECGs by subject and time window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from datamodules.pairing import PairingConfig, pair_cxr_ecg, subject_splits

T0 = pd.Timestamp("2180-07-23 08:00:00")


def _cxr(rows: list[tuple[int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject_id": [s for s, _ in rows],
            "study_time": [T0 + pd.Timedelta(days=d) if d == d else pd.NaT for _, d in rows],
        }
    )


def _ecg(rows: list[tuple[int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject_id": [s for s, _ in rows],
            "ecg_time": [T0 + pd.Timedelta(days=d) if d == d else pd.NaT for _, d in rows],
        }
    )


def _pairs(out: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(out["cxr_row"].tolist(), out["ecg_row"].tolist()))


def test_config_validation() -> None:
    assert PairingConfig() == PairingConfig(60.0, "nearest", True, False)
    with pytest.raises(ValueError, match="window_days"):
        PairingConfig(window_days=-1)
    with pytest.raises(ValueError, match="rule"):
        PairingConfig(rule="closest")  # type: ignore[arg-type]


def test_nearest_within_window() -> None:
    cxr = _cxr([(1, 0.0), (1, 100.0), (2, 0.0), (3, 0.0)])
    ecg = _ecg([(1, -10.0), (1, 3.0), (1, 170.0), (2, 61.0), (4, 0.0), (3, 0.026)])
    out = pair_cxr_ecg(cxr, ecg)
    assert _pairs(out) == {(0, 1), (1, -1), (2, -1), (3, 5)}
    paired = out[out["ecg_row"] >= 0].set_index("cxr_row")
    assert paired.loc[0, "delta_days"] == pytest.approx(3.0)
    assert paired.loc[3, "delta_days"] == pytest.approx(0.026)
    assert out.loc[out["cxr_row"] == 1, "delta_days"].isna().all()
    # subject 2's ECG is 61 days away: paired only with a wider window
    wide = pair_cxr_ecg(cxr, ecg, PairingConfig(window_days=61.0))
    assert (2, 3) in _pairs(wide)


def test_rules_all_and_before_only() -> None:
    cxr = _cxr([(1, 0.0)])
    ecg = _ecg([(1, -10.0), (1, 3.0), (1, -70.0), (1, 0.0), (2, 0.0)])
    assert _pairs(pair_cxr_ecg(cxr, ecg, PairingConfig(rule="all"))) == {(0, 0), (0, 1), (0, 3)}
    nearest = pair_cxr_ecg(cxr, ecg, PairingConfig(rule="nearest"))
    assert _pairs(nearest) == {(0, 3)}  # same time wins
    later = _ecg([(1, -10.0), (1, 3.0)])
    assert _pairs(pair_cxr_ecg(cxr, later, PairingConfig(rule="before_only"))) == {(0, 0)}
    assert _pairs(pair_cxr_ecg(cxr, later)) == {(0, 1)}
    only_after = _ecg([(1, 3.0)])
    out = pair_cxr_ecg(cxr, only_after, PairingConfig(rule="before_only"))
    assert _pairs(out) == {(0, -1)}


def test_tie_prefers_earlier_ecg() -> None:
    out = pair_cxr_ecg(_cxr([(1, 0.0)]), _ecg([(1, 2.0), (1, -2.0)]))
    assert _pairs(out) == {(0, 1)}


def test_unpaired_rows_and_missing_times() -> None:
    cxr = _cxr([(1, 0.0), (2, float("nan"))])
    ecg = _ecg([(1, 1.0), (2, 0.0), (3, 0.0), (1, float("nan"))])
    out = pair_cxr_ecg(cxr, ecg)
    assert _pairs(out) == {(0, 0), (1, -1)}
    with_ecg = pair_cxr_ecg(cxr, ecg, PairingConfig(keep_unpaired_ecg=True))
    assert _pairs(with_ecg) == {(0, 0), (1, -1), (-1, 1), (-1, 2), (-1, 3)}
    assert with_ecg.tail(3)["cxr_row"].eq(-1).all()  # ECG-only rows last
    no_cxr = pair_cxr_ecg(cxr, ecg, PairingConfig(keep_unpaired_cxr=False))
    assert _pairs(no_cxr) == {(0, 0)}
    empty = pair_cxr_ecg(cxr, ecg.iloc[:0])
    assert _pairs(empty) == {(0, -1), (1, -1)}


def _brute_force(cxr: pd.DataFrame, ecg: pd.DataFrame, cfg: PairingConfig) -> set[tuple[int, int]]:
    pairs: set[tuple[int, int]] = set()
    for i, c in enumerate(cxr.to_dict("records")):
        best: tuple[float, float, int] | None = None
        for j, e in enumerate(ecg.to_dict("records")):
            if c["subject_id"] != e["subject_id"]:
                continue
            d = (e["ecg_time"] - c["study_time"]).total_seconds() / 86400.0
            if abs(d) > cfg.window_days or (cfg.rule == "before_only" and d > 0):
                continue
            if cfg.rule == "all":
                pairs.add((i, j))
            else:
                key = (abs(d), d, j)  # tie -> earlier ECG
                best = key if best is None or key < best else best
        if cfg.rule != "all":
            pairs.add((i, best[2] if best is not None else -1))
        elif not any(p[0] == i for p in pairs):
            pairs.add((i, -1))
    return pairs


@pytest.mark.parametrize("rule", ["nearest", "all", "before_only"])
def test_matches_brute_force(rule: str) -> None:
    rng = np.random.default_rng(7)
    cxr = _cxr([(int(rng.integers(0, 8)), float(rng.integers(-300, 300))) for _ in range(40)])
    ecg = _ecg([(int(rng.integers(0, 8)), float(rng.integers(-300, 300))) for _ in range(60)])
    cfg = PairingConfig(window_days=30.0, rule=rule)  # type: ignore[arg-type]
    assert _pairs(pair_cxr_ecg(cxr, ecg, cfg)) == _brute_force(cxr, ecg, cfg)


def test_scale_50k_rows_runs() -> None:
    rng = np.random.default_rng(0)
    n_cxr, n_ecg = 50_000, 60_000
    cxr = pd.DataFrame(
        {
            "subject_id": rng.integers(10_000_000, 10_020_000, n_cxr),
            "study_time": T0 + pd.to_timedelta(rng.integers(0, 2000 * 86400, n_cxr), unit="s"),
        }
    )
    ecg = pd.DataFrame(
        {
            "subject_id": rng.integers(10_000_000, 10_020_000, n_ecg),
            "ecg_time": T0 + pd.to_timedelta(rng.integers(0, 2000 * 86400, n_ecg), unit="s"),
        }
    )
    out = pair_cxr_ecg(cxr, ecg, PairingConfig(keep_unpaired_ecg=True))
    assert len(out) >= n_cxr
    paired = out[(out["cxr_row"] >= 0) & (out["ecg_row"] >= 0)]
    assert len(paired) > 0 and paired["delta_days"].abs().max() <= 60.0
    c_sub = cxr["subject_id"].to_numpy()[paired["cxr_row"].to_numpy()]
    e_sub = ecg["subject_id"].to_numpy()[paired["ecg_row"].to_numpy()]
    assert (c_sub == e_sub).all()
    assert out.loc[out["cxr_row"] >= 0, "cxr_row"].is_unique  # nearest: one row per CXR
    everything = pair_cxr_ecg(cxr, ecg, PairingConfig(rule="all"))
    assert len(everything) >= len(paired)


def test_subject_splits_follow_cxr() -> None:
    out = subject_splits(
        np.array([1, 2, 3, 1]),
        cxr_subjects=np.array([1, 1, 2, 2, 2]),
        cxr_splits=np.array(["val", "val", "train", "test", "test"]),
        fallback=np.array(["train", "val", "test", "train"]),
    )
    assert out.tolist() == ["val", "test", "test", "val"]
    none = subject_splits(np.array([5]), np.array([]), np.array([]), np.array(["train"]))
    assert none.tolist() == ["train"]
