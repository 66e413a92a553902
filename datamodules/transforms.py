"""Preprocessing that turns an :class:`Ecg` / :class:`Cxr` into the arrays the encoders eat.

ECG (:func:`preprocess_ecg`), in order:

1. **Impute** NaN/inf: linear interpolation inside each lead (ends hold the nearest valid value);
   a lead with no valid sample becomes zeros (it is already False in ``lead_mask``).
2. **Resample** to ``fs_hz`` with ``scipy.signal.resample_poly`` (rational factor, e.g. 500 ->
   100 Hz is up 1 / down 5; linear-trend edge padding to avoid edge transients).
3. **High-pass** at ``highpass_hz`` (1st-order Butterworth, zero-phase ``filtfilt``, as in
   ProtoECGNet, arXiv 2504.08713); 0 disables it.
4. **Standardise**: ``"per_lead"`` (each lead to mean 0 / std 1), ``"global"`` (one pooled mean/std
   fitted on the training set with :func:`fit_global_standardizer`, as in the PTB-XL benchmark), or
   ``"none"`` (stay in mV).
5. **Crop / pad** to ``length`` samples: center or random crop; zeros appended at the end.
6. Leads that are False in ``lead_mask`` are exactly zero in the output.

CXR (:func:`preprocess_cxr`): keep-aspect resize so the longer side is ``image_size``, center pad
with 0 (black) to a square, then ``(x - mean) / std``.

:func:`config_hash` gives a stable id of the preprocessing (used as a cache key).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, is_dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Literal

import numpy as np

from datamodules.types import Cxr, Ecg

#: Bump when preprocessing code changes in a way that alters outputs (invalidates caches).
PREPROCESS_VERSION: int = 1

_STD_FLOOR = 1e-6  # leads flatter than this are not scaled (avoids blowing up noise)


@dataclass(frozen=True)
class EcgTransformConfig:
    """ECG preprocessing settings.

    Attributes:
        fs_hz: output sampling rate in Hz.
        length: output length in samples (``length / fs_hz`` seconds).
        highpass_hz: high-pass cut-off in Hz; 0 disables the filter.
        standardize: ``"per_lead"``, ``"global"`` or ``"none"``.
        global_mean, global_std: pooled statistics (mV) used when ``standardize="global"``.
        crop: ``"center"`` or ``"random"`` when the record is longer than ``length``.
    """

    fs_hz: float = 100.0
    length: int = 1000
    highpass_hz: float = 0.5
    standardize: Literal["per_lead", "global", "none"] = "per_lead"
    global_mean: float = 0.0
    global_std: float = 1.0
    crop: Literal["center", "random"] = "center"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fs_hz) and self.fs_hz > 0):
            raise ValueError(f"fs_hz must be positive, got {self.fs_hz}")
        if int(self.length) != self.length or self.length < 1:
            raise ValueError(f"length must be a positive integer, got {self.length}")
        if not (0.0 <= self.highpass_hz < self.fs_hz / 2):
            raise ValueError(
                f"highpass_hz must be in [0, fs_hz/2) = [0, {self.fs_hz / 2}), "
                f"got {self.highpass_hz}"
            )
        if self.standardize not in ("per_lead", "global", "none"):
            raise ValueError(f"standardize must be per_lead|global|none, got {self.standardize!r}")
        if not math.isfinite(self.global_mean):
            raise ValueError(f"global_mean must be finite, got {self.global_mean}")
        if not (math.isfinite(self.global_std) and self.global_std > 0):
            raise ValueError(f"global_std must be positive, got {self.global_std}")
        if self.crop not in ("center", "random"):
            raise ValueError(f"crop must be center|random, got {self.crop!r}")


@dataclass(frozen=True)
class CxrTransformConfig:
    """Chest X-ray preprocessing settings.

    Attributes:
        image_size: side of the square output in pixels.
        mean, std: normalisation applied to the [0, 1] pixels.
    """

    image_size: int = 224
    mean: float = 0.5
    std: float = 0.25

    def __post_init__(self) -> None:
        if int(self.image_size) != self.image_size or self.image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {self.image_size}")
        if not math.isfinite(self.mean):
            raise ValueError(f"mean must be finite, got {self.mean}")
        if not (math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"std must be positive, got {self.std}")


# --------------------------------------------------------------------------------------------
# ECG


def impute_nan(signal: np.ndarray) -> np.ndarray:
    """Fill NaN/inf by linear interpolation within each lead of ``(C, T)``; all-NaN leads -> 0.

    Returns a new float32 array (the input is never modified).
    """
    out = np.array(signal, dtype=np.float32, copy=True)
    bad = ~np.isfinite(out)
    if not bad.any():
        return out
    t = np.arange(out.shape[-1])
    for k in np.flatnonzero(bad.any(axis=-1)):
        good = ~bad[k]
        if not good.any():
            out[k] = 0.0
        else:
            out[k, bad[k]] = np.interp(t[bad[k]], t[good], out[k, good])
    return out


def resample(signal: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Resample ``(C, T)`` from ``fs_in`` to ``fs_out`` Hz with a polyphase filter.

    The output has ``ceil(T * up / down)`` samples where ``up / down`` is ``fs_out / fs_in`` as a
    fraction (denominator at most 1000).
    """
    up, down = _ratio(fs_in, fs_out)
    if up == down:
        return signal
    from scipy.signal import resample_poly

    pad = "line" if signal.shape[-1] >= 2 else "mean"  # a line through 1 sample is NaN (fuzz)
    return np.asarray(resample_poly(signal, up, down, axis=-1, padtype=pad), dtype=np.float32)


