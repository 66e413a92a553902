"""ROC figures are real PNGs, written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medclip import plots


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = (rng.random((80, 3)) < 0.4).astype(float)
    y[:, 2] = 0.0  # one class only: listed as n/a, no crash
    return y, y + rng.standard_normal((80, 3))


def test_roc_pngs_are_written(tmp_path: Path) -> None:
    y, s = _data()
    paths = plots.save_roc_pngs(y, s, tmp_path / "roc", ["Edema", "No Finding", "AFIB"])
    names = [p.name for p in paths]
    assert names == ["roc_all.png", "roc_edema.png", "roc_no_finding.png", "roc_afib.png"]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 300
    assert not [p for p in (tmp_path / "roc").iterdir() if p.name.startswith(".")]


def test_failed_render_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    y, s = _data()
    out = plots.plot_roc_curves(y[:, :1], s[:, :1], tmp_path / "roc.png", ["Edema"])
    before = out.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("render failed")

    monkeypatch.setattr(plots.Figure, "savefig", boom)
    with pytest.raises(RuntimeError):
        plots.plot_roc_curves(y[:, 1:2], s[:, 1:2], out, ["Other"])
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roc.png"]
