"""``medclip cache build|info``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wfdb
from PIL import Image

from datamodules.types import CANONICAL_LEADS, Study
from medclip.cli import main


def fake_studies(folder: Path, n: int = 3) -> list[Study]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        sig = np.cumsum(np.random.default_rng(i).normal(0, 0.02, (500, 12)), axis=0)
        wfdb.wrsamp(
            f"e{i}",
            fs=500,
            units=["mV"] * 12,
            sig_name=list(CANONICAL_LEADS),
            p_signal=sig,
            fmt=["16"] * 12,
            adc_gain=[1000.0] * 12,
            baseline=[0] * 12,
            write_dir=str(folder),
        )
        pixels = np.random.default_rng(i).integers(0, 256, (30, 20), dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"x{i}.png")
        out.append(
            Study(
                f"s{i}",
                f"p{i}",
                xray_path=folder / f"x{i}.png",
                ecg_path=folder / f"e{i}",
                report="r",
            )
        )
    return out


def test_build_then_info(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import datamodules.sources as sources

    root = tmp_path / "synth"
    studies = fake_studies(root)
    (root / "synthetic.json").write_text("{}")  # looks generated: nothing is regenerated
    seen: list[tuple[str, dict[str, Any]]] = []

    def fake_load(dataset: str, where: Path, **kw: Any) -> list[Study]:
        seen.append((dataset, kw))
        return studies

    monkeypatch.setattr(sources, "load_studies", fake_load)
    out = tmp_path / "cache"
    common = ["--dataset", "synthetic", "--root", str(root), "--config", "tiny", "--out", str(out)]
    assert main(["cache", "info", *common]) == 1
    assert "no usable cache" in capsys.readouterr().out
    assert main(["cache", "build", *common, "--no-progress"]) == 0
    assert seen and seen[0][0] == "synthetic" and "pair_window_days" in seen[0][1]
    assert "3 studies" in capsys.readouterr().out
    folders = list(out.glob("cache-*"))
    assert len(folders) == 1
    meta = json.loads((folders[0] / "meta.json").read_text())
    assert meta["ecg_shape"] == [3, 12, 1000] and meta["xray_shape"] == [3, 64, 64]  # tiny preset
    assert main(["cache", "info", *common]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["studies"] == 3 and info["present (xray, ecg, text)"] == [3, 3, 3]
    # the towers' input specs win over data.*, exactly as in training
    assert main(["cache", "info", *common, "--set", "data.image_size=32"]) == 0
    tower = ["--set", "model.xray.kwargs={img_size: 32}"]
    assert main(["cache", "info", *common, *tower]) == 1  # other settings: not that cache
    assert main(["cache", "build", *common, *tower, "--no-progress"]) == 0
    shapes = sorted(
        json.loads((f / "meta.json").read_text())["xray_shape"][1] for f in out.iterdir()
    )
    assert shapes == [32, 64]


def test_missing_root_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["cache", "build", "--dataset", "mimic", "--root", str(tmp_path / "nowhere")])
    assert code == 2
    assert "nowhere" in capsys.readouterr().err


def test_build_generates_the_synthetic_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "synth"
    args = ["--dataset", "synthetic", "--root", str(root), "--config", "tiny"]
    args += ["--set", "data.synth_n=4"]
    assert main(["cache", "build", *args, "--no-progress"]) == 0
    assert (root / "synthetic.json").is_file()
    folders = list((root / ".medclip-cache").glob("cache-*"))
    assert len(folders) == 1
    meta = json.loads((folders[0] / "meta.json").read_text())
    assert meta["n"] >= 4 and meta["ecg_shape"][1:] == [12, 1000]
    assert "generating a synthetic dataset" in capsys.readouterr().out
    assert main(["cache", "info", *args]) == 0
