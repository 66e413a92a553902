"""Which modality a user's file is, and how files group into studies (CLI inputs).

* X-ray: ``.png``, ``.jpg``/``.jpeg``, ``.jp2``, or a DICOM image.
* ECG: a WFDB record (``.hea``, ``.dat``, ``.mat``, or the record stem without extension whose
  ``.hea`` exists), or a DICOM with a ``WaveformSequence`` (12-lead ECG waveform IOD).
* Files are judged by content where the extension is ambiguous (DICOM, unknown suffixes).

Grouping (:func:`group_studies`): by default, when the files hold at most one X-ray and at most
one ECG they form **one study** (scored together, probabilities fused per label); otherwise, or
with ``each=True``, every file is a study of its own. A ``.hea``/``.dat`` pair of the same record
counts once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from datamodules.errors import MedclipDataError

_XRAY_EXT = {".png", ".jpg", ".jpeg", ".jp2"}
_ECG_EXT = {".hea", ".dat", ".mat"}


class InputError(MedclipDataError):
    """A CLI input that is neither a readable X-ray nor an ECG record."""


def detect_modality(path: str | Path) -> str:
    """``"xray"`` or ``"ecg"`` for a file (see the module docstring).

    Raises:
        InputError: missing file or unrecognised content.
    """
    from datamodules.sniff import open_dicom, sniff

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in _ECG_EXT or (not p.exists() and p.with_suffix(".hea").is_file()):
        return "ecg"
    if not p.is_file():
        raise InputError(p, "file not found")
    if suffix in _XRAY_EXT:
        return "xray"
    kind = sniff(p)
    if kind in ("png", "jpeg", "jpeg2000"):
        return "xray"
    if suffix in (".dcm", ".dicom") or kind == "dicom":
        ds = open_dicom(p, InputError, stop_before_pixels=True)
        return "ecg" if "WaveformSequence" in ds else "xray"
    if p.with_suffix(".hea").is_file():
        return "ecg"
    raise InputError(p, "not a chest X-ray (DICOM/PNG/JPEG) or an ECG record (WFDB/DICOM)")


def record_key(path: str | Path) -> str:
    """Identity of a file's record: a WFDB record's stem (``.hea``/``.dat`` share it)."""
    p = Path(path)
    return str(p.with_suffix("")) if p.suffix.lower() in _ECG_EXT else str(p)


@dataclass(frozen=True)
class StudyInput:
    """One study to score: an X-ray and/or an ECG file."""

    xray: Path | None = None
    ecg: Path | None = None

    @property
    def files(self) -> list[str]:
        """The study's files, X-ray first."""
        return [str(p) for p in (self.xray, self.ecg) if p is not None]


def group_studies(paths: Sequence[str | Path], *, each: bool = False) -> list[StudyInput]:
    """Group files into studies (see the module docstring).

    Raises:
        InputError: for a file of unknown modality.
        ValueError: when no file is given.
    """
    if not paths:
        raise ValueError("no input files")
    items: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for raw in paths:
        p = Path(raw)
        key = record_key(p)
        if key in seen:
            continue
        seen.add(key)
        items.append((detect_modality(p), p))
    n_x = sum(m == "xray" for m, _ in items)
    n_e = sum(m == "ecg" for m, _ in items)
    if not each and n_x <= 1 and n_e <= 1:
        xray = next((p for m, p in items if m == "xray"), None)
        ecg = next((p for m, p in items if m == "ecg"), None)
        return [StudyInput(xray=xray, ecg=ecg)]
    return [StudyInput(xray=p) if m == "xray" else StudyInput(ecg=p) for m, p in items]


def query_modality(query: str | Path) -> str:
    """``xray``, ``ecg`` or ``text``: a path to an existing file (or WFDB record stem) is a file
    query judged by :func:`detect_modality`; anything else is a free-text query."""
    p = Path(query)
    text = str(query)
    looks_like_file = p.exists() or p.with_suffix(".hea").is_file()
    if not looks_like_file or "\n" in text or len(text) > 4096:
        return "text"
    return detect_modality(p)
