"""MIMIC-IV-ECG 1.0 reader: record index, machine-statement reports, ECG labels, subject split.

Formats: DATASETS.md §2. ``record_list.csv`` gives the records (``ecg_time`` is taken from it,
not from ``machine_measurements.csv``, which disagrees for some rows); ``machine_measurements.csv``
gives the statements ``report_0..report_17`` (ragged, blanks/filler skipped), joined into the
report text. ECG labels come from the statements through the keyword table in
:mod:`datamodules.labels`.

There is no official split: subjects are split deterministically by a hash of ``subject_id``
(:func:`datamodules.splits.hash_split`), so all ECGs of a subject share one split. Pairing with
MIMIC-CXR overrides this with the subject's CXR split where the subject has one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from datamodules.errors import MetadataError
from datamodules.labels import ECG_LABELS, ecg_label_frame
from datamodules.reports import ecg_statement_columns, join_ecg_statements_frame
from datamodules.splits import hash_split
from datamodules.tables import find_file, read_header, read_table, to_int_ids

logger = logging.getLogger(__name__)

__all__ = ["RECORD_COLUMNS", "MimicEcgIndex", "load_mimic_ecg"]

RECORD_COLUMNS: tuple[str, ...] = ("subject_id", "study_id", "ecg_time", "path")
MEASUREMENT_KEYS: tuple[str, ...] = ("subject_id", "study_id")


@dataclass
class MimicEcgIndex:
    """The MIMIC-IV-ECG record index.

    Attributes:
        root: dataset folder (holds ``record_list.csv`` and ``files/``).
        records: one row per ECG, columns ``subject_id`` (int64), ``study_id`` (int64),
            ``ecg_time`` (datetime64[ns], NaT when blank), ``path`` (WFDB stem relative to
            ``root``), ``report`` (joined statements or None), ``split`` and one float32 column
            per :data:`~datamodules.labels.ECG_LABELS` name (1/0, NaN without statements).
    """

    root: Path
    records: pd.DataFrame

    def __len__(self) -> int:
        return len(self.records)

    def record_path(self, row: int) -> Path:
        """Absolute WFDB record stem of the ``row``-th record."""
        return self.root / str(self.records["path"].iloc[row])


def _statement_reports(path: Path) -> tuple[pd.Series, pd.DataFrame]:
    """Joined report per study and ECG label frame from ``machine_measurements.csv``."""
    columns = ecg_statement_columns(read_header(path))
    if not columns:
        raise MetadataError(path, "missing required column(s): report_0 ... report_17")
    frame = read_table(
        path, MEASUREMENT_KEYS, usecols=["study_id", *columns], dtype=dict.fromkeys(columns, str)
    )
    frame["study_id"] = to_int_ids(frame["study_id"], path, "study_id")
    frame = frame.drop_duplicates("study_id", keep="first")
    long = join_ecg_statements_frame(frame, key="study_id")
    reports = long.groupby("study_id", sort=False)["statement"].agg(". ".join) + "."
    labels = ecg_label_frame(pd.Series(long["statement"].to_numpy(), index=long["study_id"]))
    return reports, labels


def load_mimic_ecg(
    root: str | Path,
    *,
    with_reports: bool = True,
    val_frac: float = 0.05,
    test_frac: float = 0.05,
    split_salt: str = "medclip",
) -> MimicEcgIndex:
    """Build the MIMIC-IV-ECG index from ``record_list.csv`` (+ ``machine_measurements.csv``).

    Args:
        root: the MIMIC-IV-ECG folder.
        with_reports: read ``machine_measurements.csv`` for reports and labels (required then);
            False leaves ``report`` None and labels NaN.
        val_frac: fraction of subjects hashed to val.
        test_frac: fraction of subjects hashed to test.
        split_salt: salt of the subject hash.

    Raises:
        MetadataError: missing files or columns, blank/non-integer ids, duplicate study ids.
    """
    root = Path(root)
    rec_path = find_file(root, ["record_list.csv"], what="MIMIC-IV-ECG record list")
    frame = read_table(rec_path, RECORD_COLUMNS)
    frame = frame[list(RECORD_COLUMNS)].copy()
    frame["subject_id"] = to_int_ids(frame["subject_id"], rec_path, "subject_id")
    frame["study_id"] = to_int_ids(frame["study_id"], rec_path, "study_id")
    if frame["study_id"].duplicated().any():
        raise MetadataError(rec_path, "duplicate study_id values")
    if frame["path"].isna().any():
        raise MetadataError(rec_path, f"{int(frame['path'].isna().sum())} blank path value(s)")
    frame["path"] = frame["path"].astype(str).str.strip().str.removesuffix(".hea")
    times = pd.to_datetime(frame["ecg_time"], errors="coerce", format="mixed")
    frame["ecg_time"] = times.astype("datetime64[ns]")
    n_bad_time = int(frame["ecg_time"].isna().sum())
    if n_bad_time:
        logger.warning("%s: %d record(s) without a valid ecg_time", rec_path.name, n_bad_time)
    frame["split"] = hash_split(
        frame["subject_id"].to_numpy(), val_frac=val_frac, test_frac=test_frac, salt=split_salt
    )
    if with_reports:
        mm_path = find_file(root, ["machine_measurements.csv"], what="machine measurements file")
        reports, labels = _statement_reports(mm_path)
        frame["report"] = frame["study_id"].map(reports).astype(object)
        frame["report"] = frame["report"].where(frame["report"].notna(), None)
        n_empty = int(frame["report"].isna().sum())
        if n_empty:
            logger.warning(
                "%s: %d of %d ECG(s) have no machine statement (report None, labels NaN)",
                mm_path.name,
                n_empty,
                len(frame),
            )
        aligned = labels.reindex(frame["study_id"].to_numpy())
        for name in ECG_LABELS:
            frame[name] = aligned[name].to_numpy(dtype=np.float32)
    else:
        frame["report"] = None
        for name in ECG_LABELS:
            frame[name] = np.float32(np.nan)
    return MimicEcgIndex(root, frame.reset_index(drop=True))
