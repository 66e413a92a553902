"""File-type detection by content, and a DICOM opener that raises the data layer's errors.

The readers trust the bytes rather than the extension: a PNG saved as ``.jpg`` is still read as a
PNG (the mismatch is recorded), while a text file saved as ``.png`` is rejected with a clear error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from datamodules.errors import MedclipDataError

if TYPE_CHECKING:
    from pydicom import Dataset

log = logging.getLogger(__name__)

FileKind = Literal["dicom", "png", "jpeg", "jpeg2000", "text"]

#: Extension (lower case) -> the kind of content it promises.
EXTENSION_KINDS: dict[str, FileKind] = {
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".jp2": "jpeg2000",
    ".hea": "text",
}

#: DICOM elements whose presence shows that a preamble-less file really is DICOM.
_DICOM_MARKERS: tuple[str, ...] = (
    "SOPClassUID",
    "Modality",
    "PixelData",
    "WaveformSequence",
    "PhotometricInterpretation",
)


def sniff(path: str | Path) -> FileKind | None:
    """Kind of a file judged from its first bytes, or None when unrecognised.

    Recognises DICOM Part 10 (``DICM`` at byte 128), PNG, JPEG, JPEG 2000 and plain ASCII text
    (WFDB headers). Raises OSError when the file cannot be opened.
    """
    with open(path, "rb") as fh:
        head = fh.read(132)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")):
        return "jpeg2000"
    if head and all(b in b"\t\n\r" or 32 <= b < 127 for b in head):
        return "text"
    return None


def open_dicom(
    path: str | Path,
    error: type[MedclipDataError],
    *,
    stop_before_pixels: bool = False,
) -> Dataset:
    """Read a DICOM dataset, raising ``error(path, problem)`` instead of pydicom's exceptions.

    Files without the 128-byte preamble are read with ``force=True`` and accepted only when they
    contain recognisable DICOM elements (random bytes are rejected).
    """
    import pydicom

    p = Path(path)
    if not p.is_file():
        raise error(p, "file not found")
    try:
        kind = sniff(p)
    except OSError as exc:
        raise error(p, f"cannot open file ({exc.strerror or exc})") from None
    force = kind != "dicom"
    try:
        ds = pydicom.dcmread(p, force=force, stop_before_pixels=stop_before_pixels)
        looks_ok = not force or any(tag in ds for tag in _DICOM_MARKERS)
    except Exception as exc:  # pydicom raises many types on corrupt input
        log.debug("pydicom failed on %s", p.name, exc_info=True)
        raise error(p, f"corrupt or truncated DICOM ({type(exc).__name__}: {exc})") from None
    if not looks_ok:
        raise error(p, "not a DICOM file (no 'DICM' marker and no recognisable DICOM elements)")
    return ds


def dicom_value(value: object) -> object:
    """A DICOM element value as plain JSON-friendly Python (lists, floats, ints, strings)."""
    from pydicom.multival import MultiValue
    from pydicom.valuerep import IS, DSdecimal, DSfloat

    if isinstance(value, MultiValue | list | tuple):
        return [dicom_value(v) for v in value]
    if isinstance(value, IS):
        return int(value)
    if isinstance(value, DSfloat | DSdecimal | float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    return str(value)
