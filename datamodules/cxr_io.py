"""Read one chest X-ray (DICOM, PNG, JPEG) into a :class:`Cxr`: float32 ``(H, W)`` in [0, 1].

Bright means dense (MONOCHROME2 convention) whatever the source. The file type is taken from the
content, not the extension.

DICOM, in order: decode (compressed transfer syntaxes such as JPEG baseline and JPEG 2000 through
the pylibjpeg / Pillow plugins), first frame only, colour -> gray, Modality LUT (rescale
slope/intercept or LUT), VOI LUT or window when present (first one), scale the output range (the
VOI output range, else the ``BitsStored`` range) to [0, 1], invert MONOCHROME1.

PNG / JPEG: 8-bit images are divided by 255 and 16-bit ones by 65535.

Documented repairs (listed in ``cxr.meta["repairs"]`` and logged):

* colour images (RGB, RGBA, palette, YBR) become luminance gray; ``meta["converted_from"]`` names
  the original mode;
* a file whose extension disagrees with its content is read as what it contains;
* EXIF orientation is applied;
* only the first frame of a multi-frame DICOM is kept.

A pixel range that fills less than 1/16 of the stored range logs a warning and sets
``meta["range_warning"]`` (the image would look nearly black). Unreadable input raises
:class:`CxrReadError` naming the file and the problem.

``meta`` is an allowlist (modality, view position, photometric interpretation, bits stored, rows,
columns, pixel spacing, transfer syntax...); patient names, ids, dates and institutions are never
copied.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from datamodules.errors import CxrReadError
from datamodules.sniff import EXTENSION_KINDS, dicom_value, open_dicom, sniff
from datamodules.types import Cxr

if TYPE_CHECKING:
    from PIL import Image
    from pydicom import Dataset

log = logging.getLogger(__name__)

#: DICOM keyword -> meta key. The ONLY header fields ever copied into ``Cxr.meta``.
DICOM_META_ALLOWLIST: dict[str, str] = {
    "Modality": "modality",
    "ViewPosition": "view_position",
    "PhotometricInterpretation": "photometric_interpretation",
    "BitsAllocated": "bits_allocated",
    "BitsStored": "bits_stored",
    "PixelRepresentation": "pixel_representation",
    "SamplesPerPixel": "samples_per_pixel",
    "Rows": "rows",
    "Columns": "columns",
    "NumberOfFrames": "number_of_frames",
    "PixelSpacing": "pixel_spacing",
    "ImagerPixelSpacing": "imager_pixel_spacing",
    "PresentationIntentType": "presentation_intent_type",
    "BodyPartExamined": "body_part_examined",
    "RescaleSlope": "rescale_slope",
    "RescaleIntercept": "rescale_intercept",
    "WindowCenter": "window_center",
    "WindowWidth": "window_width",
    "VOILUTFunction": "voi_lut_function",
}

#: Used fraction of the stored range below which a range warning is raised.
RANGE_WARNING_FRACTION: float = 1 / 16

_PIL_FORMATS: dict[str, str] = {"PNG": "png", "JPEG": "jpeg", "JPEG2000": "jpeg2000"}


def read_cxr(path: str | Path) -> Cxr:
    """Read a chest X-ray.

    Returns:
        :class:`Cxr` with ``pixels`` float32 ``(H, W)`` in [0, 1] (bright = dense) and PHI-free
        ``meta`` (format, original mode / photometric interpretation, bits stored, size, repairs).

    Raises:
        CxrReadError: missing, corrupt, truncated or unsupported file, DICOM without pixel data.
    """
    p = Path(path)
    if not p.is_file():
        raise CxrReadError(p, "file not found" if not p.exists() else "not a regular file")
    try:
        kind = sniff(p)
    except OSError as exc:
        raise CxrReadError(p, f"cannot open file ({exc.strerror or exc})") from None
    suffix = p.suffix.lower()
    expected = EXTENSION_KINDS.get(suffix)
    if kind is None and expected == "dicom":
        kind = "dicom"  # DICOM without the 128-byte preamble; open_dicom checks the content
    repairs: list[str] = []
    if kind == "text":
        raise CxrReadError(p, "text file, not an image (expected DICOM, PNG or JPEG)")
    if kind is not None and expected is not None and kind != expected:
        repairs.append(f"content is {kind} but extension is '{suffix}'; read as {kind}")
    if kind == "dicom":
        pixels, meta = _read_dicom(p, repairs)
    else:
        pixels, meta = _read_pil(p, repairs)
    meta["repairs"] = repairs
    if "range_warning" in meta:
        log.warning("%s: %s", p.name, meta["range_warning"])
    for note in repairs:
        log.info("%s: %s", p.name, note)  # file name only: folders may carry subject ids
    return Cxr(pixels=pixels, source=str(p), meta=meta)


# --------------------------------------------------------------------------------------------
# DICOM


def _read_dicom(p: Path, repairs: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    ds = open_dicom(p, CxrReadError)
    if "PixelData" not in ds:
        if "WaveformSequence" in ds:
            raise CxrReadError(p, "DICOM holds a waveform (ECG), not an image (use read_ecg)")
        raise CxrReadError(p, "DICOM has no pixel data (element absent; truncated file?)")
    meta: dict[str, Any] = {"format": "dicom"}
    try:  # pydicom decodes lazily: a corrupt element (e.g. unknown VR) raises here (fuzz)
        for keyword, key in DICOM_META_ALLOWLIST.items():
            value = ds.get(keyword)
            if value is not None and value != "":
                meta[key] = dicom_value(value)
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        meta["transfer_syntax"] = str(getattr(syntax, "name", syntax or "unknown"))
        meta["sop_class"] = str(getattr(ds.get("SOPClassUID"), "name", ds.get("SOPClassUID", "")))
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    except Exception as exc:
        raise CxrReadError(p, f"corrupt DICOM element ({type(exc).__name__}: {exc})") from None
    try:
        arr = ds.pixel_array
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception as exc:  # decoders raise many types on truncated / unsupported data
        log.debug("pixel decoding failed on %s", p.name, exc_info=True)
        raise CxrReadError(
            p,
            f"cannot decode pixel data ({meta['transfer_syntax']}; {type(exc).__name__}: {exc})",
        ) from None
    if n_frames > 1:
        arr = arr[0]
        repairs.append(f"kept the first of {n_frames} frames")
    if arr.ndim != (3 if samples > 1 else 2) or arr.size == 0:
        raise CxrReadError(p, f"unexpected pixel array shape {arr.shape}")
    meta["stored_range"] = [float(arr.min()), float(arr.max())]
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite results checked below
            if samples > 1 or photometric == "PALETTE COLOR":
                out = _dicom_color_to_gray(arr, ds, photometric, meta, repairs)
            else:
                out = _dicom_gray(arr, ds, photometric, meta, repairs)
    except CxrReadError:
        raise
    except Exception as exc:
        log.debug("LUT processing failed on %s", p.name, exc_info=True)
        raise CxrReadError(
            p, f"invalid LUT / pixel attributes ({type(exc).__name__}: {exc})"
        ) from None
    if not np.isfinite(out.max()):  # out is clipped to [0, 1], so only NaN can remain
        raise CxrReadError(
            p,
            "pixel attributes (RescaleSlope/Intercept, window or LUT) give non-finite values",
        )
    return out, meta


def _dicom_color_to_gray(
    arr: np.ndarray, ds: Dataset, photometric: str, meta: dict[str, Any], repairs: list[str]
) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
        top = float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "ui" else 1.0
    else:  # pydicom already converted YBR_* to RGB
        top = float(2 ** int(ds.get("BitsStored", 8) or 8) - 1)
    out = _luminance(arr[..., :3])
    out *= np.float32(1.0 / top)
    np.clip(out, 0.0, 1.0, out=out)
    meta["converted_from"] = "RGB"
    meta["voi"] = "none"
    meta["inverted"] = False
    repairs.append(f"{photometric} image converted to gray (luminance)")
    return out


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an ``(H, W, 3)`` array, float32 ``(H, W)``."""
    out = np.multiply(rgb[..., 0], 0.299, dtype=np.float32)
    out += np.multiply(rgb[..., 1], 0.587, dtype=np.float32)
    out += np.multiply(rgb[..., 2], 0.114, dtype=np.float32)
    return out


