"""Tiny MIMIC-CXR / MIMIC-IV-ECG / CheXpert / edema fixture writers in the distributed formats.

Not a test module (no ``test_`` prefix); test files load it with :func:`load_helper`. Images and
waveforms are not written: the readers' indexes hold paths only.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd

REPORT_FULL = (
    "\n".join(
        [
            "                                 FINAL REPORT",
            " EXAMINATION:  CHEST (PA AND LAT)",
            " ",
            " INDICATION:  ___ year old man with cough  // ?pneumonia",
            " ",
            " TECHNIQUE:  Chest PA and lateral",
            " ",
            " COMPARISON:  ___",
            " ",
            " FINDINGS: ",
            " ",
            " Heart size is normal.  No focal consolidation, effusion or pneumothorax.",
            " Dr. ___ was notified.",
            " ",
            " IMPRESSION: ",
            " ",
            " No acute cardiopulmonary process.",
        ]
    )
    + "\n"
)

REPORT_FINDINGS_ONLY = (
    "\n".join(
        [
            "                                 FINAL REPORT",
            " EXAMINATION:  CHEST (PORTABLE AP)",
            " ",
            " FINDINGS: ",
            " ",
            " Mild pulmonary edema. Small left pleural effusion.",
        ]
    )
    + "\n"
)

REPORT_NEITHER = (
    "\n".join(
        [
            "                                 FINAL REPORT",
            " EXAMINATION:  CHEST (PA AND LAT)",
            " ",
            " INDICATION:  Cough.",
            " ",
            " Lungs are clear. No pneumothorax.",
        ]
    )
    + "\n"
)

# subject, study, [(dicom_id, view, StudyDate, StudyTime)], split, labels row or None, report
CXR_STUDIES: list[
    tuple[int, int, list[tuple[str, str, int, float]], str, dict | None, str | None]
] = [
    (
        10000032,
        50414267,
        [
            ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "AP", 21800723, 80556.875),
            ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "PA", 21800723, 80556.875),
            ("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "LATERAL", 21800723, 80556.875),
        ],
        "train",
        {"Edema": 1.0, "Cardiomegaly": -1.0, "No Finding": None, "Pleural Effusion": 0.0},
        REPORT_FULL,
    ),
    (
        10000032,
        53911762,
        [("68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", "AP", 21800806, 213014.531)],
        "train",
        {"No Finding": 1.0},
        REPORT_FINDINGS_ONLY,
    ),
    (
        10000764,
        57375967,
        [("096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "LATERAL", 21321014, 75000.0)],
        "validate",
        {},  # an all-empty label row
        REPORT_NEITHER,
    ),
    (
        10000898,
        50771383,
        [("e5f3a8b2-1d1f5c2a-0b0e3d8f-5a6c7b8d-9e0f1a2b", "PA", 21420304, 120000.0)],
        "test",
        None,  # no label row at all
        None,  # report file missing
    ),
]

XRAY_LABELS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)


def write_gz_csv(path: Path, frame: pd.DataFrame) -> Path:
    """Write ``frame`` as a gzip-compressed CSV (no index)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        frame.to_csv(handle, index=False)
    return path


def write_mimic_cxr(root: Path, studies: list | None = None) -> tuple[Path, Path]:
    """Write a DICOM release (``root/mimic-cxr``) and a JPG release (``root/mimic-cxr-jpg``).

    Returns:
        (dicom_root, jpg_root)
    """
    studies = CXR_STUDIES if studies is None else studies
    dcm, jpg = root / "mimic-cxr", root / "mimic-cxr-jpg"
    rec, study_list, meta, split, labels = [], [], [], [], []
    for subject, study, images, sp, lab, report in studies:
        group = f"files/p{str(subject)[:2]}/p{subject}"
        study_list.append(
            {"subject_id": subject, "study_id": study, "path": f"{group}/s{study}.txt"}
        )
        if report is not None:
            target = dcm / group / f"s{study}.txt"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(report, encoding="utf-8")
        for dicom_id, view, date, time in images:
            rec.append(
                {
                    "subject_id": subject,
                    "study_id": study,
                    "dicom_id": dicom_id,
                    "path": f"{group}/s{study}/{dicom_id}.dcm",
                }
            )
            meta.append(
                {
                    "dicom_id": dicom_id,
                    "subject_id": subject,
                    "study_id": study,
                    "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
                    "ViewPosition": view,
                    "Rows": 3056,
                    "Columns": 2544,
                    "StudyDate": date,
                    "StudyTime": time,
                    "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
                    "ViewCodeSequence_CodeMeaning": "postero-anterior",
                    "PatientOrientationCodeSequence_CodeMeaning": "Erect",
                }
            )
            split.append(
                {"dicom_id": dicom_id, "study_id": study, "subject_id": subject, "split": sp}
            )
        if lab is not None:
            row: dict = {"subject_id": subject, "study_id": study}
            for name in sorted(XRAY_LABELS):  # alphabetical, as distributed
                row[name] = lab.get(name)
            labels.append(row)
    write_gz_csv(dcm / "cxr-record-list.csv.gz", pd.DataFrame(rec))
    write_gz_csv(dcm / "cxr-study-list.csv.gz", pd.DataFrame(study_list))
    write_gz_csv(jpg / "mimic-cxr-2.0.0-metadata.csv.gz", pd.DataFrame(meta))
    write_gz_csv(jpg / "mimic-cxr-2.0.0-split.csv.gz", pd.DataFrame(split))
    label_frame = pd.DataFrame(labels, columns=["subject_id", "study_id", *sorted(XRAY_LABELS)])
    write_gz_csv(jpg / "mimic-cxr-2.0.0-chexpert.csv.gz", label_frame)
    return dcm, jpg