def _ratio(fs_in: float, fs_out: float) -> tuple[int, int]:
    frac = (Fraction(fs_out) / Fraction(fs_in)).limit_denominator(1000)
    return frac.numerator, frac.denominator


@lru_cache(maxsize=64)
def _highpass_coeffs(cutoff_hz: float, fs_hz: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(b, a, zi)`` of the 1st-order Butterworth high-pass; ``zi`` is the step-response
    initial state (scipy's ``lfilter_zi``), cached because solving for it costs more than
    filtering one ECG."""
    from scipy.signal import butter, lfilter_zi

    b, a = butter(1, cutoff_hz, btype="highpass", fs=fs_hz)
    return np.asarray(b), np.asarray(a), np.asarray(lfilter_zi(b, a))


def highpass(signal: np.ndarray, fs_hz: float, cutoff_hz: float = 0.5) -> np.ndarray:
    """Zero-phase 1st-order Butterworth high-pass of ``(C, T)`` (removes baseline wander).

    The same computation as ``scipy.signal.filtfilt(b, a, x, axis=-1, padlen=3 * max(len(a),
    len(b)))`` (odd extension, forward and backward passes started from the steady state of the
    edge values), without re-deriving the initial state on every call.
    """
    from scipy.signal import lfilter

    b, a, zi = _highpass_coeffs(float(cutoff_hz), float(fs_hz))
    n = signal.shape[-1]
    if n < 2:
        return signal - signal.mean(axis=-1, keepdims=True)
    x = np.asarray(signal, dtype=np.float64)
    pad = min(3 * max(len(a), len(b)), n - 1)
    if pad:
        left = 2 * x[..., :1] - x[..., pad:0:-1]
        right = 2 * x[..., -1:] - x[..., -2 : -pad - 2 : -1]
        ext = np.concatenate([left, x, right], axis=-1)
    else:
        ext = x
    zi_shape = (*ext.shape[:-1], len(zi))
    y, _ = lfilter(b, a, ext, axis=-1, zi=np.broadcast_to(zi, zi_shape) * ext[..., :1])
    y = y[..., ::-1]
    y, _ = lfilter(b, a, y, axis=-1, zi=np.broadcast_to(zi, zi_shape) * y[..., :1])
    y = y[..., ::-1]
    if pad:
        y = y[..., pad:-pad]
    return np.ascontiguousarray(y, dtype=np.float32)


def crop_or_pad(
    signal: np.ndarray,
    length: int,
    crop: Literal["center", "random"] = "center",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Crop ``(C, T)`` to ``length`` samples (center or random start) or zero-pad at the end."""
    n = signal.shape[-1]
    if n == length:
        return signal
    if n < length:
        out = np.zeros((*signal.shape[:-1], length), dtype=signal.dtype)
        out[..., :n] = signal
        return out
    if crop == "random":
        start = int((rng or np.random.default_rng()).integers(0, n - length + 1))
    else:
        start = (n - length) // 2
    return signal[..., start : start + length]


def preprocess_ecg(
    ecg: Ecg, cfg: EcgTransformConfig, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Impute, resample, high-pass, standardise and crop/pad one ECG (steps in the module doc).

    Args:
        ecg: a record from :func:`datamodules.ecg_io.read_ecg` (``(12, T)`` mV, NaN where missing).
        cfg: preprocessing settings.
        rng: random generator for ``crop="random"`` (a fresh unseeded one when None).

    Returns:
        float32 ``(12, cfg.length)``, NaN-free; rows of masked leads are zero.
    """
    signal = np.asarray(ecg.signal)
    if signal.ndim != 2:
        raise ValueError(f"ECG signal must be (leads, T), got shape {signal.shape}")
    if not (math.isfinite(ecg.fs) and ecg.fs > 0):
        raise ValueError(f"ECG sampling rate must be positive, got {ecg.fs}")
    x = impute_nan(signal)
    x = resample(x, float(ecg.fs), cfg.fs_hz)
    if cfg.highpass_hz > 0:
        x = highpass(x, cfg.fs_hz, cfg.highpass_hz)
    if cfg.standardize == "per_lead":
        # the same operations as ``x.std`` (which centres x itself), sharing the centred copy
        centred = x - x.mean(axis=-1, keepdims=True)
        std = np.sqrt(np.mean(centred * centred, axis=-1, keepdims=True))
        x = np.divide(centred, np.where(std < _STD_FLOOR, 1.0, std), out=centred)
    elif cfg.standardize == "global":
        x = (x - np.float32(cfg.global_mean)) / np.float32(cfg.global_std)
    x = crop_or_pad(x, cfg.length, cfg.crop, rng)
    # impute_nan copied the input, so x is ours: only a crop view or another dtype needs a copy
    out = np.ascontiguousarray(x, dtype=np.float32)
    mask = np.asarray(ecg.lead_mask, dtype=bool)
    if mask.shape == (out.shape[0],):
        out[~mask] = 0.0
    return out


def fit_global_standardizer(
    signals: Iterable[np.ndarray], masks: Iterable[np.ndarray] | None = None
) -> tuple[float, float]:
    """Pooled mean and std (over leads and samples) of training signals, for ``"global"``.

    Typical use: preprocess the training records with ``standardize="none"``, fit here, then use
    ``dataclasses.replace(cfg, standardize="global", global_mean=m, global_std=s)`` everywhere.

    Args:
        signals: arrays ``(12, T)`` (or one ``(N, 12, T)`` array); NaN/inf are skipped.
        masks: optional bool ``(12,)`` per signal; only True leads are counted.

    Returns:
        ``(mean, std)`` in the signals' units; std is floored at 1e-6.
    """
    count = 0
    mean = 0.0
    m2 = 0.0
    mask_iter = iter(masks) if masks is not None else None
    for sig in signals:
        arr = np.asarray(sig, dtype=np.float64)
        if mask_iter is not None:
            mask = next(mask_iter, None)
            if mask is None:
                raise ValueError("fit_global_standardizer: fewer masks than signals")
            arr = arr[np.asarray(mask, dtype=bool)]
        vals = arr[np.isfinite(arr)]
        n = int(vals.size)
        if n == 0:
            continue
        b_mean = float(vals.mean())
        b_m2 = float(((vals - b_mean) ** 2).sum())
        delta = b_mean - mean
        total = count + n
        mean += delta * n / total
        m2 += b_m2 + delta * delta * count * n / total
        count = total
    if count == 0:
        raise ValueError("fit_global_standardizer: no finite values to fit")
    return mean, max(math.sqrt(m2 / count), _STD_FLOOR)


def ecg_windows(x: np.ndarray, window: int, stride: int) -> np.ndarray:
    """Sliding windows over ``(12, T)`` for test-time aggregation (e.g. 2.5 s, 1.25 s stride).

    Windows start at 0, stride, 2*stride...; when the last one stops short of the end, one more
    window aligned to the end is added. A record shorter than ``window`` is zero-padded.

    Returns:
        float32 ``(n, 12, window)``.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be positive, got {window}, {stride}")
    arr = np.asarray(x, dtype=np.float32)
    n = arr.shape[-1]
    if n <= window:
        return crop_or_pad(arr, window)[None].copy()
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] + window < n:
        starts.append(n - window)
    view = np.lib.stride_tricks.sliding_window_view(arr, window, axis=-1)  # (12, n-w+1, w)
    return np.ascontiguousarray(view[:, starts].transpose(1, 0, 2))


# --------------------------------------------------------------------------------------------
# CXR


def preprocess_cxr(cxr: Cxr, cfg: CxrTransformConfig) -> np.ndarray:
    """Keep-aspect resize (longer side = ``image_size``), center zero-pad, normalise.

    Returns:
        float32 ``(S, S)`` with ``S = cfg.image_size``: ``(pixel - mean) / std``; padding is the
        value of black (``-mean / std``).
    """
    from PIL import Image

    pixels = np.asarray(cxr.pixels, dtype=np.float32)
    if pixels.ndim != 2 or pixels.size == 0:
        raise ValueError(f"CXR pixels must be a non-empty (H, W) array, got {pixels.shape}")
    size = int(cfg.image_size)
    h, w = pixels.shape
    scale = size / max(h, w)
    new_h = min(size, max(1, round(h * scale)))
    new_w = min(size, max(1, round(w * scale)))
    if (new_h, new_w) != (h, w):
        clean = np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0)
        img = Image.fromarray(clean)  # float32 -> mode "F"
        resized = np.asarray(
            img.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0),
            dtype=np.float32,
        )
    else:
        resized = np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0)
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = np.clip(resized, 0.0, 1.0)
    out -= np.float32(cfg.mean)
    out *= np.float32(1.0 / cfg.std)
    return out


def config_hash(*cfgs: object) -> str:
    """Stable 16-hex-digit hash of preprocessing configs (dataclasses), for cache keys.

    Depends on the config class names, every field value and :data:`PREPROCESS_VERSION`.
    """
    payload: list[object] = [PREPROCESS_VERSION]
    for cfg in cfgs:
        if not is_dataclass(cfg) or isinstance(cfg, type):
            raise TypeError(f"config_hash expects dataclass configs, got {type(cfg).__name__}")
        payload.append([type(cfg).__name__, asdict(cfg)])
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
