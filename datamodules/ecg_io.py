"""Read one 12-lead ECG (WFDB ``.hea`` + ``.dat``/``.mat``, or DICOM waveform) into an ``Ecg``.

Whatever the source, the result has leads in :data:`CANONICAL_LEADS` order (matched by name,
case-insensitively), amplitudes in mV, and a NaN row plus ``lead_mask=False`` for each lead the
source lacks or whose samples are all invalid. NaN gaps inside a present lead are kept as NaN;
:func:`datamodules.transforms.preprocess_ecg` imputes them.

Documented repairs (each one is listed in ``ecg.meta["repairs"]`` and logged):

* missing leads (e.g. a 2-lead record) load as NaN rows with the mask False, unless fewer than
  ``min_leads`` leads are present, which raises :class:`EcgReadError`;
* channels that are not one of the 12 leads (``X``, ``Pleth``...) are ignored; duplicates of a lead
  are ignored after the first; inverted leads such as ``-aVR`` are flipped back;
* WFDB units that are not stated (``NU`` or absent) are taken as mV (the WFDB default).

Everything else that is wrong raises :class:`EcgReadError` naming the file and the problem: a
truncated or oversized signal file, a missing signal file, unreadable headers, non-voltage units,
an implausible sampling rate (outside ``[MIN_FS_HZ, MAX_FS_HZ]``), non-physical amplitudes
(beyond ``MAX_ABS_MV``, i.e. a wrong ADC gain), no samples, corrupt DICOM.

Speed: common WFDB records (one signal file in format 16 or 61, one sample per frame: the PTB-XL,
MIMIC-IV-ECG and PhysioNet/CinC layouts) have their header parsed here and their samples read with
one ``numpy.fromfile``: about 1 ms for 12 x 5000 samples, several times faster than
``wfdb.rdrecord``, whose header parsing alone costs ~3 ms (pandas lookups). Every other WFDB variant
goes through ``wfdb.rdrecord``. Tests check that both paths agree with ``wfdb``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from datamodules.errors import EcgReadError
from datamodules.leads import UNSTATED_UNITS, LeadMap, canonical_lead, map_leads, unit_to_mv
from datamodules.sniff import open_dicom, sniff
from datamodules.types import CANONICAL_LEADS, Ecg

if TYPE_CHECKING:
    from pydicom import Dataset

log = logging.getLogger(__name__)

#: Plausible sampling rates of a diagnostic ECG, in Hz; anything outside raises EcgReadError.
MIN_FS_HZ: float = 50.0
MAX_FS_HZ: float = 20_000.0
#: Largest believable amplitude in mV (1 kV); beyond it (or on float32 overflow) the header's ADC
#: gain or units are wrong and EcgReadError is raised (found by tests/datamodules/test_fuzz_*).
MAX_ABS_MV: float = 1e6

WFDB_SUFFIXES: frozenset[str] = frozenset({".hea", ".dat", ".mat"})
DICOM_SUFFIXES: frozenset[str] = frozenset({".dcm", ".dicom"})

#: Bits per sample of the WFDB storage formats whose file size can be checked.
_FMT_BITS: dict[str, float] = {
    "8": 8,
    "16": 16,
    "24": 24,
    "32": 32,
    "61": 16,
    "80": 8,
    "160": 16,
    "212": 12,
    "310": 32 / 3,
    "311": 32 / 3,
}
_FAST_DTYPES: dict[str, str] = {"16": "<i2", "61": ">i2"}
_INVALID_16 = -32768  # WFDB "invalid sample" code of the 16-bit formats

_FMT_SPEC = re.compile(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$")
_GAIN_SPEC = re.compile(r"^([-+]?[\d.]+(?:[eE][-+]?\d+)?)(?:\((-?\d+)\))?(?:/(\S+))?$")


def read_ecg(path: str | Path, *, min_leads: int = 1) -> Ecg:
    """Read a 12-lead ECG.

    Args:
        path: a WFDB record stem (``.../00001_lr``), its ``.hea``, ``.dat`` or ``.mat`` file, or a
            DICOM 12-lead waveform (``.dcm``).
        min_leads: fewest of the 12 leads that must be present; fewer raises EcgReadError.

    Returns:
        :class:`Ecg` with ``signal`` float32 ``(12, T)`` in mV in canonical lead order, ``fs`` in
        Hz, ``lead_mask`` bool ``(12,)`` and PHI-free ``meta`` (format, source lead names and units,
        missing leads, repairs...).

    Raises:
        EcgReadError: the file is missing, unreadable or invalid (message names file and problem).
    """
    if min_leads < 1 or min_leads > len(CANONICAL_LEADS):
        raise ValueError(f"min_leads must be in 1..12, got {min_leads}")
    kind, target = _resolve(Path(path))
    if kind == "dicom":
        return _read_dicom_waveform(target, min_leads)
    return _read_wfdb(target, min_leads)


def _resolve(p: Path) -> tuple[str, Path]:
    """Decide between WFDB and DICOM; for WFDB return the record stem (no extension)."""
    suffix = p.suffix.lower()
    if suffix in WFDB_SUFFIXES:
        stem = Path(str(p)[: -len(p.suffix)])
        if not Path(f"{stem}.hea").is_file():
            what = "record" if suffix == ".hea" else "signal file"
            raise EcgReadError(p, f"no WFDB header {stem.name}.hea for this {what}")
        return "wfdb", stem
    if p.is_file():
        try:
            kind = sniff(p)
        except OSError as exc:
            raise EcgReadError(p, f"cannot open file ({exc.strerror or exc})") from None
        if kind == "dicom" or (kind is None and suffix in DICOM_SUFFIXES):
            return "dicom", p
        if Path(f"{p}.hea").is_file():
            return "wfdb", p
        what = f"'{suffix}'" if suffix else "without extension"
        raise EcgReadError(
            p,
            f"unsupported ECG file {what} (content: {kind or 'unrecognised'}); expected a WFDB "
            "record (.hea with .dat/.mat) or a DICOM waveform (.dcm)",
        )
    if suffix in DICOM_SUFFIXES:
        raise EcgReadError(p, "file not found")
    if Path(f"{p}.hea").is_file():
        return "wfdb", p
    raise EcgReadError(p, f"no such ECG record (neither {p.name} nor {p.name}.hea exists)")


# --------------------------------------------------------------------------------------------
# Shared assembly: source columns -> canonical (12, T) float32 in mV


@dataclass(frozen=True)
class _Channels:
    """Source channels and the affine map of each to mV: ``mv = raw * scale + shift``."""

    names: tuple[str, ...]
    units: tuple[str, ...]
    scale: np.ndarray  # (C,) float64, mV per raw unit
    shift: np.ndarray  # (C,) float64, mV
    invalid: int | None = None  # raw code meaning "no sample"


def _assemble(
    path: Path,
    columns: np.ndarray,
    ch: _Channels,
    fs: float,
    min_leads: int,
    meta: dict[str, Any],
    repairs: list[str],
) -> Ecg:
    """Reorder ``columns`` ``(T, C)`` by lead name into a validated :class:`Ecg`."""
    _check_fs(path, fs)
    n_samples = int(columns.shape[0])
    if n_samples == 0:
        raise EcgReadError(path, "record has no samples")
    lead_map = _map_or_raise(path, ch.names, min_leads)
    out = np.full((len(CANONICAL_LEADS), n_samples), np.nan, dtype=np.float32)
    mask = lead_map.mask
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked just below
        for k, (src, sign) in enumerate(zip(lead_map.source, lead_map.sign)):
            if src < 0:
                continue
            col = columns[:, src]
            row = out[k]
            np.multiply(col, ch.scale[src] * sign, out=row, casting="unsafe")
            if ch.shift[src] != 0.0:
                row += np.float32(ch.shift[src] * sign)
            if ch.invalid is not None:
                row[col == ch.invalid] = np.nan
        wild = (np.abs(out) > MAX_ABS_MV).any(axis=1)  # NaN compares False, inf True
    if wild.any():
        raise EcgReadError(
            path,
            f"leads {[CANONICAL_LEADS[k] for k in np.flatnonzero(wild)]} have non-physical "
            f"amplitudes (beyond {MAX_ABS_MV:g} mV or float32 overflow); the ADC gain or "
            "units are wrong",
        )
    _note_lead_repairs(path, lead_map, repairs)
    finite = np.isfinite(out)
    empty = mask & ~finite.any(axis=1)
    if empty.any():
        names = [CANONICAL_LEADS[k] for k in np.flatnonzero(empty)]
        repairs.append(f"leads {names} have no valid samples; masked")
        mask = mask & ~empty
        out[empty] = np.nan
        if int(mask.sum()) < min_leads:
            raise EcgReadError(
                path, f"only {int(mask.sum())} leads hold valid samples (min_leads={min_leads})"
            )
    n_valid = int(finite[mask].sum())
    meta.update(
        n_samples=n_samples,
        source_leads=list(ch.names),
        source_units=list(ch.units),
        missing_leads=[CANONICAL_LEADS[k] for k in np.flatnonzero(~mask)],
        nan_fraction=float(1.0 - n_valid / max(1, int(mask.sum()) * n_samples)),
        repairs=repairs,
    )
    for note in repairs:
        log.info("%s: %s", path.name, note)  # file name only: folders may carry subject ids
    return Ecg(signal=out, fs=float(fs), lead_mask=mask, source=str(path), meta=meta)


def _check_fs(path: Path, fs: float) -> None:
    if not (math.isfinite(fs) and MIN_FS_HZ <= fs <= MAX_FS_HZ):
        raise EcgReadError(
            path,
            f"implausible sampling rate {fs} Hz (expected {MIN_FS_HZ:g}..{MAX_FS_HZ:g} Hz)",
        )


def _map_or_raise(path: Path, names: Sequence[str], min_leads: int) -> LeadMap:
    lead_map = map_leads(names)
    if lead_map.n_present == 0:
        raise EcgReadError(path, f"no recognisable 12-lead names among {list(names)}")
    if lead_map.n_present < min_leads:
        raise EcgReadError(
            path,
            f"only {lead_map.n_present} of 12 leads present "
            f"({[n for n in names if n not in lead_map.unknown]}), fewer than "
            f"min_leads={min_leads}",
        )
    return lead_map


def _note_lead_repairs(path: Path, lead_map: LeadMap, repairs: list[str]) -> None:
    if lead_map.missing:
        repairs.append(f"missing leads {list(lead_map.missing)} set to NaN and masked")
    if lead_map.unknown:
        repairs.append(f"ignored channels that are not 12-lead leads: {list(lead_map.unknown)}")
    if lead_map.duplicates:
        repairs.append(f"ignored duplicate channels: {list(lead_map.duplicates)}")
    if lead_map.inverted:
        repairs.append(f"inverted leads flipped back: {list(lead_map.inverted)}")


def _unit_factors(
    path: Path, names: Sequence[str], units: Sequence[str], repairs: list[str]
) -> np.ndarray:
    """mV factor per channel; unstated units -> mV (repair); non-voltage units of a lead raise."""
    lead_map = map_leads(names)
    used = {src for src in lead_map.source if src >= 0}
    factors = np.ones(len(names), dtype=np.float64)
    assumed: list[str] = []
    for i, unit in enumerate(units):
        f = unit_to_mv(unit)
        if f is not None:
            factors[i] = f
        elif i in used:
            if (unit or "").strip().lower() in UNSTATED_UNITS:
                assumed.append(names[i])
            else:
                raise EcgReadError(path, f"lead {names[i]} has units '{unit}', not a voltage")
    if assumed:
        repairs.append(f"units not stated for {assumed}; assumed mV")
    return factors


# --------------------------------------------------------------------------------------------
# WFDB


@dataclass(frozen=True)
class _FastHeader:
    record: str
    fs: float
    sig_len: int | None
    file_name: str
    dtype: str
    byte_offset: int
    names: tuple[str, ...]
    units: tuple[str, ...]
    gains: tuple[float, ...]
    baselines: tuple[int, ...]
    checksums: tuple[int, ...]


def _parse_header_fast(text: str) -> _FastHeader | None:
    """Parse the common single-file 16-bit header; None means "let wfdb handle it"."""
    lines = [ln.strip() for ln in text.splitlines()]
    body = [ln for ln in lines if ln and not ln.startswith("#")]
    if not body:
        return None
    rec = body[0].split()
    try:
        if len(rec) < 2 or "/" in rec[0]:
            return None
        n_sig = int(rec[1])
        fs = float(rec[2].split("/")[0]) if len(rec) > 2 else 250.0
        sig_len = int(rec[3]) if len(rec) > 3 else None
        if n_sig < 1 or len(body) != 1 + n_sig:  # extra spec lines: malformed, let wfdb judge
            return None
        files, fmts, names, units, gains, bases, sums = set(), set(), [], [], [], [], []
        for line in body[1 : 1 + n_sig]:
            parts = line.split(maxsplit=8)
            if len(parts) < 9:
                return None
            fmt = _FMT_SPEC.match(parts[1])
            gain = _GAIN_SPEC.match(parts[2])
            if not fmt or not gain or fmt.group(1) not in _FAST_DTYPES:
                return None
            if fmt.group(2) not in (None, "1") or fmt.group(3) not in (None, "0"):
                return None
            if float(gain.group(1)) == 0.0:
                return None
            files.add(parts[0])
            fmts.add((fmt.group(1), int(fmt.group(4) or 0)))
            names.append(parts[8].strip())
            units.append(gain.group(3) or "mV")
            gains.append(float(gain.group(1)))
            bases.append(int(gain.group(2)) if gain.group(2) is not None else int(parts[4]))
            sums.append(int(parts[6]))
    except ValueError:
        return None
    if len(files) != 1 or len(fmts) != 1 or "-" in files:
        return None
    (fmt_code, offset) = fmts.pop()
    return _FastHeader(
        record=rec[0],
        fs=fs,
        sig_len=sig_len if sig_len else None,
        file_name=files.pop(),
        dtype=_FAST_DTYPES[fmt_code],
        byte_offset=offset,
        names=tuple(names),
        units=tuple(units),
        gains=tuple(gains),
        baselines=tuple(bases),
        checksums=tuple(sums),
    )


def _read_wfdb(stem: Path, min_leads: int) -> Ecg:
    hea = Path(f"{stem}.hea")
    try:
        text = hea.read_bytes().decode("latin-1")
    except OSError as exc:
        raise EcgReadError(hea, f"cannot read header ({exc.strerror or exc})") from None
    hdr = _parse_header_fast(text)
    if hdr is None:
        return _read_wfdb_library(stem, min_leads)
    repairs: list[str] = []
    _check_fs(hea, hdr.fs)
    n_sig = len(hdr.names)
    data = hea.parent / hdr.file_name
    sig_len = _checked_length(hea, data, hdr.sig_len, n_sig, 16.0, hdr.byte_offset, exact=True)
    try:
        raw = np.fromfile(data, dtype=hdr.dtype, count=sig_len * n_sig, offset=hdr.byte_offset)
    except (OSError, ValueError) as exc:
        raise EcgReadError(data, f"cannot read signal file ({exc})") from None
    raw = raw.reshape(sig_len, n_sig)
    mismatch = _checksum_mismatch(raw, hdr)
    if mismatch:
        log.warning("%s: checksum mismatch for leads %s (file may be corrupt)", data.name, mismatch)
    factors = _unit_factors(hea, hdr.names, hdr.units, repairs)
    gains = np.asarray(hdr.gains, dtype=np.float64)
    scale = factors / gains
    shift = -np.asarray(hdr.baselines, dtype=np.float64) * scale
    channels = _Channels(hdr.names, hdr.units, scale, shift, invalid=_INVALID_16)
    meta: dict[str, Any] = {
        "format": "wfdb",
        "record": hdr.record,
        "signal_file": hdr.file_name,
        "adc_gain": list(hdr.gains),
        "checksum_mismatch": mismatch,
    }
    return _assemble(hea, raw, channels, hdr.fs, min_leads, meta, repairs)


def _checksum_mismatch(raw: np.ndarray, hdr: _FastHeader) -> list[str]:
    """Leads whose sample sum disagrees with the header checksum (all-zero checksums: unset)."""
    if not any(hdr.checksums):
        return []
    sums = raw.sum(axis=0, dtype=np.int64)
    expected = np.asarray(hdr.checksums, dtype=np.int64)
    bad = (sums - expected) % 65536 != 0
    return [hdr.names[i] for i in np.flatnonzero(bad)]


def _checked_length(
    hea: Path,
    data: Path,
    sig_len: int | None,
    n_values_per_frame: int,
    bits: float,
    offset: int,
    *,
    exact: bool,
) -> int:
    """Samples per signal after checking the signal file's size against the header."""
    if not data.is_file():
        raise EcgReadError(data, f"signal file named in {hea.name} is missing")
    size = data.stat().st_size
    frame_bits = bits * n_values_per_frame
    if size < offset:
        raise EcgReadError(data, f"file is truncated ({size} bytes, header offset {offset})")
    held = int((size - offset) * 8 // frame_bits)
    if sig_len is None:
        if held == 0:
            raise EcgReadError(data, "signal file holds no samples")
        return held
    expected = offset + math.ceil(sig_len * frame_bits / 8)
    slack = 0 if exact else 4
    if size < expected:
        raise EcgReadError(
            data,
            f"signal file is truncated: {hea.name} says {sig_len} samples ({expected} bytes) "
            f"but the file holds {size} bytes (~{held} samples)",
        )
    if size > expected + slack:
        raise EcgReadError(
            data,
            f"{hea.name} says {sig_len} samples ({expected} bytes) but the signal file holds "
            f"{size} bytes (~{held} samples); header and data disagree",
        )
    return sig_len


def _read_wfdb_library(stem: Path, min_leads: int) -> Ecg:
    """Any WFDB variant the fast path does not cover, read through ``wfdb.rdrecord``."""
    import wfdb

    hea = Path(f"{stem}.hea")
    try:
        header = wfdb.rdheader(str(stem))
    except Exception as exc:  # wfdb raises bare Exception / ValueError on bad headers
        log.debug("wfdb.rdheader failed on %s", hea.name, exc_info=True)
        raise EcgReadError(hea, f"cannot parse WFDB header ({type(exc).__name__}: {exc})") from None
    if getattr(header, "n_sig", 0) in (0, None):
        raise EcgReadError(hea, "header declares no signals")
    fs = float(header.fs) if header.fs is not None else float("nan")
    _check_fs(hea, fs)
    if isinstance(header, wfdb.Record):
        _check_wfdb_files(hea, header)
    try:
        record = wfdb.rdrecord(str(stem), physical=True, return_res=32)
    except Exception as exc:
        log.debug("wfdb.rdrecord failed on %s", stem.name, exc_info=True)
        raise EcgReadError(hea, f"cannot read WFDB record ({type(exc).__name__}: {exc})") from None
    signal = record.p_signal
    if signal is None:
        raise EcgReadError(hea, "record holds no signal samples")
    names = tuple(str(n) for n in (record.sig_name or [f"ch{i}" for i in range(signal.shape[1])]))
    units = tuple(str(u) if u is not None else "" for u in (record.units or [""] * len(names)))
    repairs: list[str] = []
    factors = _unit_factors(hea, names, units, repairs)
    channels = _Channels(names, units, factors, np.zeros(len(names)))
    meta: dict[str, Any] = {
        "format": "wfdb",
        "record": str(record.record_name),
        "signal_file": sorted({str(f) for f in (getattr(header, "file_name", None) or [])}),
        "adc_gain": [float(g) for g in (getattr(record, "adc_gain", None) or [])],
    }
    return _assemble(hea, signal, channels, float(record.fs), min_leads, meta, repairs)


def _check_wfdb_files(hea: Path, header: Any) -> None:
    """Check every signal file of a single-segment header exists and has the size it implies."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(header.file_name or []):
        groups.setdefault(str(name), []).append(i)
    for name, idx in groups.items():
        fmt = str(header.fmt[idx[0]])
        bits = _FMT_BITS.get(fmt)
        spf = header.samps_per_frame or [1] * header.n_sig
        offset = int((header.byte_offset or [0] * header.n_sig)[idx[0]] or 0)
        data = hea.parent / name
        values_per_frame = sum(int(spf[i] or 1) for i in idx)
        if bits is None:  # FLAC and other compressed formats: existence only
            if not data.is_file():
                raise EcgReadError(data, f"signal file named in {hea.name} is missing")
            continue
        _checked_length(
            hea, data, header.sig_len or None, values_per_frame, bits, offset, exact=False
        )


# --------------------------------------------------------------------------------------------
# DICOM waveform


def _read_dicom_waveform(path: Path, min_leads: int) -> Ecg:
    from pydicom.waveforms import multiplex_array

    ds = open_dicom(path, EcgReadError)
    try:  # pydicom decodes lazily: a corrupt element (e.g. unknown VR) raises here (fuzz)
        groups = ds.get("WaveformSequence")
    except Exception as exc:
        raise EcgReadError(path, f"corrupt DICOM element ({type(exc).__name__}: {exc})") from None
    if not groups:
        if "PixelData" in ds:
            raise EcgReadError(path, "DICOM holds an image, not a waveform (use read_cxr)")
        raise EcgReadError(path, "DICOM has no WaveformSequence (not an ECG waveform)")
    try:
        index, names = _pick_group(groups)
        group = groups[index]
        raw = multiplex_array(ds, index, as_raw=True)
        if raw.ndim != 2 or raw.shape[1] != len(names):
            raise EcgReadError(
                path,
                f"waveform data holds {raw.shape[1:]} channels but the multiplex group defines "
                f"{len(names)} (NumberOfWaveformChannels disagrees with ChannelDefinitionSequence)",
            )
        channels = _dicom_channels(path, group, names)
        fs = float(group.SamplingFrequency)
        labels = [str(g.get("MultiplexGroupLabel", "")) for g in groups]
        meta: dict[str, Any] = {
            "format": "dicom",
            "modality": str(ds.get("Modality", "")),
            "sop_class": _uid_name(ds.get("SOPClassUID")),
            "multiplex_group": labels[index],
            "multiplex_groups": labels,
        }
    except EcgReadError:
        raise
    except Exception as exc:
        log.debug("DICOM waveform decoding failed on %s", path.name, exc_info=True)
        raise EcgReadError(
            path, f"cannot decode DICOM waveform ({type(exc).__name__}: {exc})"
        ) from None
    return _assemble(path, raw, channels, fs, min_leads, meta, [])


def _channel_name(channel: Dataset) -> str:
    """The first of code meaning, code value, channel label that names a lead (else meaning)."""
    candidates: list[str] = []
    source = channel.get("ChannelSourceSequence")
    if source:
        candidates += [str(source[0].get("CodeMeaning", "")), str(source[0].get("CodeValue", ""))]
    candidates.append(str(channel.get("ChannelLabel", "")))
    for name in candidates:
        if name and canonical_lead(name) is not None:
            return name
    return next((c for c in candidates if c), "unnamed")


def _pick_group(groups: Sequence[Dataset]) -> tuple[int, tuple[str, ...]]:
    """Pick the multiplex group holding the most leads, preferring rhythm over median beats."""
    best: tuple[tuple[int, int, float], int, tuple[str, ...]] | None = None
    for i, group in enumerate(groups):
        names = tuple(_channel_name(c) for c in group.get("ChannelDefinitionSequence", []))
        label = str(group.get("MultiplexGroupLabel", "")).upper()
        not_median = int(not any(w in label for w in ("MEDIAN", "BEAT", "AVERAGE")))
        fs = float(group.get("SamplingFrequency", 0) or 0)
        duration = float(group.get("NumberOfWaveformSamples", 0) or 0) / fs if fs > 0 else 0.0
        score = (map_leads(names).n_present, not_median, duration)
        if best is None or score > best[0]:
            best = (score, i, names)
    assert best is not None
    return best[1], best[2]


def _dicom_channels(path: Path, group: Dataset, names: tuple[str, ...]) -> _Channels:
    lead_map = map_leads(names)
    used = {src for src in lead_map.source if src >= 0}
    scale = np.ones(len(names))
    shift = np.zeros(len(names))
    units: list[str] = []
    for i, channel in enumerate(group.ChannelDefinitionSequence):
        unit_seq = channel.get("ChannelSensitivityUnitsSequence")
        unit = str(unit_seq[0].get("CodeValue", "")) if unit_seq else ""
        units.append(unit)
        if i not in used:
            continue
        if channel.get("ChannelSensitivity") is None:
            raise EcgReadError(path, f"channel {names[i]} has no ChannelSensitivity")
        factor = unit_to_mv(unit)
        if factor is None:
            raise EcgReadError(path, f"channel {names[i]} has units '{unit}', not a voltage")
        sens = float(channel.ChannelSensitivity)
        corr = float(channel.get("ChannelSensitivityCorrectionFactor", 1.0) or 1.0)
        scale[i] = sens * corr * factor
        shift[i] = float(channel.get("ChannelBaseline", 0.0) or 0.0) * factor
    invalid = None
    pad = group.get("WaveformPaddingValue")
    if isinstance(pad, bytes) and len(pad) in (1, 2, 4):
        signed = str(group.get("WaveformSampleInterpretation", "SS")).startswith("S")
        invalid = int.from_bytes(pad, "little", signed=signed)
    return _Channels(names, tuple(units), scale, shift, invalid)


def _uid_name(uid: object) -> str:
    return str(getattr(uid, "name", uid or ""))
