"""Label vocabularies, CheXpert uncertainty policies and the ECG keyword rules."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from datamodules.labels import (
    CHEXPERT_COMPETITION_LABELS,
    ECG_KEYWORD_RULES,
    ECG_LABELS,
    PTBXL_ECG_CODES,
    XRAY_LABELS,
    apply_uncertainty,
    ecg_label_frame,
    ecg_labels_from_statements,
    ecg_labels_from_text,
    ptbxl_ecg_labels,
    split_statements,
)


def test_vocabularies() -> None:
    assert len(XRAY_LABELS) == 14 and len(set(XRAY_LABELS)) == 14
    assert XRAY_LABELS[0] == "No Finding" and XRAY_LABELS[-1] == "Support Devices"
    assert set(CHEXPERT_COMPETITION_LABELS) <= set(XRAY_LABELS)
    required = {"NORM", "AFIB", "SBRAD", "STACH", "LBBB", "RBBB", "MI", "ISCH", "LVH"}
    assert required <= set(ECG_LABELS)
    assert len(set(ECG_LABELS)) == len(ECG_LABELS)
    # the keyword table and the PTB-XL mapping cover the same vocabulary
    assert tuple(r.label for r in ECG_KEYWORD_RULES) == ECG_LABELS
    assert set(PTBXL_ECG_CODES) == set(ECG_LABELS)


def _raw(values: list[float]) -> np.ndarray:
    row = np.full((1, 14), np.nan)
    row[0, : len(values)] = values
    return row


@pytest.mark.parametrize(
    ("policy", "uncertain"), [("ignore", math.nan), ("zero", 0.0), ("one", 1.0)]
)
def test_uncertainty_policies(policy: str, uncertain: float) -> None:
    out = apply_uncertainty(_raw([1.0, 0.0, -1.0]), policy)  # type: ignore[arg-type]
    assert out.dtype == np.float32 and out.shape == (1, 14)
    assert out[0, 0] == 1.0 and out[0, 1] == 0.0
    assert np.isnan(out[0, 2]) if math.isnan(uncertain) else out[0, 2] == uncertain
    assert np.all(out[0, 3:] == 0.0)  # blank = not mentioned -> 0 by default


def test_blank_can_stay_unknown_and_policy_per_label() -> None:
    out = apply_uncertainty(_raw([1.0, -1.0]), "zero", blank=math.nan)
    assert np.isnan(out[0, 2:]).all() and out[0, 1] == 0.0
    raw = np.full((1, 14), -1.0)
    per = apply_uncertainty(raw, {"Edema": "one", "Cardiomegaly": "zero"})
    assert per[0, XRAY_LABELS.index("Edema")] == 1.0
    assert per[0, XRAY_LABELS.index("Cardiomegaly")] == 0.0
    assert np.isnan(per[0, XRAY_LABELS.index("Atelectasis")])  # unlisted -> ignore
    with pytest.raises(ValueError, match="policy"):
        apply_uncertainty(raw, "maybe")  # type: ignore[arg-type]


def _positives(labels: dict[str, float]) -> set[str]:
    return {k for k, v in labels.items() if v == 1.0}


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        (["Sinus rhythm", "Normal ECG"], {"NORM"}),
        (["Sinus rhythm"], {"NORM"}),
        (["Normal sinus rhythm", "***"], {"NORM"}),
        (["Sinus rhythm", "Left axis deviation", "Borderline ECG"], set()),
        (["Sinus bradycardia", "Otherwise normal ECG"], {"NORM", "SBRAD"}),
        (["Sinus tachycardia", "Abnormal ECG"], {"STACH"}),
        (["Atrial fibrillation with rapid ventricular response", "Abnormal ECG"], {"AFIB"}),
        (["Atrial flutter with 2:1 A-V conduction"], {"AFLT"}),
        (["Sinus rhythm", "Incomplete right bundle branch block"], set()),
        (["Sinus rhythm", "Right bundle branch block"], {"RBBB"}),
        (["Left bundle branch block"], {"LBBB"}),
        (["Sinus rhythm", "Inferior infarct - age undetermined"], {"MI"}),
        (["Anterior myocardial infarction, possibly acute"], {"MI"}),
        (["ST depression, consider subendocardial injury"], {"ISCH"}),
        (["Lateral ST-T changes may be due to myocardial ischemia"], {"ISCH"}),
        (["Left ventricular hypertrophy"], {"LVH"}),
        (["Sinus rhythm with 1st degree A-V block"], {"1AVB"}),
        (["Prolonged QT interval"], {"LQT"}),
        (["Ventricular paced rhythm"], {"PACE"}),
        (["Atrial fibrillation no longer present", "Sinus rhythm"], {"NORM"}),
        (["ABNORMAL ECG", "SINUS BRADYCARDIA"], {"SBRAD"}),
    ],
)
def test_keyword_rules(statements: list[str], expected: set[str]) -> None:
    labels = ecg_labels_from_statements(statements)
    assert set(labels) == set(ECG_LABELS)
    assert _positives(labels) == expected
    assert all(v in (0.0, 1.0) for v in labels.values())


def test_no_usable_statement_is_unknown() -> None:
    for statements in ([], ["***", "EKG", "  "], [None, float("nan")]):
        labels = ecg_labels_from_statements(statements)  # type: ignore[arg-type]
        assert all(math.isnan(v) for v in labels.values())


def test_vectorised_frame_matches_per_record_rules() -> None:
    pool = [
        "Sinus rhythm",
        "Normal ECG",
        "Abnormal ECG",
        "Borderline ECG",
        "Left axis deviation",
        "Sinus bradycardia",
        "Atrial fibrillation",
        "Inferior infarct - age undetermined",
        "Prolonged QT interval",
        "Right bundle branch block",
        "Incomplete right bundle branch block",
        "***",
        "Otherwise normal ECG",
        "ST depression",
    ]
    rng = np.random.default_rng(0)
    keys, texts, records = [], [], {}
    for rec in range(200):
        chosen = [pool[i] for i in rng.choice(len(pool), size=rng.integers(1, 5), replace=False)]
        records[rec] = chosen
        keys += [rec] * len(chosen)
        texts += chosen
    frame = ecg_label_frame(pd.Series(texts, index=keys))
    assert list(frame.columns) == list(ECG_LABELS)
    for rec, chosen in records.items():
        expected = ecg_labels_from_statements(chosen)
        if all(math.isnan(v) for v in expected.values()):
            assert rec not in frame.index
        else:
            assert frame.loc[rec].to_dict() == expected


def test_text_splitting() -> None:
    assert split_statements("Sinus rhythm. Normal ECG.") == ["Sinus rhythm", "Normal ECG"]
    assert split_statements("QTc 0.45 s; LVH") == ["QTc 0.45 s", "LVH"]
    assert split_statements(None) == []
    assert _positives(ecg_labels_from_text("Sinus rhythm. Left ventricular hypertrophy.")) == {
        "LVH"
    }


def test_ptbxl_code_mapping() -> None:
    labels = ptbxl_ecg_labels({"CLBBB": 100.0, "SR": 0.0})
    assert _positives(labels) == {"LBBB"}
    assert _positives(ptbxl_ecg_labels(["IMI", "ISCAL", "VCLVH"])) == {"MI", "ISCH", "LVH"}
    assert _positives(ptbxl_ecg_labels(["IRBBB", "NORM"])) == {"NORM"}  # incomplete RBBB != RBBB
    assert set(ptbxl_ecg_labels([]).values()) == {0.0}
