"""Describe one ECG or chest X-ray file as a JSON-serialisable dict (``medclip inspect``).

The modality is detected from the extension and the content: WFDB records (``.hea``/``.dat``/
``.mat`` or a stem with a ``.hea`` beside it) and DICOM files with a ``WaveformSequence`` are ECGs;
other DICOM files, PNG and JPEG are X-rays. The file is then read with the regular reader, so what
``inspect_file`` reports is exactly what training sees. No patient identifiers are reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datamodules.cxr_io import read_cxr
from datamodules.ecg_io import DICOM_SUFFIXES, WFDB_SUFFIXES, read_ecg
from datamodules.errors import MedclipDataError
from datamodules.sniff import open_dicom, sniff
from datamodules.types import Modality

_IMAGE_KINDS = frozenset({"png", "jpeg", "jpeg2000"})
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jp2", ".bmp", ".tif", ".tiff"})


def detect_modality(path: str | Path) -> Modality:
    """``Modality.ECG`` or ``Modality.XRAY`` for a file, from its extension and content.

    Raises:
        MedclipDataError: the file does not exist or is neither an ECG nor an image.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in WFDB_SUFFIXES or (not p.exists() and Path(f"{p}.hea").is_file()):
        return Modality.ECG
    if not p.is_file():
        raise MedclipDataError(p, "file not found")
    try:
        kind = sniff(p)
    except OSError as exc:
        raise MedclipDataError(p, f"cannot open file ({exc.strerror or exc})") from None
    if kind == "dicom" or (kind is None and suffix in DICOM_SUFFIXES):
        ds = open_dicom(p, MedclipDataError, stop_before_pixels=True)
        return Modality.ECG if "WaveformSequence" in ds else Modality.XRAY
    if kind in _IMAGE_KINDS or suffix in _IMAGE_SUFFIXES:
        return Modality.XRAY
    if Path(f"{p}.hea").is_file():
        return Modality.ECG
    raise MedclipDataError(
        p,
        f"unrecognised file type ('{suffix or 'no extension'}', content: {kind or 'binary'}); "
        "expected WFDB .hea/.dat/.mat, DICOM, PNG or JPEG",
    )


def inspect_file(path: str | Path) -> dict[str, Any]:
    """Read one file and summarise it.

    Returns:
        for an ECG: ``file, modality="ecg", format, shape [12, T], fs, duration_s, leads,
        lead_mask, missing_leads, units ("mV" after reading), source_units, nan_fraction,
        amplitude_range_mv [min, max], meta``; for an X-ray: ``file, modality="xray", format,
        shape [H, W], pixel_range [min, max] (after scaling to [0, 1]), photometric_interpretation,
        meta``. Everything is JSON-serialisable.

    Raises:
        MedclipDataError: (EcgReadError / CxrReadError for unreadable files).
    """
    p = Path(path)
    modality = detect_modality(p)
    if modality is Modality.ECG:
        ecg = read_ecg(p)
        sig = ecg.signal[ecg.lead_mask]
        finite = sig[np.isfinite(sig)]
        info: dict[str, Any] = {
            "file": str(p),
            "modality": modality.value,
            "format": ecg.meta.get("format"),
            "shape": list(ecg.signal.shape),
            "fs": ecg.fs,
            "duration_s": ecg.duration_s,
            "leads": list(ecg.leads),
            "lead_mask": [bool(m) for m in ecg.lead_mask],
            "missing_leads": ecg.meta.get("missing_leads", []),
            "units": "mV",
            "source_units": ecg.meta.get("source_units", []),
            "nan_fraction": ecg.meta.get("nan_fraction", 0.0),
            "amplitude_range_mv": (
                [float(finite.min()), float(finite.max())] if finite.size else None
            ),
            "meta": ecg.meta,
        }
    else:
        cxr = read_cxr(p)
        info = {
            "file": str(p),
            "modality": modality.value,
            "format": cxr.meta.get("format"),
            "shape": list(cxr.pixels.shape),
            "pixel_range": [float(cxr.pixels.min()), float(cxr.pixels.max())],
            "photometric_interpretation": cxr.meta.get("photometric_interpretation"),
            "meta": cxr.meta,
        }
    return _jsonable(info)


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays, tuples and paths become numbers/lists/strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
