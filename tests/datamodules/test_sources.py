"""``load_studies`` for every dataset: fixture files, real PTB-XL metadata, synthetic output."""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest

from datamodules.labels import ECG_LABELS, XRAY_LABELS
from datamodules.pairing import PairingConfig
from datamodules.sources import DATASETS, load_studies
from datamodules.splits import SPLITS, normalize_split
from datamodules.types import Study


def _fixtures() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "readers_fixtures", Path(__file__).with_name("readers_fixtures.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RF = _fixtures()
ALL_NAMES = set(XRAY_LABELS) | set(ECG_LABELS)


def _check_common(studies: list[Study]) -> None:
    assert studies
    assert len({s.study_id for s in studies}) == len(studies)
    for s in studies:
        assert s.split in SPLITS
        assert all(v in (0.0, 1.0) or math.isnan(v) for v in s.labels.values())
        assert s.report is None or s.report.strip()
    splits_of: dict[str, set[str]] = {}
    for s in studies:
        splits_of.setdefault(s.subject_id, set()).add(s.split)
    assert all(len(v) == 1 for v in splits_of.values())  # subjects never cross splits


@pytest.fixture
def mimic_root(tmp_path: Path) -> Path:
    RF.write_mimic_cxr(tmp_path)
    RF.write_mimic_ecg(tmp_path)
    return tmp_path


def test_mimic_tri_modal(mimic_root: Path) -> None:
    studies = load_studies("mimic", mimic_root, progress=False)
    _check_common(studies)
    by_id = {s.study_id: s for s in studies}
    assert set(by_id) == {"50414267-40689238", "53911762-41111111", "57375967-45106466", "50771383"}
    pair = by_id["50414267-40689238"]
    assert pair.present == (True, True, True) and pair.dataset == "mimic"
    assert set(pair.labels) == ALL_NAMES
    assert pair.labels["Edema"] == 1.0 and math.isnan(pair.labels["Cardiomegaly"])
    assert pair.labels["NORM"] == 1.0 and pair.labels["AFIB"] == 0.0
    assert pair.report is not None
    assert pair.report.startswith("Heart size is normal.")
    assert pair.report.endswith("Sinus rhythm. Normal ECG.")
    assert pair.extra["ecg_report"] == "Sinus rhythm. Normal ECG."
    assert pair.extra["delta_days"] == pytest.approx(38 / 60 / 24, abs=1e-3)
    assert pair.ecg_path == mimic_root / "mimic-iv-ecg/files/p1000/p10000032/s40689238/40689238"
    assert pair.xray_time is not None and pair.ecg_time is not None
    lonely = by_id["50771383"]  # no ECG for this subject; no label row; no report
    assert lonely.present == (True, False, False) and lonely.split == "test"
    assert all(math.isnan(lonely.labels[n]) for n in ALL_NAMES)
    lateral = by_id["57375967-45106466"]  # lateral-only study: X-ray missing, text + ECG kept
    assert lateral.present == (False, True, True) and lateral.split == "val"


def test_mimic_options(mimic_root: Path) -> None:
    everything = load_studies(
        "mimic", mimic_root, pairing="all", keep_unpaired_ecg=True, progress=False
    )
    ids = {s.study_id for s in everything}
    assert {"50414267-40689238", "50414267-41111111", "42222222", "43333333"} <= ids
    ecg_only = [s for s in everything if s.xray_path is None and "-" not in s.study_id]
    assert all(all(math.isnan(s.labels[n]) for n in XRAY_LABELS) for s in ecg_only)
    narrow = load_studies(
        "mimic", mimic_root, pairing=PairingConfig(window_days=0.01), progress=False
    )
    assert {s.study_id for s in narrow} == {"50414267", "53911762", "57375967", "50771383"}
    val = load_studies("mimic", mimic_root, split="validate", progress=False)
    assert [s.study_id for s in val] == ["57375967-45106466"]
    ones = load_studies("mimic", mimic_root, uncertainty_policy="one", progress=False)
    assert next(s for s in ones if s.study_id.startswith("50414267")).labels["Cardiomegaly"] == 1.0
    jpg = load_studies("mimic", mimic_root, image_format="jpg", progress=False)
    assert all(s.xray_path is None or s.xray_path.suffix == ".jpg" for s in jpg)
    assert any(s.report for s in jpg)  # reports still come from the DICOM release


def test_ptbxl_from_real_metadata(real_ecg_dir: Path) -> None:
    meta = real_ecg_dir / "ptbxl_metadata"
    studies = load_studies("ptbxl", meta, database="ptbxl_database_subset.csv")
    _check_common(studies)
    assert len(studies) == 529
    assert set(studies[0].labels) == {"CD", "HYP", "MI", "NORM", "STTC"}
    test = load_studies("ptbxl", meta, split="test", database="ptbxl_database_subset.csv")
    assert test and all(s.extra["strat_fold"] == 10 for s in test)
    ecg = load_studies(
        "ptbxl", meta, task="rhythm", label_space="ecg", database="ptbxl_database_subset.csv"
    )
    assert len(ecg) == 531 and set(ecg[0].labels) == set(ECG_LABELS)


def test_chexpert(tmp_path: Path) -> None:
    RF.write_chexpert(tmp_path)
    studies = load_studies("chexpert", tmp_path)
    _check_common(studies)
    assert len(studies) == 8  # laterals dropped
    assert set(studies[0].labels) == ALL_NAMES
    assert studies[0].present == (True, False, False)
    assert studies[0].study_id == "train/patient00001/study1/view1_frontal"
    assert len(load_studies("chexpert", tmp_path, frontal_only=False)) == 9
    assert {s.split for s in load_studies("chexpert", tmp_path, split="valid")} == {"val"}
    assert load_studies("chexpert", tmp_path, split="test") == []


def test_argument_errors(tmp_path: Path) -> None:
    assert DATASETS == ("synthetic", "mimic", "ptbxl", "chexpert")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_studies("imagenet", tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        load_studies("chexpert", tmp_path, split="holdout")
    with pytest.raises(TypeError, match="window"):
        load_studies("mimic", tmp_path, window=3)


# ----------------------------------------------------------------------------- synthetic output


def _generator() -> Callable[..., object] | None:
    try:
        module = importlib.import_module("datamodules.synthetic")
    except ImportError:
        return None
    return getattr(module, "generate", None)


@pytest.fixture(scope="module")
def synthetic_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    generate = _generator()
    if generate is None:
        pytest.skip("datamodules.synthetic.generate not available yet")
    out = tmp_path_factory.mktemp("synth")
    generate(out, n=12, seed=0, progress=False)
    return out


def test_synthetic_tri_modal(synthetic_out: Path) -> None:
    studies = load_studies("synthetic", synthetic_out, progress=False)
    _check_common(studies)
    assert all(s.dataset == "synthetic" and set(s.labels) == ALL_NAMES for s in studies)
    full = [s for s in studies if all(s.present)]
    assert full, "no study with X-ray, ECG and text"
    for s in full:
        assert s.xray_path is not None and s.xray_path.is_file()
        assert s.ecg_path is not None and s.ecg_path.with_suffix(".hea").is_file()
        assert abs(s.extra["delta_days"]) <= 60.0
        assert any(s.labels[n] == s.labels[n] for n in ECG_LABELS)  # ECG labels known
    by_split = {
        sp: load_studies("synthetic", synthetic_out, split=sp, progress=False) for sp in SPLITS
    }
    assert sum(len(v) for v in by_split.values()) == len(studies)


def test_synthetic_labels_match_generator_truth(synthetic_out: Path) -> None:
    truth = pd.read_csv(synthetic_out / "synthetic_truth.csv").set_index("subject_id")
    studies = load_studies(
        "synthetic", synthetic_out, pairing="all", keep_unpaired_ecg=True, progress=False
    )
    n_checked = 0
    for s in studies:
        row: dict[str, Any] = {str(k): v for k, v in truth.loc[int(s.subject_id)].items()}
        assert s.split == normalize_split(str(row["split"]))
        if s.ecg_path is not None:  # keyword rules recover the generator's ECG conditions
            assert {n: s.labels[n] for n in ECG_LABELS} == {
                n: float(row[f"ecg_{n}"]) for n in ECG_LABELS
            }, s.extra["ecg_report"]
            n_checked += 1
        xray = [s.labels[n] for n in XRAY_LABELS]
        if s.xray_path is not None and not all(math.isnan(v) for v in xray):
            for name, value in zip(XRAY_LABELS, xray):
                state = row[f"xray_{name}"]
                expected: float = (
                    0.0 if pd.isna(state) else math.nan if state == -1.0 else float(state)
                )
                assert value == expected or (math.isnan(value) and math.isnan(expected)), name
    assert n_checked > 0


def test_synthetic_other_layouts(synthetic_out: Path) -> None:
    ptbxl = load_studies("ptbxl", synthetic_out)
    _check_common(ptbxl)
    assert all(s.ecg_path is not None and s.ecg_path.with_suffix(".hea").is_file() for s in ptbxl)
    chexpert = load_studies("chexpert", synthetic_out)
    _check_common(chexpert)
    assert all(s.xray_path is not None and s.xray_path.is_file() for s in chexpert)
    jpg = load_studies("mimic", synthetic_out, image_format="jpg", progress=False)
    images = [s.xray_path for s in jpg if s.xray_path is not None]
    assert images and all(p.suffix == ".jpg" and p.is_file() for p in images)


def test_rules_agree_with_generator_phrase_tables() -> None:
    try:
        tables = importlib.import_module("datamodules.synthetic.reports")
    except ImportError:
        pytest.skip("datamodules.synthetic.reports not available yet")
    from datamodules.labels import ecg_labels_from_statements, ptbxl_ecg_labels

    for phrase, label in tables.MIMIC_STATEMENT_LABELS.items():
        # "Abnormal ECG" switches off the sinus-rhythm-only NORM rule for the single phrase
        labels = ecg_labels_from_statements([phrase, "Abnormal ECG"])
        positives = {k for k, v in labels.items() if v == 1.0}
        assert positives == ({label} if label else set()), phrase
    for code, label in tables.PTBXL_CODE_LABELS.items():
        positives = {k for k, v in ptbxl_ecg_labels([code]).items() if v == 1.0}
        assert positives == ({label} if label else set()), code
