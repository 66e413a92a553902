"""Patient identifiers in a DICOM never reach medclip's outputs, logs or warnings.

DICOM X-rays and a DICOM ECG (a copy of pydicom's ``waveform_ecg.dcm``) carry fake identifiers
(name, id, birth date, study date, institution, referring physician, accession number), once
well-formed and once malformed (values that trip pydicom's validation, whose warnings quote
the value). Each goes through ``read_cxr`` / ``read_ecg``, ``inspect_file`` and
``medclip inspect`` with logging at DEBUG; the identifiers must appear in none of the returned
metadata, printed output, log records or warnings. A truncated copy checks the error path.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import config as dicom_config
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from datamodules.cxr_io import read_cxr
from datamodules.ecg_io import read_ecg
from datamodules.errors import MedclipDataError
from datamodules.inspect import inspect_file
from medclip.cli import main as cli_main

#: Fake identifiers written into the test files.
PHI: dict[str, str] = {
    "PatientName": "FUZZ^PHI^TEST",
    "PatientID": "PHI-123456",
    "PatientBirthDate": "19010203",
    "StudyDate": "20990417",
    "InstitutionName": "PHI General Hospital",
    "ReferringPhysicianName": "REFDOC^PHIPHYS",
    "AccessionNumber": "ACC-PHI-987",
}
#: Malformed variants: bad DA / DS, too many PN components, over-long LO, backslash in SH.
PHI_MALFORMED: dict[str, str] = {
    "PatientName": "FUZZ^PHI^TEST^X^Y^Z",
    "PatientID": "PHI-123456\\PHI-123456",
    "PatientBirthDate": "PHI19010203X",
    "StudyDate": "20990417PHI",
    "InstitutionName": "PHI General Hospital " * 4,
    "ReferringPhysicianName": "REFDOC^PHIPHYS^A^B^C^D",
    "AccessionNumber": "ACC-PHI-987\\ACC-PHI-987",
    "PatientWeight": "PHIWEIGHT7",  # not a number: patched into the saved bytes
}
_DS_PLACEHOLDER = "9876543210"
#: Substrings that must never be printed or logged (case-sensitive: tmp paths are lower case).
NEEDLES: tuple[str, ...] = (
    "FUZZ",
    "PHI-123456",
    "19010203",
    "1901-02-03",
    "20990417",
    "2099-04-17",
    "PHI General",
    "General Hospital",
    "REFDOC",
    "PHIPHYS",
    "ACC-PHI-987",
    "PHIWEIGHT",
)


def _with_identifiers(ds: Dataset, values: dict[str, str]) -> Dataset:
    old = dicom_config.settings.writing_validation_mode
    dicom_config.settings.writing_validation_mode = dicom_config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's complaints about the test's own values
            for keyword, value in values.items():
                if keyword == "PatientWeight":  # pydicom refuses a non-numeric DS: patch later
                    value = _DS_PLACEHOLDER
                setattr(ds, keyword, value)
    finally:
        dicom_config.settings.writing_validation_mode = old
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    old = dicom_config.settings.writing_validation_mode
    dicom_config.settings.writing_validation_mode = dicom_config.IGNORE
    try:
        ds.save_as(path)
    finally:
        dicom_config.settings.writing_validation_mode = old
    raw = path.read_bytes()
    if raw.count(_DS_PLACEHOLDER.encode()) == 1:
        raw = raw.replace(_DS_PLACEHOLDER.encode(), PHI_MALFORMED["PatientWeight"].encode())
        path.write_bytes(raw)
    assert b"FUZZ^PHI^TEST" in raw and b"ACC-PHI-987" in raw  # the file really carries them
    return path


def _cr_dataset() -> Dataset:
    """A small 12-bit MONOCHROME1 CR written from scratch."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.UID("1.2.840.10008.5.1.4.1.1.1")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.ViewPosition = "PA"
    ds.Rows, ds.Columns = 32, 24
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(0)
    ds.PixelData = rng.integers(0, 4096, size=(32, 24), dtype=np.uint16).tobytes()
    ds.preamble = b"\0" * 128
    return ds


