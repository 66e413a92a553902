"""Pair MIMIC-CXR studies with MIMIC-IV-ECG records of the same subject within a time window.

Rules (:class:`PairingConfig`), with ``dt = ecg_time - cxr_time``:

* ``nearest`` (default, MoRE): for each CXR, the ECG with the smallest ``|dt|`` and
  ``|dt| <= window_days`` (a tie prefers the earlier ECG; an ECG may serve several CXRs).
* ``before_only``: the latest ECG with ``-window_days <= dt <= 0`` (no future ECG).
* ``all``: every ECG with ``|dt| <= window_days`` (many-to-many).

CXR studies without a match are kept with the ECG missing; ECGs that match no CXR are added as
ECG-only rows when ``keep_unpaired_ecg``. Rows with an unknown time cannot be matched and are
treated as unpaired.

Implementation: both tables are sorted by ``(subject code, time)`` into one int64 key
``code * span + seconds`` (``span`` exceeds the time range plus twice the window), so every
window lookup is a single :func:`numpy.searchsorted`; the result size is the number of pairs,
not subjects x records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

__all__ = ["PairingConfig", "PairingRule", "pair_cxr_ecg", "subject_splits"]

logger = logging.getLogger(__name__)

PairingRule = Literal["nearest", "all", "before_only"]
_RULES = ("nearest", "all", "before_only")


@dataclass(frozen=True)
class PairingConfig:
    """How CXR studies and ECGs are paired.

    Attributes:
        window_days: maximum ``|ecg_time - cxr_time|`` in days.
        rule: ``nearest``, ``all`` or ``before_only`` (see module docstring).
        keep_unpaired_cxr: keep CXR studies without an ECG (ECG missing).
        keep_unpaired_ecg: add ECGs that pair with no CXR as ECG-only rows.
    """

    window_days: float = 60.0
    rule: PairingRule = "nearest"
    keep_unpaired_cxr: bool = True
    keep_unpaired_ecg: bool = False

    def __post_init__(self) -> None:
        if not np.isfinite(self.window_days) or self.window_days < 0:
            raise ValueError(f"PairingConfig.window_days must be >= 0, got {self.window_days}")
        if self.rule not in _RULES:
            raise ValueError(f"PairingConfig.rule must be one of {_RULES}, got {self.rule!r}")


def _seconds(times: pd.Series) -> np.ndarray:
    """datetime64 -> float64 seconds since the epoch (NaN for NaT)."""
    values = pd.to_datetime(times).astype("datetime64[ns]")
    ns = values.to_numpy().astype("datetime64[ns]").astype(np.int64).astype(np.float64)
    ns[values.isna().to_numpy()] = np.nan
    return ns / 1e9


def pair_cxr_ecg(
    cxr: pd.DataFrame,
    ecg: pd.DataFrame,
    cfg: PairingConfig | None = None,
) -> pd.DataFrame:
    """Pair CXR studies with ECGs of the same subject.

    Args:
        cxr: one row per CXR study with ``subject_id`` and ``study_time`` (datetime64).
        ecg: one row per ECG with ``subject_id`` and ``ecg_time`` (datetime64).
        cfg: pairing rule (default :class:`PairingConfig`).

    Returns:
        DataFrame with ``cxr_row`` and ``ecg_row`` (positional row numbers into the inputs,
        ``-1`` when missing), ``subject_id`` and ``delta_days`` (``ecg_time - cxr_time`` in
        days, NaN when unpaired). Ordered by CXR row, then ECG time; ECG-only rows last.
    """
    cfg = cfg or PairingConfig()
    for frame, name, col in ((cxr, "cxr", "study_time"), (ecg, "ecg", "ecg_time")):
        missing = [c for c in ("subject_id", col) if c not in frame.columns]
        if missing:
            raise ValueError(f"pair_cxr_ecg: {name} table lacks column(s) {missing}")
    c_sub = cxr["subject_id"].to_numpy()
    e_sub = ecg["subject_id"].to_numpy()
    c_t = _seconds(cxr["study_time"])
    e_t = _seconds(ecg["ecg_time"])
    window = float(cfg.window_days) * 86400.0

    codes, _ = pd.factorize(np.concatenate([c_sub, e_sub]), sort=False)
    c_code = codes[: len(c_sub)].astype(np.int64)
    e_code = codes[len(c_sub) :].astype(np.int64)

    c_ok = ~np.isnan(c_t)
    e_ok = ~np.isnan(e_t)
    known = np.concatenate([c_t[c_ok], e_t[e_ok]])
    t0 = float(known.min()) if known.size else 0.0
    span_s = (float(known.max()) - t0 if known.size else 0.0) + 2.0 * window + 2.0
    # integer seconds keep keys exact; sub-second precision is irrelevant for day windows
    span = np.int64(np.ceil(span_s)) + 1
    if codes.size and int(codes.max() + 1) * int(span) >= 2**62:
        raise ValueError("pair_cxr_ecg: time range too large to encode")
    shift = int(np.ceil(window)) + 1

    e_idx = np.flatnonzero(e_ok)
    e_key = e_code[e_idx] * span + (np.round(e_t[e_idx] - t0).astype(np.int64) + shift)
    order = np.argsort(e_key, kind="stable")
    e_idx, e_key = e_idx[order], e_key[order]

    c_idx = np.flatnonzero(c_ok)
    c_key = c_code[c_idx] * span + (np.round(c_t[c_idx] - t0).astype(np.int64) + shift)
    w = np.int64(np.floor(window))

    if e_key.size == 0 or c_key.size == 0:
        pair_c = np.zeros(0, dtype=np.int64)
        pair_e = np.zeros(0, dtype=np.int64)
    elif cfg.rule == "all":
        lo = np.searchsorted(e_key, c_key - w, side="left")
        hi = np.searchsorted(e_key, c_key + w, side="right")
        counts = hi - lo
        pair_c = np.repeat(c_idx, counts)
        starts = np.repeat(lo, counts)
        offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        pair_e = e_idx[starts + offsets]
    else:
        big = np.iinfo(np.int64).max
        # last ECG at or before the CXR time, first ECG after it
        after = np.searchsorted(e_key, c_key, side="right")
        before = after - 1
        b_pos = np.clip(before, 0, e_key.size - 1)
        a_pos = np.clip(after, 0, e_key.size - 1)
        b_ok = (before >= 0) & (e_key[b_pos] >= c_key - w)
        a_ok = (after < e_key.size) & (e_key[a_pos] <= c_key + w)
        if cfg.rule == "before_only":
            chosen, chosen_ok = b_pos, b_ok
        else:
            d_b = np.where(b_ok, c_key - e_key[b_pos], big)
            d_a = np.where(a_ok, e_key[a_pos] - c_key, big)
            chosen = np.where(a_ok & (d_a < d_b), a_pos, b_pos)
            chosen_ok = b_ok | a_ok
        pair_c = c_idx[chosen_ok]
        pair_e = e_idx[chosen[chosen_ok]]

    pairs = pd.DataFrame(
        {
            "cxr_row": pair_c.astype(np.int64),
            "ecg_row": pair_e.astype(np.int64),
            "subject_id": c_sub[pair_c],
            "delta_days": (e_t[pair_e] - c_t[pair_c]) / 86400.0,
        }
    )
    parts = [pairs]
    if cfg.keep_unpaired_cxr:
        lonely = np.setdiff1d(np.arange(len(cxr)), pair_c)
        parts.append(
            pd.DataFrame(
                {
                    "cxr_row": lonely.astype(np.int64),
                    "ecg_row": np.full(lonely.size, -1, dtype=np.int64),
                    "subject_id": c_sub[lonely],
                    "delta_days": np.full(lonely.size, np.nan),
                }
            )
        )
    out = pd.concat(parts, ignore_index=True)
    out = out.sort_values(["cxr_row", "delta_days"], kind="stable", na_position="last")
    if cfg.keep_unpaired_ecg:
        lonely_e = np.setdiff1d(np.arange(len(ecg)), pair_e)
        ecg_only = pd.DataFrame(
            {
                "cxr_row": np.full(lonely_e.size, -1, dtype=np.int64),
                "ecg_row": lonely_e.astype(np.int64),
                "subject_id": e_sub[lonely_e],
                "delta_days": np.full(lonely_e.size, np.nan),
            }
        )
        out = pd.concat([out, ecg_only], ignore_index=True)
    n_bad = int((~c_ok).sum())
    if n_bad:
        logger.info("pairing: %d CXR study(ies) without a time were left unpaired", n_bad)
    return out.reset_index(drop=True)


def subject_splits(
    subject_ids: np.ndarray | pd.Series,
    cxr_subjects: np.ndarray | pd.Series,
    cxr_splits: np.ndarray | pd.Series,
    fallback: np.ndarray | pd.Series,
) -> np.ndarray:
    """Split per row: the subject's CXR split where the subject has CXR studies, else ``fallback``.

    MIMIC-CXR's official split is patient-disjoint, so each subject has one CXR split; if a
    subject has several (corrupt metadata), the most frequent (then alphabetical) wins. Using
    it for the subject's ECG-only rows keeps every subject in exactly one split.

    Returns:
        object array of split names aligned with ``subject_ids``.
    """
    table = pd.DataFrame({"subject_id": np.asarray(cxr_subjects), "split": np.asarray(cxr_splits)})
    if table.empty:
        return np.asarray(fallback, dtype=object)
    counts = table.value_counts().reset_index(name="n")
    counts = counts.sort_values(["subject_id", "n", "split"], ascending=[True, False, True])
    per_subject = counts.drop_duplicates("subject_id").set_index("subject_id")["split"]
    mapped = pd.Series(np.asarray(subject_ids)).map(per_subject)
    fb = pd.Series(np.asarray(fallback, dtype=object))
    return mapped.where(mapped.notna(), fb).to_numpy(dtype=object)
