"""Documented error types of the data layer.

Every reader raises one of these (never a deep library traceback). The message always starts with
the offending file and then states the problem, e.g. ``"rec.hea: header says 1000 samples but
rec.dat holds 640"``.
"""

from __future__ import annotations

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
