"""Report text: MIMIC-CXR sections and PHI marks, ECG statements, PTB-XL reports."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from datamodules.errors import ReportError
from datamodules.reports import (
    clean_phi,
    combine_reports,
    cxr_report_text,
    ecg_statement_columns,
    join_ecg_statements,
    join_ecg_statements_frame,
    parse_cxr_sections,
    ptbxl_report_text,
    read_cxr_report,
)


def _fixtures() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "readers_fixtures", Path(__file__).with_name("readers_fixtures.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RF = _fixtures()


def test_sections_of_a_full_report() -> None:
    sections = parse_cxr_sections(RF.REPORT_FULL)
    assert {"preamble", "examination", "indication", "technique", "comparison"} <= set(sections)
    assert sections["findings"].startswith("Heart size is normal.")
    assert sections["impression"] == "No acute cardiopulmonary process."
    assert "FINAL REPORT" in sections["preamble"]


def test_training_text_is_findings_then_impression_without_phi() -> None:
    text = cxr_report_text(RF.REPORT_FULL)
    assert text is not None
    assert text.startswith("Heart size is normal.")
    assert text.endswith("No acute cardiopulmonary process.")
    assert "___" not in text and "  " not in text
    assert "Dr. was notified." in text
    assert "INDICATION" not in text and "year old" not in text
    token = cxr_report_text(RF.REPORT_FULL, phi_token="[REDACTED]")
    assert token is not None and "Dr. [REDACTED] was notified." in token


def test_missing_sections_and_fallback() -> None:
    assert cxr_report_text(RF.REPORT_FINDINGS_ONLY) == (
        "Mild pulmonary edema. Small left pleural effusion."
    )
    assert cxr_report_text(RF.REPORT_NEITHER) == "Lungs are clear. No pneumothorax."
    assert cxr_report_text(RF.REPORT_NEITHER, fallback_last_paragraph=False) is None
    assert cxr_report_text("                 FINAL REPORT\n") is None
    assert cxr_report_text(" IMPRESSON: Small effusion.\n") == "Small effusion."  # misspelt
    assert cxr_report_text(" CONCLUSION:  ___\n") is None  # PHI only -> nothing left


def test_clean_phi() -> None:
    assert clean_phi("Seen by ___ on ___ .") == "Seen by on."
    assert clean_phi("a ____ b", phi_token="X") == "a X b"


def test_read_report_missing_and_empty(tmp_path: Path) -> None:
    missing = tmp_path / "s1.txt"
    assert read_cxr_report(missing) is None
    with pytest.raises(ReportError, match="s1.txt"):
        read_cxr_report(missing, required=True)
    empty = tmp_path / "s2.txt"
    empty.write_text("   \n \n", encoding="utf-8")
    assert read_cxr_report(empty) is None
    with pytest.raises(ReportError, match="no usable text"):
        read_cxr_report(empty, required=True)
    good = tmp_path / "s3.txt"
    good.write_bytes(RF.REPORT_FULL.encode("utf-8") + b"\xff")  # stray byte is tolerated
    assert read_cxr_report(good, required=True) is not None


def test_join_ecg_statements() -> None:
    cells = ["Sinus rhythm", None, "  Normal ECG. ", float("nan"), "***", "EKG", ""]
    assert join_ecg_statements(cells) == "Sinus rhythm. Normal ECG."
    assert join_ecg_statements([None, "***", np.nan]) is None
    assert ecg_statement_columns(["report_10", "x", "report_2", "report_0"]) == [
        "report_0",
        "report_2",
        "report_10",
    ]


def test_vectorised_statements_match_row_join() -> None:
    frame = pd.DataFrame(
        {
            "study_id": [1, 2, 3],
            "report_0": ["Sinus rhythm", "***", None],
            "report_1": ["Normal ECG", "Atrial  fibrillation", None],
            "report_2": [None, "Abnormal ECG.", None],
        }
    )
    long = join_ecg_statements_frame(frame)
    joined = long.groupby("study_id")["statement"].agg(". ".join) + "."
    for _, row in frame.iterrows():
        expected = join_ecg_statements(row[["report_0", "report_1", "report_2"]])
        assert joined.get(row["study_id"]) == expected
    assert 3 not in set(long["study_id"])


def test_ptbxl_and_combined_text() -> None:
    assert ptbxl_report_text(" sinusrhythmus  normales ekg ") == "sinusrhythmus normales ekg"
    assert ptbxl_report_text(float("nan")) is None and ptbxl_report_text("  ") is None
    assert combine_reports("No acute process.", "Sinus rhythm.") == (
        "No acute process. Sinus rhythm."
    )
    assert combine_reports(None, "Sinus rhythm.") == "Sinus rhythm."
    assert combine_reports(" ", None) is None
