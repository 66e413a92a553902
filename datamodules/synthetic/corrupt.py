"""Deliberately broken or unusual files for reader error-path tests (``OUT/corrupt/``).

``README.txt`` lists every file; ``corrupt.json`` gives the same list machine-readably
(``file -> {"problem", "expect"}``, where ``expect`` is the behaviour the readers are meant to
show: a documented error class or a tolerated quirk).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from datamodules.synthetic._io import write_csv, write_text, write_wfdb
from datamodules.synthetic.cxr_sim import render_cxr, sample_anatomy
from datamodules.synthetic.ecg_sim import sample_ecg_params, simulate_ecg
from datamodules.synthetic.mimic_ecg import MIMIC_LEADS
from datamodules.synthetic.population import FINDING_LABELS, CxrFindings, stream_rng

__all__ = ["CORRUPT_FILES", "write_corrupt"]

#: file -> (problem, expected reader behaviour)
CORRUPT_FILES: dict[str, tuple[str, str]] = {
    "truncated.hea": (
        "WFDB record whose .dat was cut mid-frame (7,777 of 120,000 bytes)",
        "EcgReadError",
    ),
    "mismatch.hea": (
        "header says 5000 samples but the .dat holds 4000 complete frames",
        "EcgReadError",
    ),
    "unknown_leads.hea": ("12 leads named CH1..CH12 (no known lead name)", "EcgReadError"),
    "two_lead.hea": (
        "2-lead record (II, V5), 500 Hz, 10 s",
        "read: 10 NaN rows, lead_mask True only for II and V5",
    ),
    "nan_leads.hea": (
        "12-lead record with V2, V3 and aVL entirely invalid (-32768 = NaN)",
        "read: those rows NaN with lead_mask False",
    ),
    "corrupt.dcm": ("DICOM truncated inside the pixel data", "CxrReadError"),
    "garbage.dcm": ("random bytes with a .dcm suffix (no DICM preamble)", "CxrReadError"),
    "rgb.jpg": ("3-channel RGB JPEG of a chest X-ray", "read: converted to one channel"),
    "sixteen_bit.png": (
        "16-bit grayscale PNG of a chest X-ray",
        "read: scaled by 65535 to [0, 1]",
    ),
    "empty_report.txt": ("report file with only whitespace", "ReportError"),
    "record_list_missing_columns.csv": (
        "MIMIC-IV-ECG record_list.csv without file_name and path",
        "MetadataError",
    ),
    "ptbxl_database_missing_columns.csv": (
        "PTB-XL database without scp_codes and filename_hr",
        "MetadataError",
    ),
}


def _ecg(seed: int, key: int) -> np.ndarray:
    rng = stream_rng(seed, "corrupt-ecg", key)
    ecg = simulate_ecg(sample_ecg_params(("NORM",), rng), rng)
    return ecg.signal  # (12, 5000), canonical order


def write_corrupt(root: Path, seed: int) -> None:
    """Write every file of :data:`CORRUPT_FILES` under ``root``."""
    canon = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    to_mimic = [canon.index(n) for n in MIMIC_LEADS]
    sig = _ecg(seed, 0)[to_mimic].T  # (5000, 12)
    write_wfdb(root / "truncated", sig, MIMIC_LEADS, fs_hz=500, gain=200.0)
    raw = (root / "truncated.dat").read_bytes()
    (root / "truncated.dat").write_bytes(raw[:7777])
    write_wfdb(root / "mismatch", sig[:4000], MIMIC_LEADS, fs_hz=500, gain=200.0)
    hea = (root / "mismatch.hea").read_text(encoding="utf-8")
    (root / "mismatch.hea").write_text(
        hea.replace("mismatch 12 500 4000", "mismatch 12 500 5000", 1), encoding="utf-8"
    )
    write_wfdb(root / "unknown_leads", sig, [f"CH{k}" for k in range(1, 13)], fs_hz=500, gain=200.0)
    two = _ecg(seed, 1)
    write_wfdb(root / "two_lead", two[[1, 10]].T, ["II", "V5"], fs_hz=500, gain=200.0)
    nan = _ecg(seed, 2)[to_mimic].T.copy()
    for name in ("V2", "V3", "aVL"):
        nan[:, MIMIC_LEADS.index(name)] = np.nan
    write_wfdb(root / "nan_leads", nan, MIMIC_LEADS, fs_hz=500, gain=200.0)
    # images
    rng = stream_rng(seed, "corrupt-image")
    findings = CxrFindings(states=dict.fromkeys(FINDING_LABELS))
    img = render_cxr(findings, sample_anatomy("M", rng), "PA", (128, 106), rng)
    gray8 = np.round(img * 255).astype(np.uint8)
    rgb = np.stack([gray8, gray8, np.clip(gray8.astype(int) + 12, 0, 255).astype(np.uint8)], -1)
    Image.fromarray(rgb, mode="RGB").save(root / "rgb.jpg", quality=95)
    Image.fromarray(np.round(img * 65535).astype(np.uint16)).save(root / "sixteen_bit.png")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1.1")
    meta.MediaStorageSOPInstanceUID = UID("2.25.1")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = "2.25.1"
    ds.Modality = "DX"
    ds.PatientName = "SYNTHETIC^FAKE PATIENT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = img.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.round(img * 4095).astype(np.uint16).tobytes()
    ds.save_as(root / "corrupt.dcm", enforce_file_format=True)
    full = (root / "corrupt.dcm").read_bytes()
    (root / "corrupt.dcm").write_bytes(full[: int(len(full) * 0.4)])
    (root / "garbage.dcm").write_bytes(stream_rng(seed, "garbage").bytes(4096))
    write_text(root / "empty_report.txt", " \n \n")
    write_csv(
        root / "record_list_missing_columns.csv",
        ("subject_id", "study_id", "ecg_time"),
        [[10000001, 40000001, "2180-07-23 08:44:00"]],
    )
    write_csv(
        root / "ptbxl_database_missing_columns.csv",
        ("ecg_id", "patient_id", "age", "sex", "strat_fold", "filename_lr"),
        [[1, 15709.0, 56.0, 1, 3, "records100/00000/00001_lr"]],
    )
    lines = ["SYNTHETIC DATA - not real patients. Broken / unusual files for reader tests.", ""]
    for name, (problem, expect) in CORRUPT_FILES.items():
        lines.append(f"{name}: {problem}. Expected: {expect}.")
    write_text(root / "README.txt", "\n".join(lines) + "\n")
    manifest = {k: {"problem": p, "expect": e} for k, (p, e) in CORRUPT_FILES.items()}
    write_text(root / "corrupt.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
