"""Shared helpers for reading metadata CSVs as distributed (plain or gzip-compressed).

Every failure becomes a :class:`~datamodules.errors.MetadataError` that names the file and the
problem (missing file, unreadable CSV, missing columns), never a pandas traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datamodules.errors import MetadataError

logger = logging.getLogger(__name__)

__all__ = [
    "find_file",
    "read_header",
    "read_table",
    "require_columns",
    "study_datetime",
    "to_datetime64",
    "to_int_ids",
]


def find_file(root: str | Path, names: Sequence[str], *, what: str = "metadata file") -> Path:
    """Return the first of ``names`` that exists under ``root``.

    Each name is also tried with ``.gz`` added or removed, because users often gunzip the
    distributed ``*.csv.gz`` files.

    Raises:
        MetadataError: none of the candidates exists (the message names the expected path).
    """
    root = Path(root)
    tried: list[Path] = []
    for name in names:
        variants = [name, name[:-3]] if name.endswith(".gz") else [name, name + ".gz"]
        for variant in variants:
            candidate = root / variant
            tried.append(candidate)
            if candidate.is_file():
                return candidate
    if not root.is_dir():
        raise MetadataError(root, f"folder not found (expected the {what} {names[0]} inside)")
    raise MetadataError(
        tried[0], f"{what} not found (also tried: {', '.join(p.name for p in tried[1:])})"
    )


def require_columns(frame: pd.DataFrame, path: str | Path, columns: Iterable[str]) -> None:
    """Raise :class:`MetadataError` naming ``path`` and every missing column."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MetadataError(path, f"missing required column(s): {', '.join(missing)}")


def read_header(path: str | Path) -> list[str]:
    """Column names of a (possibly ``.gz``) CSV.

    Raises:
        MetadataError: missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise MetadataError(path, "file not found")
    try:
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise MetadataError(path, f"cannot read CSV header ({type(exc).__name__}: {exc})") from exc
    except EOFError as exc:  # truncated gzip
        raise MetadataError(path, f"truncated compressed file ({exc})") from exc


def read_table(
    path: str | Path,
    required: Sequence[str] = (),
    *,
    dtype: dict[str, Any] | None = None,
    index_col: int | str | None = None,
    usecols: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read a (possibly ``.gz``) CSV and check that ``required`` columns exist.

    Args:
        path: CSV file; compression is inferred from the suffix.
        required: columns that must be present (checked after reading the header).
        dtype: optional pandas dtypes per column.
        index_col: passed to :func:`pandas.read_csv`.
        usecols: read only these columns (those absent from the file are reported as missing).

    Raises:
        MetadataError: missing file, unreadable/empty CSV, or missing required columns.
    """
    path = Path(path)
    header = read_header(path)
    missing = [c for c in [*required, *(usecols or ())] if c not in header]
    if missing:
        raise MetadataError(
            path, f"missing required column(s): {', '.join(dict.fromkeys(missing))}"
        )
    cols = None
    if usecols is not None:
        cols = list(dict.fromkeys([*usecols, *required]))
    try:
        frame = pd.read_csv(
            path, dtype=dtype, index_col=index_col, usecols=cols, keep_default_na=True
        )
    except (
        pd.errors.ParserError,
        ValueError,
        UnicodeDecodeError,
        OSError,
        EOFError,
    ) as exc:
        raise MetadataError(path, f"cannot parse CSV ({type(exc).__name__}: {exc})") from exc
    return frame


def to_int_ids(values: pd.Series, path: str | Path, column: str) -> np.ndarray:
    """Convert an id column (ints or float text such as ``15709.0``) to int64.

    Raises:
        MetadataError: blanks or non-integer values in the column.
    """
    numeric = pd.to_numeric(values, errors="coerce")
    # inf / |x| >= 2**63 would wrap around in the int64 cast (found by test_fuzz_metadata.py)
    bad = numeric.isna() | (numeric != np.floor(numeric)) | (numeric.abs() >= 2.0**63)
    if bool(bad.any()):
        raise MetadataError(
            path, f"column {column!r} has {int(bad.sum())} blank or non-integer value(s)"
        )
    return numeric.to_numpy(dtype=np.float64).astype(np.int64)


def study_datetime(study_date: pd.Series, study_time: pd.Series) -> pd.Series:
    """Combine MIMIC-CXR ``StudyDate`` and ``StudyTime`` into ``datetime64[ns]``.

    ``StudyDate`` is an integer ``YYYYMMDD``; ``StudyTime`` is ``HHMMSS.fff`` stored as a
    number, so the leading zero is lost (``80556.875`` = 08:05:56.875). A blank time keeps the
    date at midnight; a blank or invalid date gives ``NaT``.

    Returns:
        datetime64[ns] Series aligned with the inputs.
    """
    date_num = pd.to_numeric(study_date, errors="coerce")
    date_txt = date_num.astype("Float64").astype("Int64").astype("string")
    dates = pd.to_datetime(date_txt, format="%Y%m%d", errors="coerce").astype("datetime64[ns]")
    t = pd.to_numeric(study_time, errors="coerce").fillna(0.0).to_numpy(dtype=np.float64)
    whole = np.floor(t).astype(np.int64)
    hh, mm, ss = whole // 10000, (whole // 100) % 100, whole % 100
    valid = (hh < 24) & (mm < 60) & (ss < 60) & (t >= 0)
    seconds = np.where(valid, hh * 3600 + mm * 60 + ss + (t - whole), 0.0)
    offset = pd.to_timedelta(np.round(seconds * 1e6).astype(np.int64), unit="us")
    out = dates + pd.Series(offset, index=dates.index)
    return out.astype("datetime64[ns]")


def to_datetime64(value: Any) -> np.datetime64 | None:
    """A scalar timestamp (Timestamp, datetime64, string) as ``np.datetime64[ns]``; None for NaT."""
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    if pd.isna(stamp):
        return None
    return np.datetime64(stamp.as_unit("ns").value, "ns")