# subject, study, ecg_time, statements
ECG_RECORDS: list[tuple[int, int, str, list[str]]] = [
    (10000032, 40689238, "2180-07-23 08:44:00", ["Sinus rhythm", "Normal ECG"]),
    (10000032, 44458630, "2180-09-30 10:00:00", ["Atrial fibrillation", "***", "Abnormal ECG"]),
    (10000032, 41111111, "2180-08-05 09:00:00", ["Sinus bradycardia", "Otherwise normal ECG"]),
    (10000764, 45106466, "2132-10-14 07:20:00", ["Sinus rhythm", "Left bundle branch block"]),
    (10000900, 42222222, "2150-01-01 00:00:00", ["EKG"]),  # filler only -> no report
    (10000901, 43333333, "2150-02-01 00:00:00", []),  # no measurements row
]


def write_mimic_ecg(root: Path, records: list | None = None, n_report_cols: int = 18) -> Path:
    """Write ``root/mimic-iv-ecg`` with ``record_list.csv`` and ``machine_measurements.csv``."""
    records = ECG_RECORDS if records is None else records
    out = root / "mimic-iv-ecg"
    out.mkdir(parents=True, exist_ok=True)
    rec, mm = [], []
    for subject, study, time, statements in records:
        rec.append(
            {
                "subject_id": subject,
                "study_id": study,
                "file_name": study,
                "ecg_time": time,
                "path": f"files/p{str(subject)[:4]}/p{subject}/s{study}/{study}",
            }
        )
        if not statements:
            continue
        row: dict = {"subject_id": subject, "study_id": study, "cart_id": 6848, "ecg_time": time}
        for k in range(n_report_cols):
            row[f"report_{k}"] = statements[k] if k < len(statements) else None
        row.update(
            {
                "bandwidth": "0.005-150 Hz",
                "filtering": "60 Hz notch Baseline filter",
                "rr_interval": 659,
                "p_onset": 40,
                "p_end": 128,
                "qrs_onset": 170,
                "qrs_end": 258,
                "t_end": 518,
                "p_axis": 81,
                "qrs_axis": 77,
                "t_axis": 29999,  # sentinel
            }
        )
        mm.append(row)
    pd.DataFrame(rec).to_csv(out / "record_list.csv", index=False)
    pd.DataFrame(mm).to_csv(out / "machine_measurements.csv", index=False)
    return out


def write_chexpert(root: Path) -> Path:
    """Write ``root/CheXpert-v1.0-small`` with train.csv and valid.csv."""
    base = root / "CheXpert-v1.0-small"
    base.mkdir(parents=True, exist_ok=True)
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *XRAY_LABELS]

    def row(split: str, patient: int, study: int, view: str, labels: dict) -> dict:
        kind = "frontal" if view == "Frontal" else "lateral"
        out = {
            "Path": (
                f"CheXpert-v1.0-small/{split}/patient{patient:05d}/study{study}/view1_{kind}.jpg"
            ),
            "Sex": "Female",
            "Age": 68,
            "Frontal/Lateral": view,
            "AP/PA": "AP" if view == "Frontal" else None,
        }
        out.update({name: labels.get(name) for name in XRAY_LABELS})
        return out

    train = [
        row("train", 1, 1, "Frontal", {"Edema": 1.0, "Support Devices": 1.0}),
        row("train", 1, 1, "Lateral", {"Edema": 1.0}),
        row("train", 2, 1, "Frontal", {"Edema": 1.0, "Atelectasis": -1.0}),
        row("train", 3, 1, "Frontal", {"Cardiomegaly": 1.0, "No Finding": None}),
        row("train", 4, 2, "Frontal", {"Cardiomegaly": 1.0, "Edema": 0.0}),
        row("train", 5, 1, "Frontal", {"Pleural Effusion": 1.0, "Lung Opacity": 0.0}),
        row("train", 6, 1, "Frontal", {"No Finding": 1.0}),
    ]
    valid = [
        row("valid", 64541, 1, "Frontal", dict.fromkeys(XRAY_LABELS, 0.0) | {"Edema": 1.0}),
        row("valid", 64542, 1, "Frontal", dict.fromkeys(XRAY_LABELS, 0.0)),
    ]
    pd.DataFrame(train, columns=header).to_csv(base / "train.csv", index=False)
    pd.DataFrame(valid, columns=header).to_csv(base / "valid.csv", index=False)
    return base
