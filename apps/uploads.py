"""Checks on uploaded files before anything reads them: type allowlist, size limit, WFDB pairs.

Uploads are untrusted. The rules:

* an X-ray is one file: DICOM (``.dcm``/``.dicom``), PNG or JPEG;
* an ECG is a WFDB record (its ``.hea`` header plus every signal file the header names, ``.dat``
  or ``.mat``; uploaded together as several files or as one ``.zip``) or one DICOM waveform;
* every upload (the uncompressed content of a zip included) stays under a size limit;
* zips go through :func:`medclip.io.safe_extract_zip` (no path traversal, links or bombs).

Every refusal raises :class:`UploadError` with a message meant for the user interface: it names
the uploaded file by its base name only (folders of medical data can carry subject ids) and says
what to do instead.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medclip.io import ArchiveError, ZipLimits, safe_extract_zip

#: Accepted X-ray file types (lower-case suffixes).
XRAY_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")
#: Accepted ECG upload types (lower-case suffixes).
ECG_SUFFIXES: tuple[str, ...] = (".hea", ".dat", ".mat", ".zip", ".dcm", ".dicom")
#: Default upper bound of one upload, in MiB.
DEFAULT_MAX_UPLOAD_MB = 50.0

_DICOM = (".dcm", ".dicom")
_WFDB_SIGNAL = (".dat", ".mat")


class UploadError(ValueError):
    """An upload is refused; the message is shown to the user as it is."""


@dataclass(frozen=True)
class UploadPolicy:
    """Limits for uploads.

    Attributes:
        max_upload_mb: most MiB per upload (all files of one input together; for a zip, its
            uncompressed content).
        max_zip_files: most entries in an uploaded zip.
    """

    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_zip_files: int = 32

    def __post_init__(self) -> None:
        if not self.max_upload_mb > 0:
            raise ValueError(f"max_upload_mb must be > 0, got {self.max_upload_mb}")
        if self.max_zip_files < 1:
            raise ValueError(f"max_zip_files must be >= 1, got {self.max_zip_files}")

    @property
    def max_bytes(self) -> int:
        """The size limit in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    def zip_limits(self) -> ZipLimits:
        """Limits handed to :func:`medclip.io.safe_extract_zip`."""
        return ZipLimits(max_files=self.max_zip_files, max_total_bytes=self.max_bytes)


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / (1024 * 1024):.1f} MB"


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _check_size(paths: Sequence[Path], policy: UploadPolicy, what: str) -> None:
    total = 0
    for p in paths:
        try:
            total += p.stat().st_size
        except OSError:
            raise UploadError(f"{what}: the uploaded file {p.name} could not be read") from None
    if total > policy.max_bytes:
        raise UploadError(
            f"{what}: the upload is {_mb(total)}, over the limit of "
            f"{policy.max_upload_mb:g} MB (--max-upload-mb)"
        )


def _type_error(what: str, name: str, accepted: str) -> UploadError:
    suffix = Path(name).suffix or "(no extension)"
    return UploadError(f"{what}: file type {suffix} of {name} is not accepted; upload {accepted}")


def check_xray_upload(path: str | Path | None, policy: UploadPolicy) -> Path | None:
    """Validate an uploaded X-ray (type by extension, size); returns its path or None.

    The content is checked later by :func:`medclip.io.read_cxr` (corrupt or non-image files).

    Raises:
        UploadError: wrong type or too large.
    """
    if path is None or str(path) == "":
        return None
    p = Path(path)
    if _suffix(p) not in XRAY_SUFFIXES:
        raise _type_error("X-ray", p.name, "a DICOM (.dcm), PNG or JPEG chest X-ray")
    _check_size([p], policy, "X-ray")
    return p


def _header_signal_files(hea: Path) -> list[str]:
    """Signal file names a WFDB header refers to (empty when it cannot be parsed)."""
    try:
        text = hea.read_text(encoding="latin-1")
    except OSError:
        return []
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        return []
    fields = lines[0].split()
    if len(fields) < 2 or "/" in fields[0]:  # multi-segment records: left to the reader
        return []
    try:
        n_sig = int(fields[1])
    except ValueError:
        return []
    names = [ln.split()[0] for ln in lines[1 : 1 + n_sig] if ln.split()]
    return list(dict.fromkeys(n for n in names if n and n != "~"))


