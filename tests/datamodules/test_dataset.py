"""StudyDataset: sample contract, missing modalities, bad-record handling."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb
from PIL import Image
from torch.utils.data import DataLoader

from datamodules.dataset import StudyDataset, labels_matrix, union_label_names
from datamodules.errors import MedclipDataError
from datamodules.transforms import CxrTransformConfig, EcgTransformConfig
from datamodules.types import CANONICAL_LEADS, Study

ECG_CFG = EcgTransformConfig(fs_hz=100.0, length=250)
CXR_CFG = CxrTransformConfig(image_size=32)
SUBJECT = "p10000032"  # looks like a MIMIC subject folder; must never reach the logs


def write_ecg(folder: Path, name: str, seed: int = 0, fs: int = 100, n: int = 500) -> Path:
    """A 12-lead WFDB record (format 16, mV) with a seeded random-walk signal; returns the stem."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sig = np.cumsum(rng.normal(0, 0.02, size=(n, 12)), axis=0)
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"] * 12,
        sig_name=list(CANONICAL_LEADS),
        p_signal=sig,
        fmt=["16"] * 12,
        adc_gain=[1000.0] * 12,
        baseline=[0] * 12,
        write_dir=str(folder),
    )
    return folder / name


def write_png(path: Path, seed: int = 0, size: tuple[int, int] = (40, 48)) -> Path:
    """An 8-bit grayscale PNG of seeded noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=size, dtype=np.uint8), mode="L").save(path)
    return path


def corrupt_ecg(folder: Path, name: str) -> Path:
    """A record whose signal file is truncated to a few bytes."""
    stem = write_ecg(folder, name)
    (folder / f"{name}.dat").write_bytes(b"\x00\x01\x02")
    return stem


@pytest.fixture
def studies(tmp_path: Path) -> list[Study]:
    root = tmp_path / SUBJECT
    return [
        Study(
            "s1",
            SUBJECT,
            xray_path=write_png(root / "a.png", 1),
            ecg_path=write_ecg(root, "r1", 1),
            report="normal heart size",
            labels={"Cardiomegaly": 0.0, "AFIB": 1.0},
        ),
        Study("s2", "p2", xray_path=write_png(root / "b.png", 2), labels={"Edema": 1.0}),
        Study("s3", "p3", ecg_path=write_ecg(root, "r3", 3), report="   "),
        Study(
            "s4",
            SUBJECT,
            xray_path=write_png(root / "c.png", 4),
            ecg_path=corrupt_ecg(root, "r4"),
            report="atrial fibrillation",
        ),
    ]


def test_sample_contract(studies: list[Study]) -> None:
    ds = StudyDataset(studies, ECG_CFG, CXR_CFG, ["Cardiomegaly", "AFIB", "Edema"])
    assert len(ds) == 4
    s = ds[0]
    assert s["xray"].shape == (1, 32, 32) and s["xray"].dtype == torch.float32
    assert s["ecg"].shape == (12, 250) and s["ecg"].dtype == torch.float32
    assert torch.isfinite(s["ecg"]).all() and torch.isfinite(s["xray"]).all()
    assert s["text"] == "normal heart size"
    assert s["present"].dtype == torch.bool and s["present"].tolist() == [True, True, True]
    assert s["labels"].dtype == torch.float32
    assert s["labels"][:2].tolist() == [0.0, 1.0] and torch.isnan(s["labels"][2])
    assert s["study_id"] == "s1"


def test_missing_modalities_are_none_and_masked(studies: list[Study]) -> None:
    ds = StudyDataset(studies, ECG_CFG, CXR_CFG, ["Edema"])
    xray_only, ecg_only = ds[1], ds[2]
    assert xray_only["ecg"] is None and xray_only["text"] == ""
    assert xray_only["present"].tolist() == [True, False, False]
    assert xray_only["labels"].tolist() == [1.0]
    assert ecg_only["xray"] is None
    assert ecg_only["present"].tolist() == [False, True, False]  # whitespace report = missing


def test_config_none_skips_a_modality(studies: list[Study]) -> None:
    ds = StudyDataset(studies, None, CXR_CFG, [])
    s = ds[0]
    assert s["ecg"] is None and s["xray"] is not None
    assert s["present"].tolist() == [True, False, True]
    assert s["labels"].shape == (0,)


def test_bad_record_is_masked_logged_once_and_counted(
    studies: list[Study], caplog: pytest.LogCaptureFixture
) -> None:
    ds = StudyDataset(studies, ECG_CFG, CXR_CFG, [], skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="datamodules.dataset"):
        first = ds[3]
        second = ds[3]
    for s in (first, second):
        assert s["ecg"] is None
        assert s["xray"] is not None  # the rest of the sample survives
        assert s["present"].tolist() == [True, False, True]
    assert ds.bad_records == 1
    assert ds.bad_files() == [str(studies[3].ecg_path)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "r4" in warnings[0]
    assert SUBJECT not in warnings[0]


def test_skip_bad_false_raises_naming_the_file(studies: list[Study]) -> None:
    ds = StudyDataset(studies, ECG_CFG, CXR_CFG, [], skip_bad=False)
    with pytest.raises(MedclipDataError, match="r4"):
        ds[3]
    assert ds.bad_records == 0


def test_missing_file_is_a_bad_record(tmp_path: Path) -> None:
    gone = Study("x", "p", xray_path=tmp_path / "nope.png", ecg_path=tmp_path / "nope")
    ds = StudyDataset([gone], ECG_CFG, CXR_CFG, [])
    s = ds[0]
    assert s["xray"] is None and s["ecg"] is None
    assert ds.bad_records == 2
    with pytest.raises(MedclipDataError, match=r"nope"):
        StudyDataset([gone], ECG_CFG, CXR_CFG, [], skip_bad=False)[0]


def test_bad_records_counted_across_workers(studies: list[Study]) -> None:
    ds = StudyDataset(studies, ECG_CFG, CXR_CFG, [])
    loader = DataLoader(ds, batch_size=None, num_workers=2, collate_fn=lambda s: s)
    ids = [s["study_id"] for s in loader]
    assert sorted(ids) == ["s1", "s2", "s3", "s4"]
    assert ds.bad_records == 1  # flagged in a worker, seen in the main process


def test_deterministic_reads(studies: list[Study]) -> None:
    a = StudyDataset(studies, ECG_CFG, CXR_CFG, [])[0]
    b = StudyDataset(studies, ECG_CFG, CXR_CFG, [])[0]
    assert torch.equal(a["ecg"], b["ecg"]) and torch.equal(a["xray"], b["xray"])


def test_label_helpers(studies: list[Study]) -> None:
    names = union_label_names(studies)
    assert names == ["Cardiomegaly", "AFIB", "Edema"]
    m = labels_matrix(studies, names)
    assert m.shape == (4, 3) and m.dtype == np.float32
    assert m[1, 2] == 1.0 and np.isnan(m[2]).all()


def test_long_reasons_are_shortened_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import datamodules.dataset as dataset_mod
    from datamodules.errors import CxrReadError

    def noisy(path: object) -> None:
        raise CxrReadError(path, "bad LUT " + "x" * 5000)

    monkeypatch.setattr(dataset_mod, "read_cxr", noisy)
    ds = StudyDataset([Study("a", "p", xray_path=tmp_path / "a.png")], None, CXR_CFG, [])
    with caplog.at_level(logging.WARNING, logger="datamodules.dataset"):
        assert ds[0]["xray"] is None
    assert "bad LUT" in caplog.text and len(caplog.records[0].getMessage()) < 500
