"""Broken inputs: each raises EcgReadError / CxrReadError naming the file and the problem, or is
repaired in a documented way. Fixtures are written in tmp_path (never real patient data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import wfdb
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from datamodules.cxr_io import read_cxr
from datamodules.ecg_io import read_ecg
from datamodules.errors import CxrReadError, EcgReadError, MedclipDataError
from datamodules.types import CANONICAL_LEADS


def _testfile(name: str) -> str:
    """Path of a pydicom / pydicom-data test file (installed offline)."""
    path = get_testdata_file(name)
    assert isinstance(path, str), name
    return path


def _write(folder: Path, name: str, sig_names: list[str], n: int = 500, fs: int = 500) -> Path:
    rng = np.random.default_rng(0)
    sig = np.cumsum(rng.normal(0, 0.02, size=(n, len(sig_names))), axis=0)
    k = len(sig_names)
    wfdb.wrsamp(
        name,
        fs=fs,
        sig_name=sig_names,
        p_signal=sig,
        units=["mV"] * k,
        fmt=["16"] * k,
        adc_gain=[1000.0] * k,
        baseline=[0] * k,
        write_dir=str(folder),
    )
    return folder / name


def _raises(kind: type[MedclipDataError], path: Path | str, *words: str) -> MedclipDataError:
    """Call the reader, check the error type, that it names the file and states the problem."""
    reader = read_ecg if kind is EcgReadError else read_cxr
    with pytest.raises(kind) as info:
        reader(path)
    msg = str(info.value)
    assert Path(str(info.value.path)).name.split(".")[0] in msg
    for word in words:
        assert word in msg.lower(), msg
    assert info.value.__cause__ is None  # library exceptions are wrapped, not chained
    return info.value


@pytest.fixture()
def record(tmp_path: Path) -> Path:
    return _write(tmp_path, "rec", list(CANONICAL_LEADS))


# ---------------------------------------------------------------------------------------------
# ECG


def test_truncated_dat(record: Path) -> None:
    dat = Path(f"{record}.dat")
    dat.write_bytes(dat.read_bytes()[: dat.stat().st_size // 2])
    err = _raises(EcgReadError, record, "truncated", "rec.dat")
    assert "500 samples" in str(err)


def test_header_sample_count_disagrees_with_dat(record: Path) -> None:
    hea = Path(f"{record}.hea")
    hea.write_text(hea.read_text().replace("rec 12 500 500", "rec 12 500 300", 1))
    _raises(EcgReadError, record, "says 300 samples", "disagree")
    hea.write_text(hea.read_text().replace("rec 12 500 300", "rec 12 500 900", 1))
    _raises(EcgReadError, record, "truncated")


def test_missing_dat_next_to_hea(record: Path) -> None:
    Path(f"{record}.dat").unlink()
    _raises(EcgReadError, record, "missing")


def test_dat_without_header(record: Path) -> None:
    Path(f"{record}.hea").unlink()
    _raises(EcgReadError, f"{record}.dat", "no wfdb header")
    _raises(EcgReadError, record, "no such ecg record")


def test_unknown_lead_names(tmp_path: Path) -> None:
    stem = _write(tmp_path, "odd", ["foo", "bar", "Pleth"])
    _raises(EcgReadError, stem, "no recognisable 12-lead names", "foo")


def test_two_lead_record_is_repaired_with_mask(tmp_path: Path) -> None:
    stem = _write(tmp_path, "two", ["II", "V5"])
    ecg = read_ecg(stem)
    assert ecg.signal.shape == (12, 500)
    assert ecg.lead_mask.tolist() == [lead in ("II", "V5") for lead in CANONICAL_LEADS]
    assert np.isnan(ecg.signal[~ecg.lead_mask]).all()
    assert np.isfinite(ecg.signal[ecg.lead_mask]).all()
    assert any("missing leads" in r for r in ecg.meta["repairs"])
    with pytest.raises(EcgReadError, match="fewer than min_leads=3"):
        read_ecg(stem, min_leads=3)


def test_nan_filled_lead_is_masked(tmp_path: Path) -> None:
    sig = np.cumsum(np.random.default_rng(1).normal(0, 0.02, size=(400, 12)), axis=0)
    sig[:, 4] = np.nan  # stored as the WFDB invalid code -32768
    wfdb.wrsamp(
        "nanrec",
        fs=500,
        sig_name=list(CANONICAL_LEADS),
        p_signal=sig,
        units=["mV"] * 12,
        fmt=["16"] * 12,
        adc_gain=[1000.0] * 12,
        baseline=[0] * 12,
        write_dir=str(tmp_path),
    )
    ecg = read_ecg(tmp_path / "nanrec")
    assert not ecg.lead_mask[4] and ecg.lead_mask.sum() == 11
    assert np.isnan(ecg.signal[4]).all()
    assert any("no valid samples" in r for r in ecg.meta["repairs"])


@pytest.mark.parametrize("fs", ["0", "-500", "10"])
def test_implausible_sampling_rate(record: Path, fs: str) -> None:
    hea = Path(f"{record}.hea")
    hea.write_text(hea.read_text().replace("rec 12 500 500", f"rec 12 {fs} 500", 1))
    _raises(EcgReadError, record, "sampling rate")


def test_garbage_header(tmp_path: Path) -> None:
    (tmp_path / "bad.hea").write_text("this is not a header\n")
    _raises(EcgReadError, tmp_path / "bad", "header")


def test_non_voltage_units(record: Path) -> None:
    hea = Path(f"{record}.hea")
    hea.write_text(hea.read_text().replace("/mV", "/mmHg"))
    _raises(EcgReadError, record, "mmhg", "not a voltage")


def test_wrong_file_for_ecg(tmp_path: Path) -> None:
    png = tmp_path / "scan.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    _raises(EcgReadError, png, "unsupported ecg file", "png")
    _raises(EcgReadError, _testfile("CT_small.dcm"), "image, not a waveform")


def test_corrupt_dicom_waveform(tmp_path: Path) -> None:
    src = Path(_testfile("waveform_ecg.dcm")).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(src[: len(src) // 2])
    _raises(EcgReadError, cut, "dicom")
    noise = tmp_path / "noise.dcm"
    noise.write_bytes(np.random.default_rng(0).bytes(4000))
    _raises(EcgReadError, noise, "dicom")


# ---------------------------------------------------------------------------------------------
# CXR


def _dicom_without_pixels(path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1.1")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.save_as(path, enforce_file_format=True)


def test_corrupt_dicom_random_bytes(tmp_path: Path) -> None:
    noise = tmp_path / "noise.dcm"
    noise.write_bytes(np.random.default_rng(0).bytes(5000))
    _raises(CxrReadError, noise, "dicom")
    fake = tmp_path / "fake.dcm"  # random bytes after a valid-looking preamble + marker
    fake.write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(1).bytes(3000))
    _raises(CxrReadError, fake)


def test_truncated_dicom(tmp_path: Path) -> None:
    src = Path(_testfile("RG1_UNCR.dcm")).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(src[: len(src) // 3])
    _raises(CxrReadError, cut, "pixel data")
    header_only = tmp_path / "head.dcm"
    header_only.write_bytes(src[:300])
    _raises(CxrReadError, header_only)


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    path = tmp_path / "nopix.dcm"
    _dicom_without_pixels(path)
    _raises(CxrReadError, path, "no pixel data")
    _raises(CxrReadError, _testfile("waveform_ecg.dcm"), "waveform")


def test_rgb_jpeg_is_converted_to_gray(tmp_path: Path) -> None:
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[..., 2] = 50
    path = tmp_path / "color.jpg"
    Image.fromarray(rgb).save(path, quality=95)
    cxr = read_cxr(path)
    assert cxr.pixels.shape == (20, 30)
    assert cxr.meta["converted_from"] == "RGB"
    expected = (0.299 * 200 + 0.114 * 50) / 255
    assert abs(float(cxr.pixels.mean()) - expected) < 0.03


def test_16bit_png_works(tmp_path: Path) -> None:
    arr = np.linspace(0, 65535, 40 * 50).reshape(40, 50).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    cxr = read_cxr(path)
    assert cxr.meta["bits_stored"] == 16
    np.testing.assert_allclose(cxr.pixels, arr / 65535.0, atol=1e-6)


def test_wrong_extension(tmp_path: Path) -> None:
    arr = np.arange(64, dtype=np.uint8).reshape(8, 8)
    png_as_jpg = tmp_path / "image.jpg"
    Image.fromarray(arr).save(png_as_jpg, format="PNG")
    cxr = read_cxr(png_as_jpg)  # repaired: read as what it contains
    np.testing.assert_allclose(cxr.pixels, arr / 255.0, atol=1e-6)
    assert any("content is png" in r for r in cxr.meta["repairs"])
    header_as_png = tmp_path / "rec.png"
    header_as_png.write_text("rec 12 500 5000\n")
    _raises(CxrReadError, header_as_png, "text file")
    noise_as_png = tmp_path / "noise.png"
    noise_as_png.write_bytes(np.random.default_rng(2).bytes(500))
    _raises(CxrReadError, noise_as_png, "not a readable")


def test_truncated_jpeg(tmp_path: Path) -> None:
    arr = np.random.default_rng(3).integers(0, 255, size=(64, 64), dtype=np.uint8)
    path = tmp_path / "cut.jpg"
    Image.fromarray(arr).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:300])
    _raises(CxrReadError, path)


def test_missing_files() -> None:
    _raises(CxrReadError, "/nonexistent/dir/img.png", "not found")
    _raises(EcgReadError, "/nonexistent/dir/img.dcm", "not found")


def test_cxr_reader_never_leaks_phi(tmp_path: Path) -> None:
    ds = pydicom.dcmread(_testfile("RG1_UNCR.dcm"))
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PID-778899"
    ds.InstitutionName = "Secret General Hospital"
    ds.StudyDate = "21800723"
    path = tmp_path / "phi.dcm"
    ds.save_as(path)
    text = repr(read_cxr(path).meta)
    for secret in ("Doe", "778899", "Secret General", "21800723"):
        assert secret not in text
