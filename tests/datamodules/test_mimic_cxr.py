"""MIMIC-CXR reader (DICOM and JPG releases) on tiny gzip fixture CSVs."""

from __future__ import annotations

import gzip
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from datamodules.errors import MetadataError
from datamodules.labels import XRAY_LABELS
from datamodules.mimic_cxr import MimicCxrIndex, cxr_report_path, load_mimic_cxr
from datamodules.tables import study_datetime


def _fixtures() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "readers_fixtures", Path(__file__).with_name("readers_fixtures.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RF = _fixtures()
FULL, FINDINGS, LATERAL, UNLABELLED = 50414267, 53911762, 57375967, 50771383


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    return RF.write_mimic_cxr(tmp_path)


@pytest.fixture
def dicom_index(roots: tuple[Path, Path]) -> MimicCxrIndex:
    return load_mimic_cxr(roots[0], meta_root=roots[1])


def test_study_time_without_leading_zero() -> None:
    out = study_datetime(
        pd.Series([21800723, 21800806, 21800101, None]),
        pd.Series([80556.875, 213014.531, None, 120000.0]),
    )
    assert out.iloc[0] == pd.Timestamp("2180-07-23 08:05:56.875")
    assert out.iloc[1] == pd.Timestamp("2180-08-06 21:30:14.531")
    assert out.iloc[2] == pd.Timestamp("2180-01-01")  # blank time -> midnight
    assert pd.isna(out.iloc[3])


def test_dicom_index(dicom_index: MimicCxrIndex, roots: tuple[Path, Path]) -> None:
    dcm = roots[0]
    assert dicom_index.image_format == "dicom"
    assert len(dicom_index.images) == 6 and len(dicom_index) == 4
    st = dicom_index.studies.set_index("study_id")
    assert st.loc[FULL, "n_images"] == 3
    assert st.loc[FULL, "view"] == "PA"  # PA preferred over AP
    assert st.loc[FULL, "image_path"] == str(
        dcm / "files/p10/p10000032/s50414267/174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962.dcm"
    )
    assert st.loc[FULL, "study_time"] == pd.Timestamp("2180-07-23 08:05:56.875")
    assert st.loc[LATERAL, "image_path"] is None  # lateral only -> X-ray missing
    assert st.loc[LATERAL, "split"] == "val"  # "validate" in the split file
    assert dict(st["split"]) == {
        FULL: "train",
        FINDINGS: "train",
        LATERAL: "val",
        UNLABELLED: "test",
    }
    assert st.loc[FULL, "report_path"] == str(cxr_report_path(dcm, 10000032, FULL))
    assert Path(str(st.loc[FULL, "report_path"])).parent.name == "p10000032"  # beside study folder


def test_labels_and_policies(dicom_index: MimicCxrIndex) -> None:
    st = dicom_index.studies.set_index("study_id")
    assert st.loc[FULL, "Cardiomegaly"] == -1.0 and bool(st["No Finding"].isna()[FULL])
    assert not st.loc[UNLABELLED, "has_labels"]
    order = dicom_index.studies["study_id"].tolist()
    col = {name: i for i, name in enumerate(XRAY_LABELS)}
    for policy, uncertain in (("ignore", np.nan), ("zero", 0.0), ("one", 1.0)):
        y = dicom_index.label_matrix(policy)  # type: ignore[arg-type]
        row = y[order.index(FULL)]
        assert row[col["Edema"]] == 1.0 and row[col["Pleural Effusion"]] == 0.0
        assert row[col["No Finding"]] == 0.0  # blank -> 0
        np.testing.assert_equal(row[col["Cardiomegaly"]], uncertain)
        assert np.isnan(y[order.index(UNLABELLED)]).all()  # no label row -> unknown
        assert (y[order.index(LATERAL)] == 0.0).all()  # all-empty row -> not mentioned
    kept = dicom_index.label_matrix("zero", blank=np.nan)
    assert np.isnan(kept[order.index(FULL), col["No Finding"]])


def test_reports(dicom_index: MimicCxrIndex, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        texts = dict(zip(dicom_index.studies["study_id"], dicom_index.read_reports()))
    assert texts[FULL] is not None and texts[FULL].endswith("No acute cardiopulmonary process.")
    assert texts[FINDINGS] == "Mild pulmonary edema. Small left pleural effusion."
    assert texts[UNLABELLED] is None  # file missing
    assert "1 of 4 report(s)" in caplog.text
    assert "10000898" not in caplog.text  # no subject id in the log


def test_jpg_release(roots: tuple[Path, Path]) -> None:
    dcm, jpg = roots
    index = load_mimic_cxr(jpg, reports_root=dcm)
    assert index.image_format == "jpg"
    st = index.studies.set_index("study_id")
    assert st.loc[FULL, "image_path"] == str(
        jpg / "files/p10/p10000032/s50414267/174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962.jpg"
    )
    assert index.read_reports(progress=False)[0] is not None


def test_view_options(roots: tuple[Path, Path]) -> None:
    dcm, jpg = roots
    fallback = load_mimic_cxr(dcm, meta_root=jpg, view_fallback=True).studies.set_index("study_id")
    assert fallback.loc[LATERAL, "view"] == "LATERAL"
    ap_first = load_mimic_cxr(dcm, meta_root=jpg, views=("AP", "PA")).studies.set_index("study_id")
    assert ap_first.loc[FULL, "view"] == "AP"
    anyview = load_mimic_cxr(dcm, meta_root=jpg, views=None).studies
    assert anyview["image_path"].notna().all()


def test_dicom_without_metadata_hashes_subjects(
    roots: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        index = load_mimic_cxr(roots[0])
    assert index.studies["study_time"].isna().all()
    assert index.studies["image_path"].notna().all()  # view unknown -> not filtered
    assert not index.studies["has_labels"].any()
    per_subject = index.studies.groupby("subject_id")["split"].nunique()
    assert (per_subject == 1).all()
    assert "mimic-cxr-2.0.0-metadata.csv.gz not found" in caplog.text


def _rewrite(path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    frame = pd.read_csv(path)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        edit(frame).to_csv(handle, index=False)


def test_bad_metadata(roots: tuple[Path, Path], tmp_path: Path) -> None:
    dcm, jpg = roots
    with pytest.raises(MetadataError, match="cxr-record-list.csv.gz"):
        load_mimic_cxr(tmp_path / "empty")
    with pytest.raises(MetadataError, match=r"empty: folder not found"):
        load_mimic_cxr(tmp_path / "empty", image_format="dicom")

    labels = jpg / "mimic-cxr-2.0.0-chexpert.csv.gz"
    _rewrite(labels, lambda f: f.assign(Edema=2.0))
    with pytest.raises(MetadataError, match=r"chexpert\.csv\.gz: column 'Edema'"):
        load_mimic_cxr(dcm, meta_root=jpg)
    _rewrite(labels, lambda f: f.drop(columns=["Edema", "Fracture"]))
    with pytest.raises(MetadataError, match="missing required column.*Edema, Fracture"):
        load_mimic_cxr(dcm, meta_root=jpg)

    split = jpg / "mimic-cxr-2.0.0-split.csv.gz"
    _rewrite(split, lambda f: f.assign(split="holdout"))
    with pytest.raises(MetadataError, match=r"split\.csv\.gz: column 'split'"):
        load_mimic_cxr(dcm, meta_root=jpg)

    _rewrite(jpg / "mimic-cxr-2.0.0-metadata.csv.gz", lambda f: f.drop(columns=["StudyTime"]))
    with pytest.raises(MetadataError, match="metadata.csv.gz: missing required column.*StudyTime"):
        load_mimic_cxr(dcm, meta_root=jpg)

    (dcm / "cxr-record-list.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(MetadataError, match="cxr-record-list.csv.gz"):
        load_mimic_cxr(dcm, image_format="dicom")


def test_blank_view_is_not_frontal(tmp_path: Path) -> None:
    studies: list[Any] = [
        (10000111, 51111111, [("aaaaaaaa-0-0-0-0", "", 21500101, 93000.0)], "train", {}, None)
    ]
    dcm, jpg = RF.write_mimic_cxr(tmp_path, studies=studies)
    strict = load_mimic_cxr(dcm, meta_root=jpg).studies
    assert strict["image_path"].isna().all()
    loose = load_mimic_cxr(dcm, meta_root=jpg, view_fallback=True).studies
    assert loose["image_path"].notna().all()
