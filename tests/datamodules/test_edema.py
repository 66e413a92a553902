"""Edema severity grades: reading the three files and joining them to MIMIC-CXR."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from datamodules.edema import EDEMA_GRADES, EDEMA_LABELS, edema_studies, load_edema
from datamodules.errors import MetadataError
from datamodules.mimic_cxr import load_mimic_cxr


def _fixtures() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "readers_fixtures", Path(__file__).with_name("readers_fixtures.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RF = _fixtures()


def _write(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "subject_id": [10000032, 10000032, 10000764, 19999999],
            "study_id": [50414267, 53911762, 57375967, 59999999],
            "edema_severity": [2, 0, 3, 1],
        }
    ).to_csv(folder / "regex_report_edema_severity.csv", index=False)
    pd.DataFrame({"subject_id": [10000032], "study_id": [50414267], "edema_severity": [1]}).to_csv(
        folder / "expert_report_edema_severity.csv", index=False
    )
    pd.DataFrame(
        {
            "subject_id": [10000032],
            "study_id": [50414267],
            "dicom_id": ["2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab"],
            "edema_severity": [3],
        }
    ).to_csv(folder / "consensus_image_edema_severity.csv", index=False)
    return folder


def test_load_grades(tmp_path: Path) -> None:
    folder = _write(tmp_path / "edema")
    regex = load_edema(folder)
    assert regex["edema_severity"].tolist() == [2, 0, 3, 1]
    assert str(regex["edema_severity"].dtype) == "int64"
    assert load_edema(folder, "expert")["edema_severity"].tolist() == [1]
    consensus = load_edema(folder / "consensus_image_edema_severity.csv", "consensus")
    assert "dicom_id" in consensus.columns
    assert len(EDEMA_GRADES) == len(EDEMA_LABELS) == 4


@pytest.mark.parametrize("bad", [4, -1, 1.5, "mild", None])
def test_bad_grade(tmp_path: Path, bad: object) -> None:
    path = tmp_path / "regex_report_edema_severity.csv"
    pd.DataFrame({"subject_id": [1, 2], "study_id": [3, 4], "edema_severity": [0, bad]}).to_csv(
        path, index=False
    )
    with pytest.raises(MetadataError, match="regex_report_edema_severity.csv.*edema_severity"):
        load_edema(tmp_path)


def test_missing_file_and_columns(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="expert_report_edema_severity.csv"):
        load_edema(tmp_path, "expert")
    pd.DataFrame({"subject_id": [1], "study_id": [2], "edema_severity": [0]}).to_csv(
        tmp_path / "consensus_image_edema_severity.csv", index=False
    )
    with pytest.raises(MetadataError, match="missing required column.*dicom_id"):
        load_edema(tmp_path, "consensus")


def test_join_to_mimic_cxr(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dcm, jpg = RF.write_mimic_cxr(tmp_path)
    cxr = load_mimic_cxr(dcm, meta_root=jpg)
    folder = _write(tmp_path / "edema")
    with caplog.at_level(logging.WARNING):
        studies = edema_studies(load_edema(folder), cxr, with_reports=True)
    # 57375967 is lateral-only (no selected image) and 59999999 is not in MIMIC-CXR
    assert [s.study_id for s in studies] == ["50414267", "53911762"]
    assert "2 graded row(s)" in caplog.text
    first = studies[0]
    assert first.extra["edema_severity"] == 2
    assert first.labels == {name: float(i == 2) for i, name in enumerate(EDEMA_LABELS)}
    assert first.xray_path is not None and first.xray_path.name.startswith("174413ec")
    assert first.split == "train" and first.report is not None
    image_level = edema_studies(load_edema(folder, "consensus"), cxr)
    assert len(image_level) == 1
    assert image_level[0].xray_path is not None
    assert image_level[0].xray_path.name.startswith("2a2277a9")  # the graded lateral image
    assert image_level[0].labels["edema_alveolar"] == 1.0
