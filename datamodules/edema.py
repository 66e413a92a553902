"""MIMIC-CXR pulmonary edema severity grades (PhysioNet ``mimic-cxr-pe-severity``).

Formats: DATASETS.md §5. Three label files: ``regex`` and ``expert`` are study-level
(``subject_id, study_id, edema_severity``), ``consensus`` is image-level (adds ``dicom_id``).
Grades are integers 0 none, 1 vascular congestion, 2 interstitial edema, 3 alveolar edema;
anything else (blank, 4, 1.5, text) raises :class:`~datamodules.errors.MetadataError`.

:func:`edema_studies` joins the grades to a :class:`~datamodules.mimic_cxr.MimicCxrIndex`
(study-level grades use the study's selected image, image-level grades their own ``dicom_id``);
grades whose study/image is absent from the index are dropped with one warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from datamodules.errors import MetadataError
from datamodules.mimic_cxr import MimicCxrIndex
from datamodules.reports import read_cxr_report
from datamodules.tables import find_file, read_table, to_datetime64, to_int_ids
from datamodules.types import Study

logger = logging.getLogger(__name__)

__all__ = [
    "EDEMA_FILES",
    "EDEMA_GRADES",
    "EDEMA_LABELS",
    "EdemaSource",
    "edema_studies",
    "load_edema",
]

EdemaSource = Literal["regex", "expert", "consensus"]

EDEMA_FILES: dict[str, str] = {
    "regex": "regex_report_edema_severity.csv",
    "expert": "expert_report_edema_severity.csv",
    "consensus": "consensus_image_edema_severity.csv",
}

#: Grade meaning, index = grade.
EDEMA_GRADES: tuple[str, ...] = (
    "no edema",
    "vascular congestion",
    "interstitial edema",
    "alveolar edema",
)

#: One-hot label names used in :attr:`Study.labels` (index = grade).
EDEMA_LABELS: tuple[str, ...] = (
    "edema_none",
    "edema_vascular_congestion",
    "edema_interstitial",
    "edema_alveolar",
)


def load_edema(root: str | Path, source: EdemaSource = "regex") -> pd.DataFrame:
    """Read one edema grade file.

    Args:
        root: folder holding the grade CSVs (or the CSV file itself).
        source: ``regex``, ``expert`` (study-level) or ``consensus`` (image-level).

    Returns:
        DataFrame with ``subject_id``, ``study_id`` (int64), ``dicom_id`` (consensus only) and
        ``edema_severity`` (int64 in 0..3); duplicates keep their first row.

    Raises:
        MetadataError: missing file or columns, or a grade outside 0..3.
    """
    if source not in EDEMA_FILES:
        raise ValueError(f"edema source must be one of {', '.join(EDEMA_FILES)}")
    root = Path(root)
    path = root if root.is_file() else find_file(root, [EDEMA_FILES[source]], what="edema grades")
    columns = ["subject_id", "study_id", "edema_severity"]
    if source == "consensus":
        columns.insert(2, "dicom_id")
    frame = read_table(path, columns)[columns].copy()
    frame["subject_id"] = to_int_ids(frame["subject_id"], path, "subject_id")
    frame["study_id"] = to_int_ids(frame["study_id"], path, "study_id")
    grade = pd.to_numeric(frame["edema_severity"], errors="coerce")
    bad = grade.isna() | ~grade.isin([0, 1, 2, 3])
    if bool(bad.any()):
        raise MetadataError(
            path, f"column 'edema_severity': {int(bad.sum())} value(s) not an integer grade 0-3"
        )
    frame["edema_severity"] = grade.to_numpy(dtype=np.float64).astype(np.int64)
    key = "dicom_id" if source == "consensus" else "study_id"
    if source == "consensus":
        if frame["dicom_id"].isna().any():
            raise MetadataError(path, "blank dicom_id value(s)")
        frame["dicom_id"] = frame["dicom_id"].astype(str).str.strip()
    n_dup = int(frame[key].duplicated().sum())
    if n_dup:
        logger.warning("%s: %d duplicate %s row(s) ignored", path.name, n_dup, key)
        frame = frame.drop_duplicates(key, keep="first")
    return frame.reset_index(drop=True)


def edema_studies(
    grades: pd.DataFrame,
    cxr: MimicCxrIndex,
    *,
    with_reports: bool = False,
    phi_token: str = "",
) -> list[Study]:
    """Studies with edema grades: X-ray path, optional report, one-hot grade labels.

    Args:
        grades: output of :func:`load_edema`.
        cxr: MIMIC-CXR index providing images, splits and report paths.
        with_reports: read the report text (FINDINGS + IMPRESSION).
        phi_token: replacement for ``___`` in reports.

    Returns:
        one :class:`Study` per grade row found in the index; ``labels`` has the
        :data:`EDEMA_LABELS` one-hot, ``extra["edema_severity"]`` the integer grade.
    """
    study_cols = ["study_id", "split", "study_time", "report_path", "image_path", "dicom_id"]
    table = grades.copy()
    if "dicom_id" in grades.columns:
        image_cols = cxr.images[["dicom_id", "image_path"]]
        table = table.merge(image_cols, on="dicom_id", how="left")
        table = table.merge(
            cxr.studies[study_cols[:4]], on="study_id", how="left", suffixes=("", "_study")
        )
        image_level = True
    else:
        table = table.merge(cxr.studies[study_cols], on="study_id", how="left")
        image_level = False
    found = table["image_path"].notna() & table["split"].notna()
    n_lost = int((~found).sum())
    if n_lost:
        logger.warning("edema: %d graded row(s) have no image in the MIMIC-CXR index", n_lost)
    out: list[Study] = []
    for row in table[found.to_numpy()].to_dict("records"):
        grade = int(row["edema_severity"])
        study_id = int(row["study_id"])
        report = None
        if with_reports:
            report = read_cxr_report(str(row["report_path"]), phi_token=phi_token)
        out.append(
            Study(
                study_id=str(row["dicom_id"]) if image_level else str(study_id),
                subject_id=str(int(row["subject_id"])),
                xray_path=Path(str(row["image_path"])),
                report=report,
                labels={name: float(i == grade) for i, name in enumerate(EDEMA_LABELS)},
                split=str(row["split"]),
                dataset="mimic-cxr-edema",
                xray_time=to_datetime64(row["study_time"]),
                extra={
                    "edema_severity": grade,
                    "cxr_study_id": study_id,
                    "dicom_id": str(row["dicom_id"]),
                },
            )
        )
    return out
