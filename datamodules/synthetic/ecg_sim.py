"""Procedural 12-lead ECG simulator (numpy only).

Design: a time-varying cardiac dipole ``D(t)`` (3-D: x = patient's left, y = inferior,
z = anterior) is the sum of Gaussian waves (P, septal Q, R, S, T, plus condition-specific
extra waves and an ST-segment plateau) placed on every beat; each lead is a fixed projection
``lead = L @ D`` (Einthoven/Goldberger relations hold exactly for the limb leads, the precordial
leads sit on a horizontal circle from V1 right-anterior to V6 left). Conditions change wave timing,
amplitude and direction (rate, irregular RR, missing P, fibrillatory/flutter baseline, wide QRS
with RSR' in V1 or broad notched R in V5-6, Q waves, ST shifts, high voltage, pacing spikes).
Recording artefacts: baseline wander, mains hum, white noise.

The approach follows the idea of ECGSYN / neurokit2 ``ecg_simulate`` (Gaussian waves) but is an
independent implementation with per-lead projection and per-condition morphology.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from datamodules.lead_names import CANONICAL_LEADS

__all__ = [
    "CANONICAL_LEADS",
    "ECG_CONDITIONS",
    "EcgParams",
    "SimulatedEcg",
    "sample_ecg_params",
    "simulate_ecg",
]


#: ECG conditions the simulator can express (names of ``datamodules.labels.ECG_LABELS``).
ECG_CONDITIONS: tuple[str, ...] = (
    "NORM",
    "AFIB",
    "AFLT",
    "SBRAD",
    "STACH",
    "1AVB",
    "LBBB",
    "RBBB",
    "MI",
    "ISCH",
    "LVH",
    "LQT",
    "PACE",
)

Rhythm = Literal["sinus", "afib", "aflt", "paced"]
Bbb = Literal["none", "lbbb", "rbbb"]
MiTerritory = Literal["none", "inferior", "anterior"]

# Precordial electrode angles in the horizontal plane (degrees from +x towards anterior +z) and
# gains (closer to the heart = larger deflections).
_PRECORDIAL_DEG = (118.0, 96.0, 76.0, 57.0, 32.0, 6.0)
_PRECORDIAL_GAIN = (1.05, 1.35, 1.45, 1.35, 1.15, 0.95)


def _unit(v: tuple[float, float, float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return a / float(np.linalg.norm(a))


def lead_matrix(precordial_offset_deg: float = 0.0) -> np.ndarray:
    """Projection matrix ``(12, 3)`` from the dipole to the canonical leads."""
    lead_i = np.array([1.0, 0.0, 0.0])
    lead_ii = np.array([0.5, math.sqrt(3) / 2, 0.0])
    rows = [
        lead_i,
        lead_ii,
        lead_ii - lead_i,  # III
        -(lead_i + lead_ii) / 2,  # aVR
        lead_i - lead_ii / 2,  # aVL
        lead_ii - lead_i / 2,  # aVF
    ]
    for deg, gain in zip(_PRECORDIAL_DEG, _PRECORDIAL_GAIN):
        phi = math.radians(deg + precordial_offset_deg)
        rows.append(gain * np.array([math.cos(phi), 0.15, math.sin(phi)]))
    return np.stack(rows)


@dataclass(frozen=True)
class EcgParams:
    """Per-patient ECG morphology and rhythm.

    Attributes:
        heart_rate_bpm: mean ventricular rate.
        rhythm: ``sinus``, ``afib`` (irregular RR, no P, fibrillatory baseline), ``aflt``
            (sawtooth flutter waves, regular 2:1/4:1 conduction) or ``paced`` (pacing spikes).
        rr_jitter: fractional beat-to-beat RR standard deviation.
        pr_s: PR interval (P centre to QRS onset is ``pr_s`` minus a P half-width), seconds.
        qtc_s: Bazett-corrected QT in seconds.
        qrs_s: QRS duration in seconds (about 0.09 normal, >= 0.13 bundle branch block).
        qrs_axis_deg: frontal QRS axis.
        amp_scale: overall amplitude factor (body habitus).
        voltage: QRS voltage factor (about 2.3 for LVH).
        lvh_strain: lateral T inversion (strain pattern).
        bbb: bundle branch block type.
        mi: infarct territory (Q waves, ST elevation, T inversion in that territory).
        mi_st_mv: ST elevation of the infarct, mV.
        isch_st_mv: diffuse ST depression, mV (0 = none).
        t_scale: T-wave amplitude factor (negative = inverted).
        flutter_hz: atrial flutter rate in Hz (rhythm ``aflt``).
        fib_mv: fibrillatory/flutter wave amplitude, mV.
        precordial_offset_deg: electrode placement variation.
        noise_mv: white noise standard deviation, mV.
        wander_mv: baseline wander amplitude, mV.
        mains_hz: mains frequency (50 or 60).
        mains_mv: mains hum amplitude, mV.
    """

    heart_rate_bpm: float = 72.0
    rhythm: Rhythm = "sinus"
    rr_jitter: float = 0.03
    pr_s: float = 0.16
    qtc_s: float = 0.41
    qrs_s: float = 0.09
    qrs_axis_deg: float = 50.0
    amp_scale: float = 1.0
    voltage: float = 1.0
    lvh_strain: bool = False
    bbb: Bbb = "none"
    mi: MiTerritory = "none"
    mi_st_mv: float = 0.0
    isch_st_mv: float = 0.0
    t_scale: float = 1.0
    flutter_hz: float = 5.0
    fib_mv: float = 0.0
    precordial_offset_deg: float = 0.0
    noise_mv: float = 0.012
    wander_mv: float = 0.08
    mains_hz: float = 50.0
    mains_mv: float = 0.005

    def __post_init__(self) -> None:
        if not 20.0 <= self.heart_rate_bpm <= 250.0:
            raise ValueError(f"heart_rate_bpm must be in [20, 250], got {self.heart_rate_bpm}")
        if self.rhythm not in ("sinus", "afib", "aflt", "paced"):
            raise ValueError(f"unknown rhythm {self.rhythm!r}")
        if self.bbb not in ("none", "lbbb", "rbbb"):
            raise ValueError(f"unknown bbb {self.bbb!r}")
        if self.mi not in ("none", "inferior", "anterior"):
            raise ValueError(f"unknown mi territory {self.mi!r}")
        if not 0.05 <= self.qrs_s <= 0.25:
            raise ValueError(f"qrs_s must be in [0.05, 0.25] s, got {self.qrs_s}")


@dataclass(frozen=True)
class SimulatedEcg:
    """One simulated recording.

    Attributes:
        signal: float64 ``(12, T)`` in mV, :data:`CANONICAL_LEADS` order.
        fs_hz: sampling rate.
        rr_ms: mean RR interval of the recording.
        pr_ms, qrs_ms, qt_ms: intervals (PR and P axis are None without P waves).
        p_axis_deg, qrs_axis_deg, t_axis_deg: frontal axes.
        r_peaks_s: R-peak (QRS reference) times in seconds.
    """

    signal: np.ndarray
    fs_hz: float
    rr_ms: float
    pr_ms: float | None
    qrs_ms: float
    qt_ms: float
    p_axis_deg: float | None
    qrs_axis_deg: float
    t_axis_deg: float
    r_peaks_s: np.ndarray


def sample_ecg_params(
    conditions: Iterable[str],
    rng: np.random.Generator,
    *,
    mi_territory: MiTerritory | None = None,
) -> EcgParams:
    """Draw morphology parameters expressing ``conditions`` plus patient variation.

    Args:
        conditions: subset of :data:`ECG_CONDITIONS`; ``NORM`` (or an empty set) = normal sinus.
            Rhythm conditions (AFIB, AFLT, SBRAD, STACH, PACE) are mutually exclusive.
        rng: random generator (patient stream).
        mi_territory: infarct territory for ``MI`` (random when None).
    """
    cond = set(conditions)
    unknown = cond - set(ECG_CONDITIONS)
    if unknown:
        raise ValueError(f"unknown ECG conditions: {sorted(unknown)}")
    rhythm: Rhythm = "sinus"
    rr_jitter = float(rng.uniform(0.015, 0.04))
    hr = float(rng.uniform(60.0, 96.0))
    fib = 0.0
    flutter = float(rng.uniform(4.6, 5.2))
    if "SBRAD" in cond:
        hr = float(rng.uniform(38.0, 51.0))
    elif "STACH" in cond:
        hr = float(rng.uniform(112.0, 150.0))
    elif "AFIB" in cond:
        rhythm = "afib"
        hr = float(rng.uniform(75.0, 140.0))
        rr_jitter = float(rng.uniform(0.16, 0.26))
        fib = float(rng.uniform(0.05, 0.11))
    elif "AFLT" in cond:
        rhythm = "aflt"
        ratio = 2.0 if rng.random() < 0.6 else 4.0
        hr = flutter * 60.0 / ratio
        rr_jitter = 0.004
        fib = float(rng.uniform(0.12, 0.2))
    elif "PACE" in cond:
        rhythm = "paced"
        hr = float(rng.choice([60.0, 70.0, 72.0, 80.0]))
        rr_jitter = 0.002
    axis = float(np.clip(rng.normal(50.0, 18.0), -20.0, 95.0))
    qrs = float(rng.uniform(0.08, 0.10))
    bbb: Bbb = "none"
    if "LBBB" in cond or rhythm == "paced":
        bbb = "lbbb"
        qrs = float(rng.uniform(0.135, 0.165))
        axis = float(rng.uniform(-45.0, 20.0)) if rhythm == "paced" else axis - 20.0
    elif "RBBB" in cond:
        bbb = "rbbb"
        qrs = float(rng.uniform(0.13, 0.16))
    voltage = float(rng.uniform(2.1, 2.7)) if "LVH" in cond else float(rng.uniform(0.85, 1.15))
    lvh_strain = "LVH" in cond and rng.random() < 0.35
    mi: MiTerritory = "none"
    mi_st = 0.0
    if "MI" in cond:
        mi = mi_territory or ("inferior" if rng.random() < 0.6 else "anterior")
        mi_st = float(rng.uniform(0.12, 0.3))
    isch = float(rng.uniform(0.12, 0.25)) if "ISCH" in cond else 0.0
    t_scale = float(rng.uniform(0.8, 1.2))
    if isch:
        t_scale = float(rng.uniform(-0.5, 0.3))
    return EcgParams(
        heart_rate_bpm=hr,
        rhythm=rhythm,
        rr_jitter=rr_jitter,
        pr_s=float(rng.uniform(0.24, 0.32)) if "1AVB" in cond else float(rng.uniform(0.13, 0.18)),
        qtc_s=float(rng.uniform(0.50, 0.56)) if "LQT" in cond else float(rng.uniform(0.38, 0.43)),
        qrs_s=qrs,
        qrs_axis_deg=axis,
        amp_scale=float(rng.uniform(0.8, 1.2)),
        voltage=voltage,
        lvh_strain=lvh_strain,
        bbb=bbb,
        mi=mi,
        mi_st_mv=mi_st,
        isch_st_mv=isch,
        t_scale=t_scale,
        flutter_hz=flutter,
        fib_mv=fib,
        precordial_offset_deg=float(rng.uniform(-7.0, 7.0)),
        noise_mv=float(rng.uniform(0.006, 0.018)),
        wander_mv=float(rng.uniform(0.03, 0.14)),
        mains_hz=50.0 if rng.random() < 0.5 else 60.0,
        mains_mv=float(rng.uniform(0.0, 0.012)),
    )


@dataclass(frozen=True)
class _Wave:
    t_s: float  # centre relative to the QRS reference time
    sigma_s: float
    amp_mv: float
    direction: np.ndarray  # (3,) unit vector


def _frontal(deg: float, z: float) -> np.ndarray:
    r = math.radians(deg)
    return _unit((math.cos(r), math.sin(r), z))


def _beat_waves(p: EcgParams, rr_s: float, voltage_jitter: float) -> tuple[list[_Wave], float]:
    """Waves of one beat and the ST vector amplitude reference; returns (waves, t_end_s)."""
    v = p.voltage * voltage_jitter
    qrs_on = -0.04 if p.bbb == "none" else -0.045
    waves: list[_Wave] = []
    if p.rhythm == "sinus":
        waves.append(_Wave(qrs_on - p.pr_s + 0.05, 0.022, 0.17, _frontal(55.0, 0.25)))
    r_dir = _frontal(p.qrs_axis_deg, -0.32)
    if p.bbb == "none":
        waves.append(_Wave(-0.026, 0.009, 0.14, _unit((-0.6, 0.15, 0.78))))  # septal q / V1 r
        waves.append(_Wave(0.0, 0.0105, 1.45 * v, r_dir))
        waves.append(_Wave(0.027, 0.0105, 0.45 * v, _unit((-0.35, -0.45, -0.8))))
    elif p.bbb == "rbbb":
        waves.append(_Wave(-0.03, 0.009, 0.14, _unit((-0.6, 0.15, 0.78))))
        waves.append(_Wave(-0.005, 0.0105, 1.35 * v, r_dir))
        waves.append(_Wave(0.024, 0.0105, 0.35 * v, _unit((-0.35, -0.45, -0.8))))
        t_rprime = qrs_on + p.qrs_s - 0.036
        waves.append(_Wave(t_rprime, 0.017, 0.85, _unit((-0.75, 0.0, 0.7))))
    else:  # lbbb (also the paced morphology): no septal q, broad notched R leftward-posterior
        lb_dir = _frontal(p.qrs_axis_deg, -0.55)
        waves.append(_Wave(qrs_on + 0.042, 0.02, 1.0 * v, lb_dir))
        waves.append(_Wave(qrs_on + p.qrs_s - 0.045, 0.021, 1.1 * v, lb_dir))
    # infarct: early Q vector pointing away from the territory
    if p.mi == "inferior":
        waves.append(_Wave(qrs_on + 0.018, 0.012, 0.65, _unit((0.1, -1.0, 0.0))))
    elif p.mi == "anterior":
        waves.append(_Wave(qrs_on + 0.018, 0.013, 0.85, _unit((0.15, 0.0, -1.0))))
    # repolarisation
    qt = p.qtc_s * math.sqrt(rr_s)
    t_sigma = 0.045 + 0.012 * (p.qtc_s > 0.47)
    t_centre = qrs_on + qt - 2.1 * t_sigma
    t_dir = _unit((0.6, 0.6, 0.4))
    t_amp = 0.33 * p.t_scale
    if p.bbb == "lbbb":
        t_dir = _unit((-0.7, -0.25, 0.55))  # discordant
        t_amp = 0.35
    elif p.bbb == "rbbb":
        t_dir = _unit((0.65, 0.6, -0.1))
    if p.lvh_strain:
        t_dir = _unit((-0.7, -0.2, 0.2))
        t_amp = 0.25 * v / 2.3
    if p.mi == "inferior":
        t_dir = _unit((0.7, -0.5, 0.4))
    elif p.mi == "anterior":
        t_dir = _unit((0.6, 0.5, -0.6))
    waves.append(_Wave(t_centre, t_sigma, t_amp, t_dir))
    return waves, t_centre


def _st_vector(p: EcgParams) -> np.ndarray:
    """ST-segment (injury current) vector in mV, ``(3,)``."""
    st = np.zeros(3)
    if p.mi == "inferior":
        st += p.mi_st_mv * _unit((0.0, 1.0, 0.05))
    elif p.mi == "anterior":
        st += p.mi_st_mv * _unit((0.15, 0.0, 1.0))
    if p.isch_st_mv:
        st -= p.isch_st_mv * _unit((0.6, 0.65, 0.45))
    if p.bbb == "lbbb":
        st += 0.08 * _unit((-0.7, -0.2, 0.6))
    if p.lvh_strain:
        st += 0.08 * _unit((-0.7, -0.3, 0.1))
    return st


def _beat_times(p: EcgParams, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    mean_rr = 60.0 / p.heart_rate_bpm
    n_max = int(duration_s / mean_rr * 2) + 8
    if p.rhythm == "afib":
        rr = mean_rr * np.exp(rng.normal(0.0, p.rr_jitter, n_max))
        rr = np.clip(rr, 0.3, 2.2)
    else:
        k = np.arange(n_max)
        resp = 0.025 * np.sin(2 * np.pi * k * mean_rr / rng.uniform(3.5, 5.5) + rng.uniform(0, 6.3))
        if p.rhythm != "sinus":
            resp = resp * 0.0
        rr = mean_rr * (1.0 + resp + rng.normal(0.0, p.rr_jitter, n_max))
    start = -float(rng.uniform(0.05, 0.95)) * mean_rr
    times = start + np.concatenate([[0.0], np.cumsum(rr[:-1])])
    return times[times < duration_s + 1.0]


def simulate_ecg(
    params: EcgParams,
    rng: np.random.Generator,
    *,
    fs_hz: float = 500.0,
    duration_s: float = 10.0,
) -> SimulatedEcg:
    """Render one 12-lead recording.

    Args:
        params: morphology and rhythm (see :func:`sample_ecg_params`).
        rng: random generator (recording stream: RR jitter, noise, wander).
        fs_hz: sampling rate in Hz.
        duration_s: record length in seconds.

    Returns:
        A :class:`SimulatedEcg` with ``signal`` ``(12, round(fs_hz*duration_s))`` in mV.
    """
    n = round(fs_hz * duration_s)
    t = np.arange(n) / fs_hz
    dipole = np.zeros((3, n))
    beats = _beat_times(params, duration_s, rng)
    st_vec = _st_vector(params) * params.amp_scale
    rr_all = np.diff(beats) if beats.size > 1 else np.array([60.0 / params.heart_rate_bpm])
    qrs_on = -0.04 if params.bbb == "none" else -0.045
    for b, tb in enumerate(beats):
        rr_prev = float(rr_all[max(b - 1, 0)]) if rr_all.size else 60.0 / params.heart_rate_bpm
        waves, t_centre = _beat_waves(params, rr_prev, float(rng.uniform(0.95, 1.05)))
        for w in waves:
            c = tb + w.t_s
            lo = int(max(0, math.floor((c - 5 * w.sigma_s) * fs_hz)))
            hi = int(min(n, math.ceil((c + 5 * w.sigma_s) * fs_hz) + 1))
            if hi <= lo:
                continue
            g = np.exp(-0.5 * ((t[lo:hi] - c) / w.sigma_s) ** 2)
            dipole[:, lo:hi] += (params.amp_scale * w.amp_mv) * w.direction[:, None] * g[None, :]
        if np.any(st_vec):
            j = tb + qrs_on + params.qrs_s
            end = tb + t_centre
            lo = int(max(0, math.floor((j - 0.03) * fs_hz)))
            hi = int(min(n, math.ceil((end + 0.08) * fs_hz) + 1))
            if hi > lo:
                tt = t[lo:hi]
                plateau = 1.0 / (1.0 + np.exp(-(tt - j) / 0.006))
                plateau *= 1.0 / (1.0 + np.exp((tt - end) / 0.025))
                dipole[:, lo:hi] += st_vec[:, None] * plateau[None, :]
        if params.rhythm == "paced":
            c = tb + qrs_on - 0.004
            idx = round(c * fs_hz)
            if 0 <= idx < n:
                width = max(1, round(0.002 * fs_hz))
                dipole[:, idx : min(n, idx + width)] += 2.5 * _unit((0.3, 0.8, 0.5))[:, None]
    # atrial activity without P waves
    if params.rhythm == "afib" and params.fib_mv > 0:
        f = np.zeros(n)
        for _ in range(3):
            fk = rng.uniform(4.5, 7.5)
            mod = 0.6 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.3))
            f += np.sin(2 * np.pi * fk * t + rng.uniform(0, 6.3) + mod)
        dipole += (params.fib_mv / 1.7) * _unit((0.25, 0.5, 0.85))[:, None] * f[None, :]
    elif params.rhythm == "aflt" and params.fib_mv > 0:
        phase = (t * params.flutter_hz + rng.uniform(0, 1)) % 1.0
        saw = np.where(
            phase < 0.8, 1.0 - 2.5 * phase, -1.0 + 5.0 * (phase - 0.8)
        )  # slow down, fast up
        dipole += params.fib_mv * _unit((0.1, -1.0, 0.3))[:, None] * saw[None, :]
    leads = lead_matrix(params.precordial_offset_deg) @ dipole
    # artefacts: per-lead baseline wander (two slow sinusoids each), mains hum, white noise
    amp = rng.uniform(0.3, 1.0, size=(12, 2, 1))
    freq = rng.uniform(0.05, 0.45, size=(12, 2, 1))
    phase = rng.uniform(0.0, 6.3, size=(12, 2, 1))
    coarse = np.arange(0.0, duration_s + 0.1, 0.05)  # wander is slow: evaluate at 20 Hz
    wander_c = (amp * np.sin(2 * np.pi * freq * coarse[None, None, :] + phase)).sum(axis=1)
    pos = t / 0.05
    i0 = np.minimum(pos.astype(np.int64), coarse.size - 2)
    frac = pos - i0
    wander = wander_c[:, i0] * (1.0 - frac) + wander_c[:, i0 + 1] * frac
    leads += params.wander_mv * wander / 2.0
    leads += params.mains_mv * np.sin(2 * np.pi * params.mains_hz * t + rng.uniform(0, 6.3))[None]
    leads += rng.normal(0.0, params.noise_mv, size=leads.shape)
    inside = beats[(beats >= 0) & (beats < duration_s)]
    rr_ms = (
        float(np.mean(np.diff(inside)) * 1000.0)
        if inside.size > 1
        else 60000.0 / params.heart_rate_bpm
    )
    qt_ms = params.qtc_s * math.sqrt(rr_ms / 1000.0) * 1000.0
    has_p = params.rhythm == "sinus"
    t_axis = params.qrs_axis_deg - 10.0
    if params.bbb == "lbbb":
        t_axis = params.qrs_axis_deg + 170.0
    elif params.mi == "inferior":
        t_axis = -35.0
    return SimulatedEcg(
        signal=leads,
        fs_hz=fs_hz,
        rr_ms=rr_ms,
        pr_ms=params.pr_s * 1000.0 if has_p else None,
        qrs_ms=params.qrs_s * 1000.0,
        qt_ms=qt_ms,
        p_axis_deg=55.0 if has_p else None,
        qrs_axis_deg=params.qrs_axis_deg,
        t_axis_deg=float((t_axis + 180.0) % 360.0 - 180.0),
        r_peaks_s=inside,
    )