def _testfile(name: str) -> Dataset:
    path = get_testdata_file(name)
    assert isinstance(path, str)
    return pydicom.dcmread(path)


@contextmanager
def watching(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """From here on: log everything at DEBUG and collect warning messages (the test files were
    written before, so pydicom's complaints while writing them are not counted)."""
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    for name in ("datamodules", "medclip", "pydicom", "PIL"):
        caplog.set_level(logging.DEBUG, logger=name)
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield messages
    messages.extend(str(w.message) for w in caught)


def _assert_clean(*texts: str) -> None:
    for text in texts:
        for needle in NEEDLES:
            assert needle not in text, f"identifier {needle!r} leaked: ...{text[:300]}..."


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join([caplog.text, *(r.getMessage() for r in caplog.records)])


def _run_cli(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = cli_main(["inspect", str(path)])
    out, err = capsys.readouterr()
    return code, out + err


# ---------------------------------------------------------------------------------------------
# X-ray


@pytest.mark.parametrize("values", [PHI, PHI_MALFORMED], ids=["well_formed", "malformed"])
@pytest.mark.parametrize("source", ["generated_cr", "CT_small.dcm"])
def test_cxr_dicom_identifiers_never_leak(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    values: dict[str, str],
    source: str,
) -> None:
    ds = _cr_dataset() if source == "generated_cr" else _testfile(source)
    path = _save(_with_identifiers(ds, values), tmp_path / "image.dcm")
    with watching(caplog) as warned:
        cxr = read_cxr(path)
        info = inspect_file(path)
        code, printed = _run_cli(path, capsys)
    assert cxr.pixels.ndim == 2 and info["modality"] == "xray"
    assert code == 0 and json.loads(printed.strip().splitlines()[-1])["modality"] == "xray"
    _assert_clean(json.dumps(cxr.meta, default=str), json.dumps(info), printed, _logged(caplog))
    _assert_clean(*warned)


def test_cxr_error_path_does_not_leak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A truncated file with identifiers: the error message and logs stay clean too."""
    full = _save(_with_identifiers(_cr_dataset(), PHI), tmp_path / "full.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(full[: len(full) - 300])
    with watching(caplog) as warned:
        with pytest.raises(MedclipDataError) as info:
            read_cxr(path)
        code, printed = _run_cli(path, capsys)
    assert code == 1 and "error" in json.loads(printed.strip().splitlines()[-1])
    _assert_clean(str(info.value), printed, _logged(caplog))
    _assert_clean(*warned)


# ---------------------------------------------------------------------------------------------
# ECG


@pytest.mark.parametrize("values", [PHI, PHI_MALFORMED], ids=["well_formed", "malformed"])
def test_ecg_dicom_identifiers_never_leak(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    values: dict[str, str],
) -> None:
    path = _save(_with_identifiers(_testfile("waveform_ecg.dcm"), values), tmp_path / "ecg.dcm")
    with watching(caplog) as warned:
        ecg = read_ecg(path)
        info = inspect_file(path)
        code, printed = _run_cli(path, capsys)
    assert ecg.signal.shape[0] == 12 and ecg.lead_mask.all() and info["modality"] == "ecg"
    assert code == 0 and json.loads(printed.strip().splitlines()[-1])["modality"] == "ecg"
    _assert_clean(json.dumps(ecg.meta, default=str), json.dumps(info), printed, _logged(caplog))
    _assert_clean(*warned)


def test_ecg_error_path_does_not_leak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    ds = _with_identifiers(_testfile("waveform_ecg.dcm"), PHI)
    ds.WaveformSequence[0].NumberOfWaveformChannels = 0  # inconsistent -> EcgReadError
    path = _save(ds, tmp_path / "bad_ecg.dcm")
    with watching(caplog) as warned:
        with pytest.raises(MedclipDataError) as info:
            read_ecg(path)
        code, printed = _run_cli(path, capsys)
    assert code == 1 and "error" in json.loads(printed.strip().splitlines()[-1])
    _assert_clean(str(info.value), printed, _logged(caplog))
    _assert_clean(*warned)
