"""A full disk while building the preprocessing cache leaves the previous build intact."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wfdb
from PIL import Image

import datamodules.cache as cache_mod
from datamodules.cache import build_cache, open_cache
from datamodules.errors import MedclipDataError, OutputWriteError
from datamodules.transforms import CxrTransformConfig, EcgTransformConfig
from datamodules.types import CANONICAL_LEADS, Study

ECG_CFG = EcgTransformConfig(fs_hz=100.0, length=200)
CXR_CFG = CxrTransformConfig(image_size=16)


def make_studies(folder: Path, n: int, tag: str) -> list[Study]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    studies = []
    for i in range(n):
        wfdb.wrsamp(
            f"e{i}",
            fs=100,
            units=["mV"] * 12,
            sig_name=list(CANONICAL_LEADS),
            p_signal=np.cumsum(rng.normal(0, 0.02, size=(300, 12)), axis=0),
            fmt=["16"] * 12,
            adc_gain=[1000.0] * 12,
            baseline=[0] * 12,
            write_dir=str(folder),
        )
        png = folder / f"x{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(20, 20), dtype=np.uint8), mode="L").save(png)
        labels = {"Edema": float(i % 2)}
        studies.append(Study(f"s{i}", f"p{i}", png, folder / f"e{i}", f"{tag} {i}", labels))
    return studies


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def limited_open(budget: int) -> Callable[..., Any]:
    """``open`` whose write-mode files take ``budget`` bytes in all, then fail with ENOSPC."""
    used = [0]

    class Limited:
        def __init__(self, fh: Any) -> None:
            self._fh = fh

        def write(self, data: Any) -> int:
            room = budget - used[0]
            if len(data) > room:
                self._fh.write(data[: max(0, room)])
                used[0] = budget
                raise enospc()
            used[0] += len(data)
            return int(self._fh.write(data))

        def __getattr__(self, name: str) -> Any:
            return getattr(self._fh, name)

        def __enter__(self) -> Limited:
            return self

        def __exit__(self, *exc: object) -> None:
            self._fh.close()

    def opener(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = open(file, mode, *args, **kwargs)  # noqa: SIM115 - handed to the caller
        return Limited(fh) if any(c in mode for c in "wax+") else fh

    return opener


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize("where", ["arrays", "table"])
def test_cache_build_on_a_full_disk_keeps_the_previous_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    out = tmp_path / "cache"
    studies = make_studies(tmp_path / "data", 4, "first")
    final = build_cache(studies, ECG_CFG, CXR_CFG, out, progress=False)
    before = snapshot(out)
    changed = [
        Study(s.study_id, s.subject_id, s.xray_path, s.ecg_path, "second", s.labels)
        for s in studies
    ]

    if where == "arrays":
        real_save = np.save

        def save(file: Any, arr: Any, *args: Any, **kwargs: Any) -> None:
            real_save(file, arr, *args, **kwargs)
            data = Path(file).read_bytes()
            Path(file).write_bytes(data[: len(data) // 2])
            raise enospc()

        monkeypatch.setattr(cache_mod.np, "save", save)
    else:
        monkeypatch.setattr(cache_mod, "open", limited_open(100), raising=False)
    with pytest.raises(OutputWriteError) as info:
        build_cache(changed, ECG_CFG, CXR_CFG, out, overwrite=True, progress=False)
    monkeypatch.undo()
    error = info.value
    assert isinstance(error, MedclipDataError) and isinstance(error, OSError)
    assert error.errno == errno.ENOSPC and error.path == str(final)
    assert str(error).startswith(f"{final}: could not be written: no space left on device")
    assert snapshot(out) == before  # same bytes; no .building-* or .old-* folder
    cache = open_cache(out, ECG_CFG, CXR_CFG)
    assert cache is not None and cache.study_ids == [s.study_id for s in studies]
    assert cache.texts() == [s.report for s in studies]
