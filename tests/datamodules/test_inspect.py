"""inspect_file and the ``medclip inspect`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from datamodules.errors import MedclipDataError
from datamodules.inspect import detect_modality, inspect_file
from datamodules.types import CANONICAL_LEADS, Modality
from medclip.cli import main


def _testfile(name: str) -> str:
    """Path of a pydicom / pydicom-data test file (installed offline)."""
    path = get_testdata_file(name)
    assert isinstance(path, str), name
    return path


def test_inspect_real_ecg(real_ecg_dir: Path) -> None:
    stem = real_ecg_dir / "ptbxl_native" / "records100" / "00000" / "00001_lr"
    info = inspect_file(stem)
    json.dumps(info)  # serialisable
    assert info["modality"] == "ecg" and info["format"] == "wfdb"
    assert info["shape"] == [12, 1000] and info["fs"] == 100.0 and info["duration_s"] == 10.0
    assert info["leads"] == list(CANONICAL_LEADS)
    assert info["lead_mask"] == [True] * 12 and info["missing_leads"] == []
    assert info["units"] == "mV" and info["source_units"] == ["mV"] * 12
    lo, hi = info["amplitude_range_mv"]
    assert -10 < lo < hi < 10
    assert inspect_file(f"{stem}.hea")["shape"] == [12, 1000]


def test_inspect_dicom_waveform_and_image() -> None:
    ecg = inspect_file(_testfile("waveform_ecg.dcm"))
    assert ecg["modality"] == "ecg" and ecg["format"] == "dicom" and ecg["fs"] == 1000.0
    xray = inspect_file(_testfile("RG1_UNCR.dcm"))
    assert xray["modality"] == "xray"
    assert xray["photometric_interpretation"] == "MONOCHROME1"
    assert xray["shape"] == [1955, 1841]
    lo, hi = xray["pixel_range"]
    assert 0.0 <= lo < hi <= 1.0
    json.dumps(xray)


def test_inspect_png_and_phi(tmp_path: Path) -> None:
    png = tmp_path / "x.png"
    Image.fromarray(np.full((5, 7), 128, np.uint8)).save(png)
    info = inspect_file(png)
    assert info["modality"] == "xray" and info["shape"] == [5, 7]
    assert info["pixel_range"] == pytest.approx([128 / 255, 128 / 255])
    ds = pydicom.dcmread(_testfile("CT_small.dcm"))
    ds.PatientName = "Doe^John"
    ds.PatientID = "ID-4242"
    dcm = tmp_path / "ct.dcm"
    ds.save_as(dcm)
    text = json.dumps(inspect_file(dcm))
    assert "Doe" not in text and "4242" not in text


def test_detect_modality(tmp_path: Path, real_ecg_dir: Path) -> None:
    assert detect_modality(real_ecg_dir / "cinc2021" / "JS00001") is Modality.ECG
    assert detect_modality(real_ecg_dir / "cinc2021" / "JS00001.mat") is Modality.ECG
    odd = tmp_path / "notes.csv"
    odd.write_text("a,b\n1,2\n")
    with pytest.raises(MedclipDataError, match="unrecognised file type"):
        detect_modality(odd)


def test_cli_prints_one_json_line_per_file(
    tmp_path: Path, real_ecg_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = real_ecg_dir / "cinc2021" / "HR06001"
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"\x00" * 64)
    code = main(["inspect", str(good), str(bad), _testfile("SC_rgb_jpeg_dcmtk.dcm")])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert [line["file"] for line in lines] == [
        str(good),
        str(bad),
        _testfile("SC_rgb_jpeg_dcmtk.dcm"),
    ]
    assert lines[0]["modality"] == "ecg" and lines[0]["fs"] == 500.0
    assert set(lines[1]) >= {"file", "error"} and "DICOM" in lines[1]["error"]
    assert lines[2]["meta"]["converted_from"] == "RGB"


def test_cli_all_good_exits_zero(real_ecg_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(real_ecg_dir / "cinc2021" / "JS20000")]) == 0
    assert json.loads(capsys.readouterr().out)["shape"] == [12, 5000]