def _dicom_gray(
    arr: np.ndarray, ds: Dataset, photometric: str, meta: dict[str, Any], repairs: list[str]
) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 16) or 16)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    x: np.ndarray = arr
    mod_seq = ds.get("ModalityLUTSequence")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    if mod_seq:
        x = apply_modality_lut(x, ds)
        lo, hi = 0, 2 ** int(mod_seq[0].LUTDescriptor[2]) - 1
    elif slope != 1.0 or intercept != 0.0:
        x = apply_modality_lut(x, ds)
        lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    voi = "none"
    voi_seq = ds.get("VOILUTSequence")
    if voi_seq or ("WindowCenter" in ds and "WindowWidth" in ds):
        # window output range follows the same rule as pydicom's apply_windowing
        y_lo, y_hi = lo, hi
        x = apply_voi_lut(x, ds, index=0, prefer_lut=True)
        if voi_seq:
            lut = _lut_values(voi_seq[0])
            y_lo, y_hi = float(lut.min()), float(lut.max())
            voi = "lut"
        else:
            voi = "window"
        lo, hi = y_lo, y_hi
    meta["voi"] = voi
    span = float(hi - lo) if hi > lo else 1.0
    out = np.empty(x.shape, dtype=np.float32)
    np.subtract(x, lo, out=out, casting="unsafe")
    out *= np.float32(1.0 / span)
    if voi == "none":
        _range_check(out, meta, f"BitsStored={bits} range")
    np.clip(out, 0.0, 1.0, out=out)
    inverted = photometric == "MONOCHROME1"
    if inverted:
        np.subtract(1.0, out, out=out)
    meta["inverted"] = inverted
    return out


