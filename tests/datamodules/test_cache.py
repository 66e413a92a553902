"""Preprocessing cache: round trip, config keying, atomic builds, bad records."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb
from PIL import Image

import datamodules.cache as cache_mod
from datamodules.cache import build_cache, cache_path, open_cache
from datamodules.dataset import StudyDataset
from datamodules.transforms import CxrTransformConfig, EcgTransformConfig
from datamodules.types import CANONICAL_LEADS, Study

ECG_CFG = EcgTransformConfig(fs_hz=100.0, length=200)
CXR_CFG = CxrTransformConfig(image_size=24)


def write_ecg(folder: Path, name: str, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sig = np.cumsum(np.random.default_rng(seed).normal(0, 0.02, size=(400, 12)), axis=0)
    wfdb.wrsamp(
        name,
        fs=100,
        units=["mV"] * 12,
        sig_name=list(CANONICAL_LEADS),
        p_signal=sig,
        fmt=["16"] * 12,
        adc_gain=[1000.0] * 12,
        baseline=[0] * 12,
        write_dir=str(folder),
    )
    return folder / name


def write_png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(30, 36), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path)
    return path


def make_studies(folder: Path, n: int) -> list[Study]:
    out = []
    for i in range(n):
        out.append(
            Study(
                f"s{i}",
                f"p{i % 3}",
                xray_path=write_png(folder / f"x{i}.png", i) if i % 4 != 1 else None,
                ecg_path=write_ecg(folder, f"e{i}", i) if i % 4 != 2 else None,
                report=f"report {i}" if i % 2 == 0 else None,
                labels={"A": float(i % 2), "B": float("nan")} if i != 3 else {},
            )
        )
    return out


@pytest.fixture
def studies(tmp_path: Path) -> list[Study]:
    return make_studies(tmp_path / "data", 8)


def test_roundtrip_matches_decoding(studies: list[Study], tmp_path: Path) -> None:
    out = build_cache(studies, ECG_CFG, CXR_CFG, tmp_path / "cache", progress=False)
    assert out == cache_path(tmp_path / "cache", ECG_CFG, CXR_CFG) and out.is_dir()
    cache = open_cache(tmp_path / "cache", ECG_CFG, CXR_CFG)
    assert cache is not None and len(cache) == 8
    assert np.load(out / "ecg.npy", mmap_mode="r").dtype == np.float16
    assert np.load(out / "xray.npy", mmap_mode="r").dtype == np.uint8
    assert cache.present.tolist() == [list(s.present) for s in studies]
    assert cache.texts()[:2] == ["report 0", ""]
    assert cache.study_ids == [s.study_id for s in studies]
    with open(out / "table.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert table[1]["present_xray"] == "0" and table[1]["A"] == "1" and table[1]["B"] == ""
    assert table[0]["text"] == "report 0" and table[3]["A"] == ""
    assert cache.label_names == ["A", "B"]
    assert cache.labels[1, 0] == 1.0 and np.isnan(cache.labels[3]).all()

    plain = StudyDataset(studies, ECG_CFG, CXR_CFG, ["A"])
    cached = StudyDataset(studies, ECG_CFG, CXR_CFG, ["A"], cache=cache)
    tol_x = 0.5 / 255 / CXR_CFG.std + 1e-5
    for i in range(len(studies)):
        a, b = plain[i], cached[i]
        assert a["present"].tolist() == b["present"].tolist()
        assert a["text"] == b["text"] and a["study_id"] == b["study_id"]
        assert torch.equal(a["labels"].nan_to_num(-1), b["labels"].nan_to_num(-1))
        if a["ecg"] is not None:
            assert b["ecg"].dtype == torch.float32 and b["ecg"].shape == a["ecg"].shape
            torch.testing.assert_close(b["ecg"], a["ecg"], atol=1e-2, rtol=1e-3)
        if a["xray"] is not None:
            assert b["xray"].shape == a["xray"].shape
            assert (b["xray"] - a["xray"]).abs().max() <= tol_x


def test_float_dtypes(studies: list[Study], tmp_path: Path) -> None:
    out = build_cache(
        studies,
        ECG_CFG,
        CXR_CFG,
        tmp_path,
        ecg_dtype="float32",
        xray_dtype="float16",
        progress=False,
    )
    cache = open_cache(tmp_path, ECG_CFG, CXR_CFG)
    assert cache is not None
    assert np.load(out / "ecg.npy", mmap_mode="r").dtype == np.float32
    ref = StudyDataset(studies, ECG_CFG, CXR_CFG, [])[0]
    assert np.array_equal(cache.ecg(0), ref["ecg"].numpy())
    np.testing.assert_allclose(cache.xray(0), ref["xray"][0].numpy(), atol=5e-3)
    with pytest.raises(ValueError, match="ecg_dtype"):
        build_cache(studies, ECG_CFG, CXR_CFG, tmp_path, ecg_dtype="int8")  # type: ignore[arg-type]


def test_absent_or_other_config_gives_none(studies: list[Study], tmp_path: Path) -> None:
    assert open_cache(tmp_path, ECG_CFG, CXR_CFG) is None
    build_cache(studies, ECG_CFG, CXR_CFG, tmp_path, progress=False)
    assert open_cache(tmp_path, ECG_CFG, CxrTransformConfig(image_size=32)) is None
    assert open_cache(tmp_path, EcgTransformConfig(fs_hz=100.0, length=100), CXR_CFG) is None
    assert open_cache(tmp_path, ECG_CFG, CXR_CFG) is not None


def test_random_crop_uses_the_centre_crop_cache(studies: list[Study], tmp_path: Path) -> None:
    if "crop" not in {f.name for f in dataclasses.fields(ECG_CFG)}:
        pytest.skip("transforms have no crop option")
    build_cache(
        studies, dataclasses.replace(ECG_CFG, crop="random"), CXR_CFG, tmp_path, progress=False
    )
    assert open_cache(tmp_path, ECG_CFG, CXR_CFG) is not None


def test_crash_mid_build_keeps_the_old_cache(
    studies: list[Study], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_cache(studies[:4], ECG_CFG, CXR_CFG, tmp_path, progress=False)
    calls = {"n": 0}
    real = StudyDataset.__getitem__

    def flaky(self: StudyDataset, index: int) -> dict[str, object]:
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash")
        return real(self, index)

    monkeypatch.setattr(StudyDataset, "__getitem__", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_cache(studies, ECG_CFG, CXR_CFG, tmp_path, progress=False)
    cache = open_cache(tmp_path, ECG_CFG, CXR_CFG)
    assert cache is not None and cache.study_ids == ["s0", "s1", "s2", "s3"]  # old one intact
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_crash_mid_build_leaves_no_cache(
    studies: list[Study], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(cache_mod, "_write_json", boom)  # dies just before the table is written
    out = tmp_path / "out"
    with pytest.raises(OSError, match="simulated"):
        build_cache(studies, ECG_CFG, CXR_CFG, out, progress=False)
    assert open_cache(out, ECG_CFG, CXR_CFG) is None
    assert list(out.iterdir()) == []


def test_incomplete_or_damaged_folders_are_ignored(studies: list[Study], tmp_path: Path) -> None:
    out = build_cache(studies, ECG_CFG, CXR_CFG, tmp_path, progress=False)
    meta_path = out / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "complete": False}))
    assert open_cache(tmp_path, ECG_CFG, CXR_CFG) is None
    meta_path.write_text(json.dumps(meta)[:50])  # truncated JSON
    assert open_cache(tmp_path, ECG_CFG, CXR_CFG) is None
    meta_path.write_text(json.dumps(meta))
    assert open_cache(tmp_path, ECG_CFG, CXR_CFG) is not None
    (out / "xray.npy").unlink()
    assert open_cache(tmp_path, ECG_CFG, CXR_CFG) is None


def test_rebuild_is_skipped_when_up_to_date_and_replaces_otherwise(
    studies: list[Study], tmp_path: Path
) -> None:
    out = build_cache(studies, ECG_CFG, CXR_CFG, tmp_path, progress=False)
    stamp = json.loads((out / "meta.json").read_text())["created_unix_s"]
    build_cache(studies, ECG_CFG, CXR_CFG, tmp_path, progress=False)
    assert json.loads((out / "meta.json").read_text())["created_unix_s"] == stamp
    build_cache(studies[:5], ECG_CFG, CXR_CFG, tmp_path, progress=False)
    cache = open_cache(tmp_path, ECG_CFG, CXR_CFG)
    assert cache is not None and len(cache) == 5
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(["data", out.name])


def test_bad_records_are_stored_absent_and_counted(studies: list[Study], tmp_path: Path) -> None:
    (Path(str(studies[0].ecg_path) + ".dat")).write_bytes(b"\x00")
    out = build_cache(studies, ECG_CFG, CXR_CFG, tmp_path, progress=False)
    assert json.loads((out / "meta.json").read_text())["n_bad"] == 1
    cache = open_cache(tmp_path, ECG_CFG, CXR_CFG)
    assert cache is not None and cache.present[0].tolist() == [True, False, True]
    ds = StudyDataset(studies, ECG_CFG, CXR_CFG, [], cache=cache)
    s = ds[0]
    assert s["ecg"] is None and s["xray"] is not None
    assert ds.bad_records == 1


def test_cache_is_matched_by_file_not_position(studies: list[Study], tmp_path: Path) -> None:
    build_cache(studies, ECG_CFG, CXR_CFG, tmp_path, progress=False)
    cache = open_cache(tmp_path, ECG_CFG, CXR_CFG)
    assert cache is not None
    other = make_studies(tmp_path / "other", 2)  # same ids, different files
    ecg_only = [dataclasses.replace(studies[4], xray_path=None, study_id="renamed")]
    ds = StudyDataset(other + ecg_only, ECG_CFG, CXR_CFG, [], cache=cache)
    assert (ds._cache_rows[:2] == -1).all()
    assert ds._cache_rows[2].tolist() == [-1, 4]
    ref = StudyDataset(ecg_only, ECG_CFG, CXR_CFG, [])[0]["ecg"]
    torch.testing.assert_close(ds[2]["ecg"], ref, atol=1e-2, rtol=1e-3)


def test_cache_pickles_without_arrays(studies: list[Study], tmp_path: Path) -> None:
    import pickle

    build_cache(studies, ECG_CFG, CXR_CFG, tmp_path, progress=False)
    cache = open_cache(tmp_path, ECG_CFG, CXR_CFG)
    assert cache is not None
    cache.ecg(0)
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._ecg is None
    assert np.array_equal(clone.ecg(0), cache.ecg(0))


def test_stale_build_of_a_dead_process_is_removed(studies: list[Study], tmp_path: Path) -> None:
    stale = tmp_path / ".building-x-1"
    stale.mkdir(parents=True)
    (stale / "owner").write_text(f"{socket.gethostname()} {2**22 + 12345}\n")
    alive = tmp_path / ".building-y-2"
    alive.mkdir()
    (alive / "owner").write_text(f"{socket.gethostname()} {os.getpid()}\n")
    build_cache(studies[:2], ECG_CFG, CXR_CFG, tmp_path, progress=False)
    assert not stale.exists() and alive.exists()


def test_parallel_build_equals_serial(studies: list[Study], tmp_path: Path) -> None:
    a = build_cache(studies, ECG_CFG, CXR_CFG, tmp_path / "a", progress=False)
    b = build_cache(studies, ECG_CFG, CXR_CFG, tmp_path / "b", num_workers=2, progress=False)
    for name in ("ecg.npy", "xray.npy", "present.npy"):
        assert np.array_equal(np.load(a / name), np.load(b / name))
