"""read_cxr: DICOM (MONOCHROME1, BitsStored, VOI LUT, window, compressed), PNG/JPEG, real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from datamodules.cxr_io import DICOM_META_ALLOWLIST, read_cxr

ALLOWED_META = {
    *DICOM_META_ALLOWLIST.values(),
    "format",
    "transfer_syntax",
    "sop_class",
    "stored_range",
    "voi",
    "inverted",
    "converted_from",
    "original_mode",
    "range_warning",
    "repairs",
}


def _testfile(name: str) -> str:
    """Path of a pydicom / pydicom-data test file (installed offline)."""
    path = get_testdata_file(name)
    assert isinstance(path, str), name
    return path


def _dx(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    window: tuple[float, float] | None = None,
) -> Path:
    """Write a minimal uncompressed 16-bit DX DICOM with PHI-like fields that must not leak."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1.1")  # DX for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.ViewPosition = "PA"
    ds.PatientName = "Roe^Richard"
    ds.PatientID = "99887766"
    ds.StudyDate = "21800723"
    ds.InstitutionName = "Hidden Hospital"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.ImagerPixelSpacing = [0.139, 0.139]
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture()
def ramp() -> np.ndarray:
    return np.linspace(0, 4095, 24 * 32).reshape(24, 32).astype(np.uint16)


def test_bits_stored_range(tmp_path: Path, ramp: np.ndarray) -> None:
    cxr = read_cxr(_dx(tmp_path / "a.dcm", ramp))
    assert cxr.pixels.dtype == np.float32 and cxr.pixels.shape == (24, 32)
    np.testing.assert_allclose(cxr.pixels, ramp / 4095.0, atol=1e-6)
    assert cxr.meta["bits_stored"] == 12 and cxr.meta["voi"] == "none"
    assert cxr.meta["view_position"] == "PA" and cxr.meta["modality"] == "DX"


def test_monochrome1_is_inverted(tmp_path: Path, ramp: np.ndarray) -> None:
    cxr = read_cxr(_dx(tmp_path / "m1.dcm", ramp, photometric="MONOCHROME1"))
    np.testing.assert_allclose(cxr.pixels, 1.0 - ramp / 4095.0, atol=1e-6)
    assert cxr.meta["inverted"] is True


def test_window_is_applied(tmp_path: Path, ramp: np.ndarray) -> None:
    cxr = read_cxr(_dx(tmp_path / "w.dcm", ramp, window=(1000.0, 1001.0)))
    # DICOM LINEAR window: (x - (c - 0.5)) / (w - 1) + 0.5, clipped to [0, 1]
    expected = np.clip((ramp - 999.5) / 1000.0 + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(cxr.pixels, expected, atol=1e-5)
    assert cxr.meta["voi"] == "window"


def test_range_warning_for_dark_images(tmp_path: Path) -> None:
    dim = np.full((10, 10), 100, np.uint16)
    dim[0, 0] = 200
    cxr = read_cxr(_dx(tmp_path / "dim.dcm", dim, bits_stored=16))
    assert "range_warning" in cxr.meta


def test_metadata_is_an_allowlist(tmp_path: Path, ramp: np.ndarray) -> None:
    cxr = read_cxr(_dx(tmp_path / "phi.dcm", ramp))
    assert set(cxr.meta) <= ALLOWED_META
    text = repr(cxr.meta)
    for secret in ("Roe", "99887766", "21800723", "Hidden"):
        assert secret not in text
    assert cxr.meta["imager_pixel_spacing"] == [0.139, 0.139]


def test_real_chest_cr_monochrome1() -> None:
    path = _testfile("RG1_UNCR.dcm")
    ds = pydicom.dcmread(path)
    cxr = read_cxr(path)
    assert cxr.pixels.shape == (1955, 1841)
    assert cxr.meta["photometric_interpretation"] == "MONOCHROME1"
    assert cxr.meta["voi"] == "window" and cxr.meta["inverted"]
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    raw = ds.pixel_array.astype(np.float64)
    expected = 1.0 - np.clip((raw - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(cxr.pixels, expected, atol=1e-5)
    assert cxr.pixels.min() >= 0.0 and cxr.pixels.max() <= 1.0


def test_jpeg2000_matches_uncompressed() -> None:
    j2k = read_cxr(_testfile("RG1_J2KR.dcm"))
    raw = read_cxr(_testfile("RG1_UNCR.dcm"))
    assert "JPEG 2000" in j2k.meta["transfer_syntax"]
    np.testing.assert_array_equal(j2k.pixels, raw.pixels)  # lossless


def test_jpeg_baseline_rgb_dicom_becomes_gray() -> None:
    path = _testfile("SC_rgb_jpeg_dcmtk.dcm")
    cxr = read_cxr(path)
    assert cxr.pixels.shape == (100, 100)
    assert cxr.meta["converted_from"] == "RGB"
    assert "JPEG Baseline" in cxr.meta["transfer_syntax"]
    rgb = pydicom.dcmread(path).pixel_array.astype(np.float64)
    luma = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255
    np.testing.assert_allclose(cxr.pixels, luma, atol=1e-5)


def test_voi_lut_sequence() -> None:
    cxr = read_cxr(_testfile("vlut_04.dcm"))
    assert cxr.meta["voi"] == "lut"
    assert cxr.pixels.min() >= 0.0 and cxr.pixels.max() <= 1.0
    assert cxr.pixels.std() > 0.05


def test_png_8bit_and_gray_jpeg(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 256, size=(30, 20), dtype=np.uint8)
    png = tmp_path / "a.png"
    Image.fromarray(arr).save(png)
    cxr = read_cxr(png)
    np.testing.assert_allclose(cxr.pixels, arr / 255.0, atol=1e-6)
    assert cxr.meta["original_mode"] == "L" and "converted_from" not in cxr.meta
    jpg = tmp_path / "a.jpg"
    Image.fromarray(arr).save(jpg, quality=95)
    assert read_cxr(jpg).pixels.shape == (30, 20)


def test_real_kermany_images(real_cxr_dir: Path) -> None:
    labels = pd.read_csv(real_cxr_dir / "kermany_test_224" / "labels.csv")
    assert len(labels) > 300
    for name in labels["file"].iloc[::20]:
        path = real_cxr_dir / "kermany_test_224" / str(name)
        cxr = read_cxr(path)
        assert cxr.pixels.shape == (224, 224) and cxr.pixels.dtype == np.float32
        with Image.open(path) as img:
            ref = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        np.testing.assert_allclose(cxr.pixels, ref, atol=1e-6)


def test_real_covid_permissive_images(real_cxr_dir: Path) -> None:
    meta = pd.read_csv(real_cxr_dir / "covid_permissive" / "metadata_permissive.csv")
    for name in meta["filename"].iloc[::5]:
        path = real_cxr_dir / "covid_permissive" / str(name)  # "images/..."
        cxr = read_cxr(path)
        with Image.open(path) as img:
            width, height = img.size
        assert cxr.pixels.shape == (height, width)
        assert 0.0 <= float(cxr.pixels.min()) <= float(cxr.pixels.max()) <= 1.0
        assert float(cxr.pixels.std()) > 0.02  # real content, not a flat image
