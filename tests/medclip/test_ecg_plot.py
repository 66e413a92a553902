"""12-lead ECG plots: the 3x4 + rhythm-strip layout, missing leads, PNG output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.types import CANONICAL_LEADS, Ecg
from medclip.ecg_plot import LAYOUT_3X4, plot_ecg_12lead, save_ecg_plot

FS = 100.0


def _texts(fig: object) -> list[str]:
    ax = fig.axes[0]  # type: ignore[attr-defined]
    return [t.get_text() for t in ax.texts]


def _traces(fig: object) -> list[tuple[np.ndarray, np.ndarray]]:
    """Waveform lines (calibration pulses start left of t = 0 and are excluded)."""
    ax = fig.axes[0]  # type: ignore[attr-defined]
    out = []
    for line in ax.get_lines():
        x, y = (np.asarray(v, dtype=float) for v in line.get_data())
        if len(x) > 10 and x.min() >= 0:
            out.append((x, y))
    return out


def _ecg_with_marker(lead: str, seconds: float = 10.0) -> Ecg:
    """All leads flat except ``lead``: a 1 mV, 5 Hz sine (so its cell is easy to find)."""
    t = np.arange(int(seconds * FS)) / FS
    sig = np.zeros((12, len(t)), dtype=np.float32)
    sig[CANONICAL_LEADS.index(lead)] = np.sin(2 * np.pi * 5 * t)
    return Ecg(signal=sig, fs=FS)


def test_layout_puts_each_lead_in_its_row_and_column() -> None:
    fig = plot_ecg_12lead(_ecg_with_marker("V4"))
    traces = _traces(fig)
    assert len(traces) == 13  # 12 cells + the rhythm strip
    moving = [(x, y) for x, y in traces if np.ptp(y) > 1.0]
    assert len(moving) == 1  # only V4 moves (the rhythm strip shows lead II)
    x, y = moving[0]
    row, col = next(
        (r, c) for r, leads in enumerate(LAYOUT_3X4) for c, n in enumerate(leads) if n == "V4"
    )
    assert (row, col) == (0, 3)
    assert x.min() == pytest.approx(7.5) and x.max() < 10.0  # fourth 2.5 s column
    assert -3.0 < y.mean() < 0.0  # top row (rows go down from y = 0 in 3 mV steps)
    texts = _texts(fig)
    for lead in CANONICAL_LEADS:
        assert lead in texts
    assert texts.count("II") == 2  # row label + rhythm strip label


def test_rhythm_strip_spans_the_whole_record() -> None:
    fig = plot_ecg_12lead(_ecg_with_marker("II"))
    moving = [(x, y) for x, y in _traces(fig) if np.ptp(y) > 1.0]
    spans = sorted(float(x.max() - x.min()) for x, _ in moving)
    assert len(moving) == 2  # the II cell and the rhythm strip
    assert spans[0] < 2.5 and spans[1] > 9.5
    assert min(float(y.mean()) for _, y in moving) < -9.0  # strip is the bottom (4th) row


def test_missing_lead_is_labelled_not_drawn_flat() -> None:
    ecg = _ecg_with_marker("V1")
    ecg.signal[CANONICAL_LEADS.index("aVL")] = np.nan
    fig = plot_ecg_12lead(ecg)
    assert "missing" in _texts(fig)
    assert len(_traces(fig)) == 12  # aVL's cell has no line


def test_real_ptbxl_record_renders_to_png(real_ecg_dir: Path, tmp_path: Path) -> None:
    from datamodules.ecg_io import read_ecg

    ecg = read_ecg(real_ecg_dir / "ptbxl_native" / "records100" / "00000" / "00001_lr")
    full = save_ecg_plot(ecg, tmp_path / "full.png", title="PTB-XL 1", highlight=[(2.0, 3.0)])
    thumb = save_ecg_plot(ecg, tmp_path / "thumb.png", preview=True)
    big, small = Image.open(full), Image.open(thumb)
    assert big.width > 1000 and small.width < 600
    assert big.width / big.height == pytest.approx(small.width / small.height, rel=0.1)
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_raw_array_needs_a_rate_and_twelve_leads() -> None:
    with pytest.raises(ValueError, match="fs"):
        plot_ecg_12lead(np.zeros((12, 100)))
    with pytest.raises(ValueError, match="12, T"):
        plot_ecg_12lead(np.zeros((8, 100)), fs=100)
    with pytest.raises(ValueError, match="rhythm_lead"):
        plot_ecg_12lead(np.zeros((12, 100)), fs=100, rhythm_lead="X")