def _flatten(files: Sequence[Path], workdir: Path, what: str) -> list[Path]:
    """Copy the files into ``workdir`` under their base names (WFDB pairs must share a folder)."""
    workdir.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    seen: set[str] = set()
    for f in files:
        if f.name in seen:
            raise UploadError(f"{what}: two uploaded files are both named {f.name}")
        seen.add(f.name)
        target = workdir / f.name
        if f.resolve() != target.resolve():
            shutil.copyfile(f, target)
        out.append(target)
    return out


def _unzip(archive: Path, workdir: Path, policy: UploadPolicy, what: str) -> list[Path]:
    try:
        extracted = safe_extract_zip(archive, workdir / "unzipped", policy.zip_limits())
    except ArchiveError as exc:
        raise UploadError(f"{what}: {archive.name}: {exc.problem}") from None
    keep = [
        p
        for p in extracted
        if not p.name.startswith(".") and "__MACOSX" not in p.parts and p.is_file()
    ]
    if not keep:
        raise UploadError(f"{what}: {archive.name} holds no files")
    bad = sorted({p.name for p in keep if _suffix(p) not in ECG_SUFFIXES or _suffix(p) == ".zip"})
    if bad:
        raise UploadError(
            f"{what}: {archive.name} contains {', '.join(bad[:3])}; a zip may hold only a WFDB "
            "record (.hea with .dat/.mat) or a DICOM ECG (.dcm)"
        )
    return keep


def stage_ecg_upload(
    paths: Sequence[str | Path] | str | Path | None, policy: UploadPolicy, workdir: str | Path
) -> Path | None:
    """Validate an ECG upload and gather its files in ``workdir``.

    Args:
        paths: the uploaded file(s): a ``.hea`` with its ``.dat``/``.mat`` file(s), one ``.zip``
            of them, or one DICOM waveform.
        policy: size limits.
        workdir: an empty scratch folder for this request (the caller removes it).

    Returns:
        What :func:`medclip.io.read_ecg` takes: the ``.hea`` (WFDB) or the ``.dcm`` in
        ``workdir``; None when nothing was uploaded.

    Raises:
        UploadError: wrong type, too large, an unsafe zip, a header without its signal file (or
            the reverse), or several records at once.
    """
    what = "ECG"
    if paths is None or paths == "":
        return None
    items = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths) if p]
    if not items:
        return None
    for p in items:
        if _suffix(p) not in ECG_SUFFIXES:
            raise _type_error(
                what,
                p.name,
                "a WFDB record (.hea together with its .dat or .mat), a .zip of it, or a DICOM "
                "ECG (.dcm)",
            )
    _check_size(items, policy, what)
    work = Path(workdir)
    zips = [p for p in items if _suffix(p) == ".zip"]
    if zips:
        if len(items) > 1:
            raise UploadError(f"{what}: upload either one .zip or the record's files, not both")
        files = _flatten(_unzip(zips[0], work, policy, what), work / "record", what)
    else:
        files = _flatten(items, work / "record", what)
    dicoms = [p for p in files if _suffix(p) in _DICOM]
    heads = [p for p in files if _suffix(p) == ".hea"]
    signals = [p for p in files if _suffix(p) in _WFDB_SIGNAL]
    if dicoms:
        if len(dicoms) > 1 or heads or signals:
            raise UploadError(f"{what}: upload one ECG at a time (one DICOM file, or one record)")
        return dicoms[0]
    if not heads:
        names = ", ".join(p.name for p in signals[:2])
        raise UploadError(
            f"{what}: {names} came without its WFDB header (.hea); upload the .hea together "
            "with its .dat/.mat file, or a .zip of both"
        )
    if len(heads) > 1:
        raise UploadError(
            f"{what}: {len(heads)} headers uploaded ({', '.join(h.name for h in heads[:3])}); "
            "upload one record at a time"
        )
    hea = heads[0]
    present = {p.name for p in files}
    missing = [n for n in _header_signal_files(hea) if n not in present]
    if missing:
        raise UploadError(
            f"{what}: {hea.name} needs its signal file {', '.join(missing)}, which was not "
            "uploaded; select the .hea and the .dat/.mat together, or upload a .zip of both"
        )
    return hea
