"""ECG / CXR preprocessing: imputation, resampling, high-pass, standardisation, crop, windows."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datamodules.ecg_io import read_ecg
from datamodules.transforms import (
    CxrTransformConfig,
    EcgTransformConfig,
    config_hash,
    crop_or_pad,
    ecg_windows,
    fit_global_standardizer,
    highpass,
    impute_nan,
    preprocess_cxr,
    preprocess_ecg,
    resample,
)
from datamodules.types import Cxr, Ecg


def _sine_ecg(fs: float = 500.0, seconds: float = 10.0, hz: float = 5.0) -> Ecg:
    t = np.arange(int(fs * seconds)) / fs
    rows = [np.sin(2 * np.pi * hz * t) * (1 + 0.1 * k) + 0.3 * k for k in range(12)]
    return Ecg(signal=np.stack(rows).astype(np.float32), fs=fs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fs_hz": 0},
        {"length": 0},
        {"length": 2.5},
        {"highpass_hz": -1},
        {"highpass_hz": 60.0},  # >= fs/2 at 100 Hz
        {"standardize": "zscore"},
        {"global_std": 0.0},
        {"crop": "left"},
    ],
)
def test_ecg_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        EcgTransformConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"image_size": 0}, {"std": 0.0}, {"mean": math.nan}])
def test_cxr_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CxrTransformConfig(**kwargs)  # type: ignore[arg-type]


def test_impute_linear_within_lead() -> None:
    x = np.array(
        [[0.0, np.nan, np.nan, 3.0, np.nan], [np.nan] * 5, [1.0, 2.0, np.inf, 4.0, 5.0]],
        dtype=np.float32,
    )
    out = impute_nan(x)
    np.testing.assert_allclose(out[0], [0, 1, 2, 3, 3])  # end holds the last valid value
    np.testing.assert_array_equal(out[1], np.zeros(5))  # all-NaN lead -> 0
    np.testing.assert_allclose(out[2], [1, 2, 3, 4, 5])
    assert np.isnan(x[0, 1])  # input untouched


def test_resample_500_to_100_keeps_a_sine() -> None:
    ecg = _sine_ecg(500.0)
    out = resample(ecg.signal, 500.0, 100.0)
    assert out.shape == (12, 1000) and out.dtype == np.float32
    ref = _sine_ecg(100.0).signal
    np.testing.assert_allclose(out[:, 50:-50], ref[:, 50:-50], atol=0.02)
    assert resample(ecg.signal, 500.0, 500.0) is ecg.signal


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    fs_in=st.sampled_from([100.0, 250.0, 257.0, 360.0, 400.0, 500.0, 1000.0]),
    fs_out=st.sampled_from([100.0, 125.0, 250.0, 500.0]),
    n=st.integers(10, 3000),
)
def test_resample_length(fs_in: float, fs_out: float, n: int) -> None:
    x = np.random.default_rng(n).normal(size=(2, n)).astype(np.float32)
    out = resample(x, fs_in, fs_out)
    assert out.shape == (2, math.ceil(n * fs_out / fs_in))


def test_highpass_removes_wander_keeps_qrs_band() -> None:
    fs = 100.0
    t = np.arange(1000) / fs
    fast = np.sin(2 * np.pi * 10 * t)
    x = (fast + 2.0 + 1.5 * np.sin(2 * np.pi * 0.05 * t))[None].astype(np.float32)
    out = highpass(x, fs, 0.5)[0]
    mid = slice(200, 800)
    assert abs(float(out[mid].mean())) < 0.05  # DC and 0.05 Hz wander gone
    assert float(np.abs(out[mid] - fast[mid]).max()) < 0.1  # 10 Hz untouched, no phase shift


def test_preprocess_per_lead_and_mask() -> None:
    ecg = _sine_ecg()
    ecg.signal[7] = np.nan
    ecg.lead_mask = np.ones(12, bool)
    ecg.lead_mask[7] = False
    ecg.signal[2, 100:140] = np.nan  # a gap inside a present lead
    out = preprocess_ecg(ecg, EcgTransformConfig())
    assert out.shape == (12, 1000) and out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[7], 0.0)
    present = np.delete(out, 7, axis=0)
    np.testing.assert_allclose(present.mean(axis=1), 0.0, atol=0.05)
    np.testing.assert_allclose(present.std(axis=1), 1.0, atol=0.05)


def test_global_standardisation_matches_none_plus_affine() -> None:
    ecg = _sine_ecg()
    base = EcgTransformConfig(standardize="none")
    plain = preprocess_ecg(ecg, base)
    glob = preprocess_ecg(
        ecg, dataclasses.replace(base, standardize="global", global_mean=0.2, global_std=0.5)
    )
    np.testing.assert_allclose(glob, (plain - 0.2) / 0.5, atol=1e-5)


def test_fit_global_standardizer_is_pooled() -> None:
    rng = np.random.default_rng(0)
    sigs = [rng.normal(1.0, 2.0, size=(12, n)).astype(np.float32) for n in (100, 250, 40)]
    mean, std = fit_global_standardizer(sigs)
    pooled = np.concatenate([s.ravel() for s in sigs]).astype(np.float64)
    assert mean == pytest.approx(pooled.mean(), rel=1e-6)
    assert std == pytest.approx(pooled.std(), rel=1e-6)
    masks = [np.arange(12) < 6] * 3
    m2, _ = fit_global_standardizer(sigs, masks)
    assert m2 == pytest.approx(np.concatenate([s[:6].ravel() for s in sigs]).mean(), rel=1e-6)
    with pytest.raises(ValueError):
        fit_global_standardizer([np.full((12, 5), np.nan)])


def test_crop_and_pad() -> None:
    x = np.arange(20, dtype=np.float32).reshape(2, 10)
    np.testing.assert_array_equal(crop_or_pad(x, 4), x[:, 3:7])
    padded = crop_or_pad(x, 13)
    np.testing.assert_array_equal(padded[:, :10], x)
    np.testing.assert_array_equal(padded[:, 10:], 0.0)
    a = crop_or_pad(x, 4, "random", np.random.default_rng(5))
    b = crop_or_pad(x, 4, "random", np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    starts = {int(crop_or_pad(x, 4, "random", np.random.default_rng(s))[0, 0]) for s in range(40)}
    assert len(starts) > 3 and starts <= set(range(7))


def test_short_record_padded_at_end() -> None:
    ecg = _sine_ecg(100.0, seconds=5.0)
    out = preprocess_ecg(ecg, EcgTransformConfig(standardize="none", highpass_hz=0.0))
    np.testing.assert_allclose(out[:, :500], ecg.signal, atol=1e-6)
    np.testing.assert_array_equal(out[:, 500:], 0.0)


def test_ecg_windows() -> None:
    x = np.random.default_rng(1).normal(size=(12, 1000)).astype(np.float32)
    w = ecg_windows(x, 250, 125)
    assert w.shape == (7, 12, 250)
    for i in range(7):
        np.testing.assert_array_equal(w[i], x[:, 125 * i : 125 * i + 250])
    longer = np.random.default_rng(2).normal(size=(12, 1100)).astype(np.float32)
    tail = ecg_windows(longer, 250, 125)
    assert tail.shape == (8, 12, 250)  # starts 0..750, then one aligned to the end (850)
    np.testing.assert_array_equal(tail[-1], longer[:, 850:])
    short = ecg_windows(x[:, :100], 250, 125)
    assert short.shape == (1, 12, 250) and (short[0, :, 100:] == 0).all()


def test_real_record_end_to_end(real_ecg_dir: Path) -> None:
    ecg = read_ecg(real_ecg_dir / "cinc2021" / "HR06000")
    out = preprocess_ecg(ecg, EcgTransformConfig(crop="random"), np.random.default_rng(0))
    assert out.shape == (12, 1000) and np.isfinite(out).all()
    windows = ecg_windows(out, 250, 125)
    assert windows.shape == (7, 12, 250)


def test_preprocess_cxr_keeps_aspect_and_pads() -> None:
    pixels = np.ones((100, 50), np.float32)  # tall image
    cfg = CxrTransformConfig(image_size=64, mean=0.5, std=0.25)
    out = preprocess_cxr(Cxr(pixels=pixels), cfg)
    assert out.shape == (64, 64) and out.dtype == np.float32
    black, white = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25
    np.testing.assert_allclose(out[:, :16], black)  # 64 * 50/100 = 32 columns centred
    np.testing.assert_allclose(out[:, 48:], black)
    np.testing.assert_allclose(out[:, 16:48], white, atol=1e-5)
    wide = preprocess_cxr(Cxr(pixels=np.ones((30, 120), np.float32)), cfg)
    assert (wide[:, 0] > 0).sum() == 16  # 64 * 30/120 rows


def test_config_hash() -> None:
    a = config_hash(EcgTransformConfig(), CxrTransformConfig())
    assert a == config_hash(EcgTransformConfig(), CxrTransformConfig())
    assert len(a) == 16
    assert a != config_hash(EcgTransformConfig(length=500), CxrTransformConfig())
    assert a != config_hash(CxrTransformConfig(), EcgTransformConfig())
    with pytest.raises(TypeError):
        config_hash({"fs_hz": 100})


@pytest.mark.parametrize("n", [2, 3, 4, 5, 17, 1000])
@pytest.mark.parametrize("fs", [100.0, 500.0])
def test_highpass_matches_scipy_filtfilt(n: int, fs: float) -> None:
    from scipy.signal import butter, filtfilt

    from datamodules.transforms import highpass

    rng = np.random.default_rng(n)
    x = (rng.normal(size=(12, n)) + np.linspace(0, 3, n)).astype(np.float32)
    b, a = butter(1, 0.5, btype="highpass", fs=fs)
    want = filtfilt(b, a, x.astype(np.float64), axis=-1, padlen=min(3 * max(len(a), len(b)), n - 1))
    got = highpass(x, fs, 0.5)
    assert got.dtype == np.float32 and got.shape == x.shape and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fs, n", [(100.0, 1000), (500.0, 5000), (250.0, 2600)])
def test_per_lead_standardisation_equals_numpy_std_bitwise(fs: float, n: int) -> None:
    """The shared centred copy gives exactly ``(x - x.mean()) / x.std()`` (caches stay valid)."""
    from datamodules.transforms import EcgTransformConfig, highpass, preprocess_ecg
    from datamodules.types import Ecg

    rng = np.random.default_rng(int(n))
    sig = (rng.normal(size=(12, n)).cumsum(-1) * 0.02 + rng.normal(size=(12, n))).astype(np.float32)
    sig[3] = 0.0  # a flat lead is not scaled
    cfg = EcgTransformConfig(fs_hz=fs, length=n, standardize="per_lead")
    got = preprocess_ecg(Ecg(signal=sig, fs=fs), cfg)
    x = highpass(sig, fs, cfg.highpass_hz)
    mean, std = x.mean(axis=-1, keepdims=True), x.std(axis=-1, keepdims=True)
    want = (x - mean) / np.where(std < 1e-6, 1.0, std)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want.astype(np.float32))
