"""Synthetic MIMIC-CXR 2.0.0 (DICOM + reports) and MIMIC-CXR-JPG 2.1.0 (DATASETS.md §3).

``mimic-cxr/``: ``files/pXX/pSUBJECT/sSTUDY/<dicom_id>.dcm`` (DX for-presentation, 16/12 bits,
MONOCHROME1 and MONOCHROME2, window centre/width, some with a VOI LUT sequence, realistic code
sequences, obviously fake PHI tags), the report ``files/pXX/pSUBJECT/sSTUDY.txt`` beside the
study folder, ``cxr-record-list.csv.gz`` / ``cxr-study-list.csv.gz`` and the label / metadata /
split CSVs.
``mimic-cxr-jpg/``: the same tree of single-channel 8-bit JPGs (min-max normalised,
MONOCHROME1 inverted, histogram equalised, quality 95, original resolution), the gzipped
metadata / chexpert / negbio / split CSVs, ``mimic-cxr-2.1.0-test-set-labeled.csv`` and
``IMAGE_FILENAMES``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from datamodules.synthetic._io import write_csv, write_text
from datamodules.synthetic._render import Tick, patient_anatomy
from datamodules.synthetic.cxr_sim import render_cxr
from datamodules.synthetic.plan import CxrImagePlan, CxrStudyPlan
from datamodules.synthetic.population import XRAY_LABELS, SyntheticPatient, stream_rng
from datamodules.synthetic.reports import cxr_report

__all__ = [
    "FAKE_PHI",
    "LABEL_COLUMNS",
    "METADATA_COLUMNS",
    "SPLIT_COLUMNS",
    "cxr_study_dir",
    "equalize_hist",
    "write_mimic_cxr",
]

#: SOP class of Digital X-Ray Image Storage - For Presentation.
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"

#: Fake identifying values written into every DICOM (readers must never surface them).
FAKE_PHI: dict[str, str] = {
    "PatientName": "SYNTHETIC^FAKE PATIENT",
    "PatientID": "FAKE-<subject_id>",
    "PatientBirthDate": "<study year - age>0101",
    "InstitutionName": "FAKE SYNTHETIC GENERAL HOSPITAL",
    "InstitutionAddress": "1 Nowhere Lane, Fakeville",
    "ReferringPhysicianName": "FAKE^REFERRER",
    "OperatorsName": "FAKE^TECHNOLOGIST",
    "AccessionNumber": "FAKE<study_id>",
    "StudyDate": "<shifted YYYYMMDD in the 2100s>",
}

METADATA_COLUMNS: tuple[str, ...] = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
    "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning",
)  # fmt: skip
SPLIT_COLUMNS: tuple[str, ...] = ("dicom_id", "study_id", "subject_id", "split")
LABEL_COLUMNS: tuple[str, ...] = ("subject_id", "study_id", *XRAY_LABELS)

_VIEW_CODE = {
    "PA": ("R-10214", "postero-anterior"),
    "AP": ("R-10206", "antero-posterior"),
    "LATERAL": ("R-10232", "lateral"),
    "LL": ("R-10236", "left lateral"),
}
_ORIENTATION_CODE = {"Erect": "F-10440", "Recumbent": "F-10450"}
_DEID_METHODS = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113105", "Clean Descriptors Option"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113101", "Clean Pixel Data Option"),
    ("113103", "Clean Graphics Option"),
)


def cxr_study_dir(subject_id: int, study_id: int) -> str:
    """``files/p10/p10000032/s50414267`` relative to the dataset root."""
    sid = f"p{subject_id:08d}"
    return f"files/{sid[:3]}/{sid}/s{study_id}"


def equalize_hist(img: np.ndarray) -> np.ndarray:
    """OpenCV-style histogram equalisation of a uint8 image."""
    hist = np.bincount(img.ravel(), minlength=256)
    cdf = np.cumsum(hist)
    nz = cdf[hist > 0]
    cdf_min = int(nz[0]) if nz.size else 0
    total = int(cdf[-1])
    if total == cdf_min:
        return img.copy()
    lut = np.clip(np.round((cdf - cdf_min) * 255.0 / (total - cdf_min)), 0, 255).astype(np.uint8)
    return lut[img]


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _dicom(
    pixels: np.ndarray,
    im: CxrImagePlan,
    study: CxrStudyPlan,
    patient: SyntheticPatient,
    number: int,
    rng: np.random.Generator,
) -> Dataset:
    """DICOM dataset with 12-bit stored pixels (``pixels`` in [0, 1], bright = dense)."""
    lo = int(rng.integers(0, 300))
    hi = int(rng.integers(3700, 4096))
    stored = np.round(lo + pixels.astype(np.float64) * (hi - lo)).astype(np.uint16)
    if im.monochrome1:
        stored = (4095 - stored).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(DX_PRESENTATION)
    meta.MediaStorageSOPInstanceUID = UID(im.sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    date = f"{study.time:%Y%m%d}"
    time = f"{study.time:%H%M%S}.{study.time.microsecond // 1000:03d}"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.SOPClassUID = DX_PRESENTATION
    ds.SOPInstanceUID = im.sop_uid
    ds.StudyDate = date
    ds.SeriesDate = date
    ds.AcquisitionDate = date
    ds.ContentDate = date
    ds.StudyTime = time
    ds.SeriesTime = time
    ds.AccessionNumber = f"FAKE{study.study_id}"
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "SYNTHETIC"
    ds.InstitutionName = FAKE_PHI["InstitutionName"]
    ds.InstitutionAddress = FAKE_PHI["InstitutionAddress"]
    ds.ReferringPhysicianName = FAKE_PHI["ReferringPhysicianName"]
    ds.OperatorsName = FAKE_PHI["OperatorsName"]
    ds.StudyDescription = study.procedure
    ds.SeriesDescription = study.procedure
    ds.PerformedProcedureStepDescription = study.procedure
    ds.ProcedureCodeSequence = DicomSequence([_code_item("CXR", "SYNTH", study.procedure)])
    ds.PatientName = FAKE_PHI["PatientName"]
    ds.PatientID = f"FAKE-{patient.subject_id}"
    ds.PatientBirthDate = f"{study.time.year - patient.age}0101"
    ds.PatientSex = patient.sex
    ds.PatientAge = f"{min(patient.age, 89):03d}Y"
    ds.PatientIdentityRemoved = "NO"
    ds.DeidentificationMethod = "SYNTHETIC DATA - not real patients"
    ds.DeidentificationMethodCodeSequence = DicomSequence(
        [_code_item(v, "DCM", m) for v, m in _DEID_METHODS]
    )
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = im.view_position
    code, meaning = _VIEW_CODE[im.view_position]
    ds.ViewCodeSequence = DicomSequence([_code_item(code, "SRT", meaning)])
    if study.orientation:
        ds.PatientOrientationCodeSequence = DicomSequence(
            [_code_item(_ORIENTATION_CODE[study.orientation], "SRT", study.orientation)]
        )
    ds.AnatomicRegionSequence = DicomSequence([_code_item("T-D3000", "SRT", "Chest")])
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = im.series_uid
    ds.StudyID = str(study.study_id)
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.PatientOrientation = ["A", "F"] if im.view == "LATERAL" else ["L", "F"]
    spacing = round(0.139 * 3056 / im.rows, 4)
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.PixelSpacing = [spacing, spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if im.monochrome1 else "MONOCHROME2"
    ds.Rows = im.rows
    ds.Columns = im.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.WindowCenter = (lo + hi) // 2
    ds.WindowWidth = hi - lo
    if im.voi_lut:  # a mild sigmoid VOI LUT over the stored range
        x = np.arange(4096, dtype=np.float64)
        lut = 4095.0 / (1.0 + np.exp(-(x - (lo + hi) / 2) / ((hi - lo) / 6)))
        item = Dataset()
        item.LUTDescriptor = [4096, 0, 12]
        item.LUTExplanation = "SYNTHETIC SIGMOID"
        item.add(DataElement(0x00283006, "OW", np.round(lut).astype("<u2").tobytes()))
        ds.VOILUTSequence = DicomSequence([item])
    ds.LossyImageCompression = "00"
    ds.PixelData = stored.tobytes()
    return ds


def _jpg_pixels(stored_unit: np.ndarray) -> np.ndarray:
    """MIMIC-CXR-JPG conversion of an image already MONOCHROME2-oriented (float)."""
    lo, hi = float(stored_unit.min()), float(stored_unit.max())
    scaled = (stored_unit - lo) / max(hi - lo, 1e-9)
    return equalize_hist(np.round(scaled * 255.0).astype(np.uint8))


def write_mimic_cxr(
    dicom_root: Path,
    jpg_root: Path,
    patients: list[SyntheticPatient],
    studies: tuple[CxrStudyPlan, ...],
    seed: int,
    tick: Tick,
) -> None:
    """Write both MIMIC-CXR trees."""
    by_index = {p.index: p for p in patients}
    record_rows: list[list[object]] = []
    study_rows: list[list[object]] = []
    meta_rows: list[list[object]] = []
    split_rows: list[list[object]] = []
    label_rows: list[list[object]] = []
    test_rows: list[list[object]] = []
    jpg_names: list[str] = []
    for study in studies:
        p = by_index[study.patient]
        anatomy = patient_anatomy(p, seed)
        rel = cxr_study_dir(study.subject_id, study.study_id)
        for k, im in enumerate(study.images):
            rng = stream_rng(seed, "mimic-cxr-image", study.study_id, k)
            img = render_cxr(p.cxr, anatomy, im.view, (im.rows, im.columns), rng)
            ds = _dicom(img, im, study, p, k + 1, rng)
            dcm_path = dicom_root / rel / f"{im.dicom_id}.dcm"
            dcm_path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(dcm_path, enforce_file_format=True)
            stored = np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(im.rows, im.columns)
            oriented = stored.astype(np.float64)
            if im.monochrome1:
                oriented = 4095.0 - oriented
            jpg_path = jpg_root / rel / f"{im.dicom_id}.jpg"
            jpg_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_jpg_pixels(oriented), mode="L").save(jpg_path, quality=95)
            jpg_names.append(f"{rel}/{im.dicom_id}.jpg")
            record_rows.append(
                [study.subject_id, study.study_id, im.dicom_id, f"{rel}/{im.dicom_id}.dcm"]
            )
            view_meaning = _VIEW_CODE[im.view_position][1]
            meta_rows.append([
                im.dicom_id, study.subject_id, study.study_id, study.procedure,
                im.view_position, im.rows, im.columns, int(f"{study.time:%Y%m%d}"),
                float(f"{study.time:%H%M%S}.{study.time.microsecond // 1000:03d}"),
                study.procedure, view_meaning, study.orientation or None,
            ])  # fmt: skip
            split_rows.append([im.dicom_id, study.study_id, study.subject_id, p.split])
            tick(1)
        rng = stream_rng(seed, "mimic-cxr-report", study.study_id)
        views = {im.view for im in study.images}
        technique = (
            "Single portable AP view of the chest."
            if views == {"AP"}
            else "Lateral view of the chest."
            if views == {"LATERAL"}
            else "Chest PA and lateral."
            if "LATERAL" in views
            else "Single PA view of the chest."
        )
        report = cxr_report(
            p, examination=study.procedure, technique=technique, rng=rng, style=study.report_style
        )
        write_text(dicom_root / f"{rel}.txt", report)
        study_rows.append([study.subject_id, study.study_id, f"{rel}.txt"])
        if study.report_style != "no_sections":
            row = p.cxr.row() if study.report_style != "empty_labels" else {}
            label_rows.append(
                [study.subject_id, study.study_id, *[row.get(lbl) for lbl in XRAY_LABELS]]
            )
            if p.split == "test":
                test_rows.append([study.study_id, *[row.get(lbl) for lbl in XRAY_LABELS]])
    label_rows.sort(key=lambda r: (int(r[0]), int(r[1])))  # type: ignore[call-overload]
    for root in (dicom_root, jpg_root):
        write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", METADATA_COLUMNS, meta_rows, gz=True)
        write_csv(root / "mimic-cxr-2.0.0-split.csv.gz", SPLIT_COLUMNS, split_rows, gz=True)
        write_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", LABEL_COLUMNS, label_rows, gz=True)
        write_csv(root / "mimic-cxr-2.0.0-negbio.csv.gz", LABEL_COLUMNS, label_rows, gz=True)
    write_csv(
        dicom_root / "cxr-record-list.csv.gz",
        ("subject_id", "study_id", "dicom_id", "path"),
        record_rows,
        gz=True,
    )
    write_csv(
        dicom_root / "cxr-study-list.csv.gz",
        ("subject_id", "study_id", "path"),
        study_rows,
        gz=True,
    )
    write_csv(
        jpg_root / "mimic-cxr-2.1.0-test-set-labeled.csv", ("study_id", *XRAY_LABELS), test_rows
    )
    write_text(jpg_root / "IMAGE_FILENAMES", "\n".join(jpg_names) + "\n")
