"""Synthetic pulmonary edema severity grades (DATASETS.md §5, ``mimic-cxr-pe-severity``).

Cohort: the heart-failure patients of the population. ``edema_severity`` is the grade the
painter used (0 none, 1 vascular congestion, 2 interstitial, 3 alveolar), consistent with the
report sentences (grade 1 = uncertain Edema, grades 2-3 = positive).
"""

from __future__ import annotations

from pathlib import Path

from datamodules.synthetic._io import write_csv
from datamodules.synthetic.plan import CxrStudyPlan
from datamodules.synthetic.population import SyntheticPatient, stream_rng

__all__ = ["write_edema"]


def write_edema(
    root: Path,
    patients: list[SyntheticPatient],
    studies: tuple[CxrStudyPlan, ...],
    seed: int,
) -> None:
    """Write the three grade files under ``root``."""
    rng = stream_rng(seed, "edema")
    by_index = {p.index: p for p in patients}
    regex: list[list[object]] = []
    expert: list[list[object]] = []
    consensus: list[list[object]] = []
    for study in studies:
        p = by_index[study.patient]
        if p.profile != "heart_failure" or study.report_style in ("no_sections", "empty_labels"):
            continue
        grade = p.cxr.edema_grade if p.cxr.states.get("Edema") is not None else 0
        regex.append([study.subject_id, study.study_id, grade])
        if rng.random() < 0.5:
            expert.append([study.subject_id, study.study_id, grade])
        frontal = [im for im in study.images if im.view != "LATERAL"]
        if frontal and rng.random() < 0.4:
            consensus.append([study.subject_id, study.study_id, frontal[0].dicom_id, grade])
    header = ("subject_id", "study_id", "edema_severity")
    write_csv(root / "regex_report_edema_severity.csv", header, regex)
    write_csv(root / "expert_report_edema_severity.csv", header, expert)
    write_csv(
        root / "consensus_image_edema_severity.csv",
        ("subject_id", "study_id", "dicom_id", "edema_severity"),
        consensus,
    )