def _lut_values(item: Dataset) -> np.ndarray:
    """LUT Data as numbers, whether pydicom parsed it (US) or kept raw OW bytes."""
    data = item.LUTData
    if isinstance(data, (bytes, bytearray)):
        bits = int(item.LUTDescriptor[2]) if "LUTDescriptor" in item else 16
        return np.frombuffer(bytes(data), dtype="<u2" if bits > 8 else "u1").astype(np.float64)
    return np.asarray(data, dtype=np.float64).ravel()


def _range_check(scaled: np.ndarray, meta: dict[str, Any], what: str) -> None:
    """Flag pixels that fill only a sliver of the range used to scale them (R7; logged)."""
    used = float(scaled.max() - scaled.min())
    if used < RANGE_WARNING_FRACTION:
        msg = f"pixel values use only {used:.1%} of the {what}; the image will look flat"
        meta["range_warning"] = msg


# --------------------------------------------------------------------------------------------
# PNG / JPEG (anything Pillow reads)


def _read_pil(p: Path, repairs: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    from PIL import Image, ImageOps

    try:
        with Image.open(p) as opened:
            fmt = str(opened.format or "")
            mode = opened.mode
            img: Image.Image = opened
            orientation = opened.getexif().get(0x0112, 1)
            if orientation not in (1, None):
                img = ImageOps.exif_transpose(opened)
                repairs.append(f"applied EXIF orientation {orientation}")
            arr, bits, converted = _pil_gray(img)
    except Exception as exc:  # Pillow: UnidentifiedImageError, truncated data, bombs...
        log.debug("Pillow failed on %s", p.name, exc_info=True)
        raise CxrReadError(
            p, f"not a readable DICOM, PNG or JPEG image ({type(exc).__name__}: {exc})"
        ) from None
    if arr.ndim != 2 or arr.size == 0:
        raise CxrReadError(p, f"unexpected image shape {arr.shape}")
    meta: dict[str, Any] = {
        "format": _PIL_FORMATS.get(fmt, fmt.lower()),
        "original_mode": mode,
        "bits_stored": bits,
        "rows": int(arr.shape[0]),
        "columns": int(arr.shape[1]),
        "photometric_interpretation": "MONOCHROME2",
        "stored_range": [float(arr.min()), float(arr.max())],
        "voi": "none",
        "inverted": False,
    }
    if converted:
        meta["converted_from"] = mode
        repairs.append(f"{mode} image converted to gray (luminance)")
    out = np.empty(arr.shape, dtype=np.float32)
    np.multiply(arr, 1.0 / (2**bits - 1), out=out, casting="unsafe")
    _range_check(out, meta, f"{bits}-bit range")
    np.clip(out, 0.0, 1.0, out=out)
    return out, meta


def _pil_gray(img: Image.Image) -> tuple[np.ndarray, int, bool]:
    """Gray array, its bit depth and whether colour was converted."""
    mode = img.mode
    if mode == "L":
        return np.asarray(img), 8, False
    if mode.startswith("I;16"):  # 16-bit gray, any byte order
        return np.asarray(img).astype(np.uint16, copy=False), 16, False
    if mode == "I":  # 32-bit int container, e.g. some 16-bit PNGs
        return np.clip(np.asarray(img), 0, 65535), 16, False
    if mode == "1":
        return np.asarray(img.convert("L")), 8, False
    if mode == "LA":
        return np.asarray(img.getchannel("L")), 8, False
    if mode == "F":
        raise ValueError("floating-point images are not supported (expected 8 or 16 bit)")
    return np.asarray(img.convert("L")), 8, True
