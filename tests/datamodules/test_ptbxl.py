"""PTB-XL reader on the real metadata (531-row subset + the full scp_statements.csv)."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datamodules.errors import MetadataError
from datamodules.labels import ECG_LABELS
from datamodules.ptbxl import (
    PTBXL_TASKS,
    PtbxlIndex,
    fold_to_split,
    load_ptbxl,
    load_task,
    parse_scp_codes,
    ptbxl_ecg_label_frame,
    ptbxl_studies,
    ptbxl_task,
)

SUBSET = "ptbxl_database_subset.csv"
EXPECTED_SIZES = {
    "all": 71,
    "diagnostic": 44,
    "subdiagnostic": 23,
    "superdiagnostic": 5,
    "form": 19,
    "rhythm": 12,
}


@pytest.fixture(scope="module")
def meta_dir(real_ecg_dir: Path) -> Path:
    return real_ecg_dir / "ptbxl_metadata"


@pytest.fixture(scope="module")
def index(meta_dir: Path) -> PtbxlIndex:
    return load_ptbxl(meta_dir, database=SUBSET)


def test_index_reads_the_distributed_quirks(index: PtbxlIndex, meta_dir: Path) -> None:
    assert len(index) == 531
    records = index.records
    assert records.index.dtype == np.int64 and records.index.is_monotonic_increasing
    assert records["patient_id"].dtype == np.int64  # written as 15709.0
    assert records.at[1, "patient_id"] == 15709
    assert records.loc[1, "scp_codes"] == {"NORM": 100.0, "LVOLT": 0.0, "SR": 0.0}
    assert len(index.statements) == 71  # unnamed first column -> index
    assert set(records["strat_fold"]) == set(range(1, 11))
    assert index.record_path(1) == meta_dir / "records100/00000/00001_lr"
    assert index.record_path(1, fs=500) == meta_dir / "records500/00000/00001_hr"
    with pytest.raises(ValueError):
        index.record_path(1, fs=250)


def test_official_folds() -> None:
    assert [fold_to_split(f) for f in (1, 8, 9, 10)] == ["train", "train", "val", "test"]
    with pytest.raises(ValueError):
        fold_to_split(11)


@pytest.mark.parametrize("task", PTBXL_TASKS)
def test_task_vocabularies(index: PtbxlIndex, task: str) -> None:
    labels = ptbxl_task(index, task)
    st = index.statements
    assert len(labels.names) == EXPECTED_SIZES[task]
    assert list(labels.names) == sorted(labels.names)
    if task == "superdiagnostic":
        expected = set(st.loc[st["diagnostic"], "diagnostic_class"])
    elif task == "subdiagnostic":
        expected = set(st.loc[st["diagnostic"], "diagnostic_subclass"])
    elif task == "all":
        expected = set(st.index)
    else:
        expected = set(st.index[st[task]])
    assert set(labels.names) == expected
    assert labels.y.dtype == np.float32 and labels.y.shape == (len(labels.ids), len(labels.names))
    assert (labels.y.sum(axis=1) > 0).all()  # records without a label are dropped
    assert set(np.unique(labels.y)) <= {0.0, 1.0}


def test_superdiagnostic_counts_and_dropped_records(index: PtbxlIndex, meta_dir: Path) -> None:
    labels = ptbxl_task(index, "superdiagnostic")
    counts = dict(zip(labels.names, labels.y.sum(axis=0).astype(int)))
    # counts documented for this subset in shared/data/real/README.md
    assert counts == {"NORM": 310, "STTC": 110, "CD": 94, "MI": 90, "HYP": 50}
    # independent check straight from the CSVs: records with no diagnostic code are dropped
    raw = pd.read_csv(meta_dir / SUBSET, index_col="ecg_id")
    st = pd.read_csv(meta_dir / "scp_statements.csv", index_col=0)
    diag = set(st.index[st["diagnostic"] == 1.0])
    no_super = {i for i, s in raw["scp_codes"].items() if not diag & set(ast.literal_eval(s))}
    assert len(no_super) == 2
    assert no_super.isdisjoint(set(labels.ids.tolist()))
    assert len(labels.ids) == len(raw) - len(no_super)


def test_likelihood_zero_counts_as_present(index: PtbxlIndex) -> None:
    form = ptbxl_task(index, "form")
    row = form.y[list(form.ids).index(1)]
    assert row[form.names.index("LVOLT")] == 1.0  # 'LVOLT': 0.0 in ecg_id 1
    rhythm = ptbxl_task(index, "rhythm")
    assert rhythm.y[list(rhythm.ids).index(1), rhythm.names.index("SR")] == 1.0
    assert len(form.ids) < len(index)  # most records have no form statement


def test_splits_and_min_samples(index: PtbxlIndex) -> None:
    labels = ptbxl_task(index, "superdiagnostic")
    test = labels.subset("test")
    assert len(test.ids) > 0 and set(test.folds.tolist()) == {10}
    assert set(labels.subset("val").folds.tolist()) == {9}
    assert set(labels.subset("train").folds.tolist()) <= set(range(1, 9))
    dense = ptbxl_task(index, "diagnostic", min_samples=5)
    assert len(dense.names) < 44
    assert (dense.y.sum(axis=0) > 5).all()
    with pytest.raises(ValueError, match="unknown PTB-XL task"):
        ptbxl_task(index, "morphology")


def test_ecg_label_mapping(index: PtbxlIndex) -> None:
    frame = ptbxl_ecg_label_frame(index)
    assert list(frame.columns) == list(ECG_LABELS)
    sup = ptbxl_task(index, "superdiagnostic")
    norm = pd.Series(sup.y[:, sup.names.index("NORM")], index=sup.ids)
    mi = pd.Series(sup.y[:, sup.names.index("MI")], index=sup.ids)
    assert (frame.loc[norm.index, "NORM"] == norm).all()
    assert (frame.loc[mi.index, "MI"] == mi).all()  # ECG MI = every code of the MI class


def test_studies_for_task_and_ecg_space(meta_dir: Path) -> None:
    result = load_task(meta_dir, "superdiagnostic", database=SUBSET)
    assert result.label_names == ("CD", "HYP", "MI", "NORM", "STTC")
    assert len(result.studies) == 529
    first = result.studies[0]
    assert first.study_id == "1" and first.subject_id == "15709"
    assert first.ecg_path == meta_dir / "records100/00000/00001_lr"
    assert first.report == "sinusrhythmus periphere niederspannung"
    assert first.labels["NORM"] == 1.0 and first.labels["MI"] == 0.0
    assert first.present == (False, True, True) and first.ecg_time is not None
    assert {s.split for s in result.studies} == {"train", "val", "test"}
    ecg = ptbxl_studies(load_ptbxl(meta_dir, database=SUBSET), label_space="ecg", fs=500)
    assert len(ecg.studies) == 531 and ecg.label_names == ECG_LABELS
    assert str(ecg.studies[0].ecg_path).endswith("00001_hr")


def test_bad_inputs(meta_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = pd.read_csv(meta_dir / SUBSET)
    (tmp_path / "scp_statements.csv").write_bytes((meta_dir / "scp_statements.csv").read_bytes())
    broken = raw.copy()
    broken.loc[broken["ecg_id"] == 2, "scp_codes"] = "{'NORM': 80.0, 'SBRAD'"
    broken.to_csv(tmp_path / "ptbxl_database.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="datamodules.ptbxl"):
        index = load_ptbxl(tmp_path)
    assert len(index) == 530 and 2 not in index.records.index
    assert "ecg_id 2" in caplog.text

    raw.drop(columns=["scp_codes", "strat_fold"]).to_csv(tmp_path / "ptbxl_database.csv")
    with pytest.raises(MetadataError, match=r"ptbxl_database\.csv.*scp_codes, strat_fold"):
        load_ptbxl(tmp_path)
    with pytest.raises(MetadataError, match="ptbxl_database.csv"):
        load_ptbxl(tmp_path / "nowhere")
    (tmp_path / "ptbxl_database.csv").unlink()
    with pytest.raises(MetadataError, match=r"ptbxl_database\.csv: .*not found"):
        load_ptbxl(tmp_path)


def test_parse_scp_codes() -> None:
    assert parse_scp_codes("{'NORM': 100.0, 'SR': 0.0}") == {"NORM": 100.0, "SR": 0.0}
    assert parse_scp_codes("{}") == {}
    for bad in ("", "NORM", "{'NORM': 'x'}", "['NORM']", float("nan"), "__import__('os')"):
        assert parse_scp_codes(bad) is None
