"""File input for medclip's users (e.g. the Gradio app), routed through the data layer.

``apps`` may import only ``medclip`` (DESIGN.md §1); this module re-exports the readers, the safe
zip extraction and the error types of :mod:`datamodules` under one stable name.

    from medclip.io import read_cxr, read_ecg, safe_extract_zip, MedclipDataError
"""

from __future__ import annotations

from datamodules.archive import ArchiveError, ZipLimits, safe_extract_zip
from datamodules.cxr_io import DICOM_META_ALLOWLIST, read_cxr
from datamodules.ecg_io import read_ecg
from datamodules.errors import CxrReadError, EcgReadError, MedclipDataError
from datamodules.sniff import sniff
from datamodules.types import CANONICAL_LEADS, Cxr, Ecg

__all__ = [
    "CANONICAL_LEADS",
    "DICOM_META_ALLOWLIST",
    "ArchiveError",
    "Cxr",
    "CxrReadError",
    "Ecg",
    "EcgReadError",
    "MedclipDataError",
    "ZipLimits",
    "read_cxr",
    "read_ecg",
    "safe_extract_zip",
    "sniff",
]
