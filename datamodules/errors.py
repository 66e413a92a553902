"""Documented error types of the data layer.

Every reader raises one of these (never a deep library traceback). The message always starts with
the offending file and then states the problem, e.g. ``"rec.hea: header says 1000 samples but
rec.dat holds 640"``. Writers raise :class:`OutputWriteError` when the disk is full (or read-only,
or over quota) instead of the library's own error.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class MedclipDataError(ValueError):
    """Base class: a file could not be read or failed validation."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class EcgReadError(MedclipDataError):
    """An ECG record (WFDB or DICOM waveform) is unreadable or invalid."""


class CxrReadError(MedclipDataError):
    """A chest X-ray (DICOM, PNG, JPG) is unreadable or invalid."""


class MetadataError(MedclipDataError):
    """A metadata CSV is missing, malformed or lacks required columns."""


class ReportError(MedclipDataError):
    """A report text file is missing, empty or unparseable."""


_WRITE_PROBLEMS: dict[int, str] = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this file system",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
#: How libraries that do not raise ``OSError`` (torch's zip writer, safetensors, faiss) word it.
_WRITE_MESSAGES: dict[str, int] = {
    "no space left on device": errno.ENOSPC,
    "disk quota exceeded": errno.EDQUOT,
    "read-only file system": errno.EROFS,
}


def find_os_error(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind ``exc``: itself, one in its cause/context chain, or one that a
    library reported only in its message (e.g. ``No space left on device``); else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and not isinstance(current, OutputWriteError):
            return current
        current = current.__cause__ or current.__context__
    text = str(exc).lower()
    for words, code in _WRITE_MESSAGES.items():
        if words in text:
            return OSError(code, os.strerror(code))
    return None


class OutputWriteError(MedclipDataError, OSError):
    """An output file or folder could not be written (disk full, quota, read-only, no
    permission).

    The writers that raise it (preprocessing cache, checkpoints, bundles, case indexes) leave
    the previous version of their output untouched and no temporary files behind. It is also an
    :class:`OSError` whose ``errno`` is the original one.
    """

    def __init__(self, path: str | Path | None, problem: str, code: int | None = None) -> None:
        super().__init__(path, problem)
        if code is not None:
            self.errno = code
        self.filename = self.path

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    @classmethod
    def from_exception(cls, path: str | Path, exc: BaseException) -> OutputWriteError | None:
        """The error to raise for ``exc`` met while writing ``path``.

        None (re-raise ``exc`` as it is) unless the failure is one of the write problems of
        ``_WRITE_PROBLEMS`` (full disk, quota, read-only, permission).
        """
        if isinstance(exc, OutputWriteError):
            return None
        os_error = find_os_error(exc)
        code = os_error.errno if os_error is not None else None
        if code not in _WRITE_PROBLEMS:
            return None
        reason = _WRITE_PROBLEMS[code]
        return cls(
            path, f"could not be written: {reason} (any previous version is unchanged)", code
        )
