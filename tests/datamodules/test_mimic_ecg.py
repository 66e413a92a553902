"""MIMIC-IV-ECG reader on tiny fixture files in the distributed format."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from datamodules.errors import MetadataError
from datamodules.labels import ECG_LABELS
from datamodules.mimic_ecg import load_mimic_ecg
from datamodules.splits import hash_split


def _fixtures() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "readers_fixtures", Path(__file__).with_name("readers_fixtures.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RF = _fixtures()


def test_index_reports_and_labels(tmp_path: Path) -> None:
    root = RF.write_mimic_ecg(tmp_path)
    index = load_mimic_ecg(root)
    rec = index.records.set_index("study_id")
    assert len(index) == len(RF.ECG_RECORDS)
    assert rec["subject_id"].dtype == np.int64
    assert rec.loc[40689238, "ecg_time"] == pd.Timestamp("2180-07-23 08:44:00")
    assert rec.loc[40689238, "report"] == "Sinus rhythm. Normal ECG."
    assert rec.loc[44458630, "report"] == "Atrial fibrillation. Abnormal ECG."  # *** skipped
    assert rec.loc[42222222, "report"] is None  # filler only
    assert rec.loc[43333333, "report"] is None  # no measurements row
    assert index.record_path(0) == root / "files/p1000/p10000032/s40689238/40689238"
    assert rec.loc[40689238, "NORM"] == 1.0 and rec.loc[40689238, "AFIB"] == 0.0
    assert rec.loc[44458630, "AFIB"] == 1.0 and rec.loc[44458630, "NORM"] == 0.0
    assert rec.loc[41111111, "SBRAD"] == 1.0 and rec.loc[41111111, "NORM"] == 1.0
    assert rec.loc[45106466, "LBBB"] == 1.0
    for study in (42222222, 43333333):  # unknown, not negative
        assert all(bool(rec[name].isna()[study]) for name in ECG_LABELS)


def test_split_is_by_subject_and_deterministic(tmp_path: Path) -> None:
    records = [
        (10000000 + s, 40000000 + 10 * s + k, f"2180-01-0{k + 1} 10:00:00", ["Sinus rhythm"])
        for s in range(60)
        for k in range(3)
    ]
    root = RF.write_mimic_ecg(tmp_path, records=records)
    first = load_mimic_ecg(root, val_frac=0.2, test_frac=0.2)
    again = load_mimic_ecg(root, val_frac=0.2, test_frac=0.2)
    assert (first.records["split"] == again.records["split"]).all()
    per_subject = first.records.groupby("subject_id")["split"].nunique()
    assert (per_subject == 1).all()
    assert set(first.records["split"]) == {"train", "val", "test"}
    expected = hash_split(first.records["subject_id"], val_frac=0.2, test_frac=0.2)
    assert (first.records["split"].to_numpy() == expected).all()
    salted = load_mimic_ecg(root, val_frac=0.2, test_frac=0.2, split_salt="other")
    assert (salted.records["split"] != first.records["split"]).any()


def test_ragged_statement_columns_and_gz(tmp_path: Path) -> None:
    root = RF.write_mimic_ecg(tmp_path, n_report_cols=4)
    csv = root / "record_list.csv"
    with gzip.open(root / "record_list.csv.gz", "wb") as handle:
        handle.write(csv.read_bytes())
    csv.unlink()
    index = load_mimic_ecg(root)
    assert index.records.set_index("study_id").loc[40689238, "report"] == (
        "Sinus rhythm. Normal ECG."
    )


def test_without_reports(tmp_path: Path) -> None:
    root = RF.write_mimic_ecg(tmp_path)
    (root / "machine_measurements.csv").unlink()
    with pytest.raises(MetadataError, match="machine_measurements.csv"):
        load_mimic_ecg(root)
    index = load_mimic_ecg(root, with_reports=False)
    assert index.records["report"].isna().all()
    assert index.records[list(ECG_LABELS)].isna().all().all()


def test_missing_files_and_columns(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="record_list.csv"):
        load_mimic_ecg(tmp_path / "absent")
    root = RF.write_mimic_ecg(tmp_path)
    frame = pd.read_csv(root / "record_list.csv")
    frame.drop(columns=["ecg_time"]).to_csv(root / "record_list.csv", index=False)
    with pytest.raises(MetadataError, match=r"record_list\.csv: missing required column.*ecg_time"):
        load_mimic_ecg(root)
    frame.to_csv(root / "record_list.csv", index=False)
    mm = pd.read_csv(root / "machine_measurements.csv")
    mm.drop(columns=[c for c in mm.columns if c.startswith("report_")]).to_csv(
        root / "machine_measurements.csv", index=False
    )
    with pytest.raises(MetadataError, match="machine_measurements.csv.*report_0"):
        load_mimic_ecg(root)
    frame.assign(subject_id="abc").to_csv(root / "record_list.csv", index=False)
    with pytest.raises(MetadataError, match="subject_id"):
        load_mimic_ecg(root, with_reports=False)
