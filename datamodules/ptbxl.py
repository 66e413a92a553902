"""PTB-XL 1.0.3 reader: record index, benchmark label tasks and the official folds.

Formats: DATASETS.md §1. The index is built from ``ptbxl_database.csv`` and
``scp_statements.csv`` as distributed (float ``patient_id``, dict-string ``scp_codes``, unnamed
first column of the statements file, empty flags meaning "not set").

Label tasks follow the Strodthoff et al. benchmark: every key of ``scp_codes`` counts as present
whatever its likelihood (0.0 means "unknown likelihood"), records without a label for the task
are dropped for that task, classes are in alphabetical order. The class vocabulary is taken from
``scp_statements.csv`` (fixed width: 71/44/23/5/19/12), so every split has the same columns;
``min_samples`` drops classes seen ``<= min_samples`` times in the index, as in the benchmark.

A row whose ``scp_codes`` cannot be parsed is skipped with a warning naming its ``ecg_id``.
Splits: ``strat_fold`` 1-8 train, 9 val, 10 test.
"""

from __future__ import annotations

import ast
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from datamodules.errors import MetadataError
from datamodules.labels import ECG_LABELS, ptbxl_ecg_labels
from datamodules.reports import ptbxl_report_text
from datamodules.tables import (
    find_file,
    read_table,
    require_columns,
    to_datetime64,
    to_int_ids,
)
from datamodules.types import Study

logger = logging.getLogger(__name__)

__all__ = [
    "PTBXL_TASKS",
    "PtbxlIndex",
    "PtbxlTask",
    "PtbxlTaskStudies",
    "TaskLabels",
    "fold_to_split",
    "load_ptbxl",
    "load_task",
    "parse_scp_codes",
    "ptbxl_ecg_label_frame",
    "ptbxl_studies",
    "ptbxl_task",
    "task_codes",
]

PtbxlTask = Literal["all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm"]

#: The six benchmark tasks.
PTBXL_TASKS: tuple[str, ...] = (
    "all",
    "diagnostic",
    "subdiagnostic",
    "superdiagnostic",
    "form",
    "rhythm",
)

DATABASE_COLUMNS: tuple[str, ...] = (
    "ecg_id",
    "patient_id",
    "report",
    "scp_codes",
    "strat_fold",
    "filename_lr",
    "filename_hr",
)
STATEMENT_COLUMNS: tuple[str, ...] = (
    "diagnostic",
    "form",
    "rhythm",
    "diagnostic_class",
    "diagnostic_subclass",
)


@dataclass
class PtbxlIndex:
    """The PTB-XL record index.

    Attributes:
        root: dataset folder (holds ``records100/``, ``records500/``).
        records: one row per ECG, indexed by ``ecg_id`` (int), with columns ``patient_id``
            (int), ``age``, ``sex``, ``report``, ``scp_codes`` (dict code -> likelihood),
            ``strat_fold`` (int 1-10), ``split``, ``recording_date`` (datetime64),
            ``filename_lr``, ``filename_hr`` (paths relative to ``root``, no extension).
        statements: ``scp_statements.csv`` indexed by code.
        database_path: the CSV the records came from.
    """

    root: Path
    records: pd.DataFrame
    statements: pd.DataFrame
    database_path: Path

    def __len__(self) -> int:
        return len(self.records)

    def record_path(self, ecg_id: int, fs: int = 100) -> Path:
        """WFDB record stem (no extension) of ``ecg_id`` at 100 or 500 Hz."""
        column = _fs_column(fs)
        return self.root / str(self.records.at[ecg_id, column])

    def record_paths(self, fs: int = 100) -> pd.Series:
        """WFDB record stems of every record at 100 or 500 Hz (Series indexed by ecg_id)."""
        column = _fs_column(fs)
        root = str(self.root)
        return self.records[column].map(lambda rel: Path(root) / str(rel))


@dataclass
class TaskLabels:
    """Multi-hot labels of one benchmark task.

    Attributes:
        ids: int64 ``(N,)`` ``ecg_id`` of the kept records (records without a label dropped).
        names: the ``L`` class names, alphabetical.
        y: float32 ``(N, L)`` multi-hot.
        folds: int64 ``(N,)`` ``strat_fold``.
        task: task name.
    """

    ids: np.ndarray
    names: tuple[str, ...]
    y: np.ndarray
    folds: np.ndarray
    task: str = ""

    @property
    def splits(self) -> np.ndarray:
        """Split name per record (``train`` folds 1-8, ``val`` 9, ``test`` 10)."""
        return np.asarray([fold_to_split(int(f)) for f in self.folds], dtype=object)

    def subset(self, split: str) -> TaskLabels:
        """Rows of one split."""
        mask = self.splits == split
        return TaskLabels(self.ids[mask], self.names, self.y[mask], self.folds[mask], self.task)

    def as_dicts(self) -> dict[int, dict[str, float]]:
        """``{ecg_id: {class: 1.0/0.0}}``."""
        return {
            int(i): {n: float(v) for n, v in zip(self.names, row)}
            for i, row in zip(self.ids, self.y)
        }


def fold_to_split(fold: int) -> str:
    """Official PTB-XL split: folds 1-8 train, 9 val, 10 test."""
    if fold == 10:
        return "test"
    if fold == 9:
        return "val"
    if 1 <= fold <= 8:
        return "train"
    raise ValueError(f"strat_fold must be 1..10, got {fold}")


def _fs_column(fs: int) -> str:
    if fs == 100:
        return "filename_lr"
    if fs == 500:
        return "filename_hr"
    raise ValueError(f"PTB-XL records exist at 100 or 500 Hz, not {fs}")


def parse_scp_codes(text: object) -> dict[str, float] | None:
    """Parse one ``scp_codes`` cell (``"{'NORM': 100.0, 'SR': 0.0}"``).

    Returns:
        the dict (code -> likelihood in %), or ``None`` when the cell is blank or not a dict
        literal of numeric values.
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    try:
        value = ast.literal_eval(str(text))
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None
    if not isinstance(value, dict):
        return None
    out: dict[str, float] = {}
    for code, likelihood in value.items():
        if not isinstance(code, str) or not isinstance(likelihood, (int, float)):
            return None
        out[code.strip()] = float(likelihood)
    return out


def _load_statements(path: Path) -> pd.DataFrame:
    frame = read_table(path, index_col=0)
    require_columns(frame, path, STATEMENT_COLUMNS)
    frame = frame[frame.index.notna()]  # a blank code row (e.g. a repeated header) is no code
    frame.index = frame.index.astype(str).str.strip()
    for flag in ("diagnostic", "form", "rhythm"):
        frame[flag] = pd.to_numeric(frame[flag], errors="coerce").fillna(0.0) == 1.0
    return frame


def load_ptbxl(
    root: str | Path,
    *,
    database: str | Path | None = None,
    statements: str | Path | None = None,
) -> PtbxlIndex:
    """Build the PTB-XL index from the metadata files as distributed.

    Args:
        root: the PTB-XL folder (holds ``ptbxl_database.csv``, ``scp_statements.csv``,
            ``records100/``, ``records500/``).
        database: alternative database CSV (absolute, or relative to ``root``), e.g. a subset.
        statements: alternative ``scp_statements.csv``.

    Raises:
        MetadataError: missing files, missing columns, blank/non-integer ids or folds.
    """
    root = Path(root)
    db_path = root / database if database is not None else find_file(root, ["ptbxl_database.csv"])
    st_path = (
        root / statements
        if statements is not None
        else find_file(root, ["scp_statements.csv"], what="SCP statements file")
    )
    statements_frame = _load_statements(Path(st_path))
    frame = read_table(db_path, DATABASE_COLUMNS)
    ids = to_int_ids(frame["ecg_id"], db_path, "ecg_id")
    frame = frame.assign(
        ecg_id=ids,
        patient_id=to_int_ids(frame["patient_id"], db_path, "patient_id"),
        strat_fold=to_int_ids(frame["strat_fold"], db_path, "strat_fold"),
    )
    bad_fold = ~frame["strat_fold"].between(1, 10)
    if bool(bad_fold.any()):
        raise MetadataError(db_path, f"{int(bad_fold.sum())} row(s) with strat_fold outside 1..10")
    blank = frame["filename_lr"].isna() | frame["filename_hr"].isna()
    if bool(blank.any()):
        raise MetadataError(db_path, f"{int(blank.sum())} row(s) with blank filename_lr/_hr")
    if frame["ecg_id"].duplicated().any():
        raise MetadataError(db_path, "duplicate ecg_id values")
    codes = [parse_scp_codes(v) for v in frame["scp_codes"]]
    bad = [int(i) for i, c in zip(frame["ecg_id"], codes) if c is None]
    if bad:
        shown = ", ".join(str(i) for i in bad[:10])
        logger.warning(
            "%s: skipped %d row(s) with unparseable scp_codes (ecg_id %s%s)",
            Path(db_path).name,
            len(bad),
            shown,
            ", ..." if len(bad) > 10 else "",
        )
    frame["scp_codes"] = pd.Series(codes, index=frame.index, dtype=object)
    frame = frame[np.array([c is not None for c in codes], dtype=bool)].copy()  # [] = 0 columns
    frame["split"] = [fold_to_split(int(f)) for f in frame["strat_fold"]]
    frame["report"] = frame["report"].astype(object).where(frame["report"].notna(), None)
    if "recording_date" in frame.columns:
        frame["recording_date"] = pd.to_datetime(frame["recording_date"], errors="coerce")
    frame = frame.set_index("ecg_id").sort_index()
    return PtbxlIndex(root, frame, statements_frame, Path(db_path))


def task_codes(statements: pd.DataFrame, task: str) -> dict[str, str]:
    """Map each SCP code to its class name under ``task`` (codes outside the task are absent)."""
    if task == "all":
        return {code: code for code in statements.index}
    if task in ("diagnostic", "form", "rhythm"):
        return {code: code for code in statements.index[statements[task].to_numpy()]}
    if task in ("subdiagnostic", "superdiagnostic"):
        column = "diagnostic_subclass" if task == "subdiagnostic" else "diagnostic_class"
        diag = statements[statements["diagnostic"].to_numpy()]
        mapped = diag[column].dropna()
        return {str(code): str(name).strip() for code, name in mapped.items()}
    raise ValueError(f"unknown PTB-XL task {task!r}; choose one of {', '.join(PTBXL_TASKS)}")


def ptbxl_task(index: PtbxlIndex, task: str, *, min_samples: int = 0) -> TaskLabels:
    """Multi-hot labels of a benchmark task.

    Args:
        index: the PTB-XL index.
        task: one of :data:`PTBXL_TASKS`.
        min_samples: drop classes present in ``<= min_samples`` records of the index
            (0 keeps the full statement vocabulary).

    Returns:
        the labels of the records that have at least one class of the task.
    """
    mapping = task_codes(index.statements, task)
    names_all = sorted(set(mapping.values()))
    per_record: list[set[str]] = []
    unknown: set[str] = set()
    for codes in index.records["scp_codes"]:
        labels = set()
        for code in codes:
            if code in mapping:
                labels.add(mapping[code])
            elif code not in index.statements.index:
                unknown.add(code)
        per_record.append(labels)
    if unknown:
        logger.warning(
            "PTB-XL: %d scp code(s) not in scp_statements.csv ignored: %s",
            len(unknown),
            ", ".join(sorted(unknown)),
        )
    if min_samples > 0:
        counts: dict[str, int] = dict.fromkeys(names_all, 0)
        for labels in per_record:
            for name in labels:
                counts[name] += 1
        names_all = [n for n in names_all if counts[n] > min_samples]
    names = tuple(names_all)
    col = {n: i for i, n in enumerate(names)}
    ids = index.records.index.to_numpy(dtype=np.int64)
    folds = index.records["strat_fold"].to_numpy(dtype=np.int64)
    y = np.zeros((len(per_record), len(names)), dtype=np.float32)
    for row, labels in enumerate(per_record):
        for name in labels:
            if name in col:
                y[row, col[name]] = 1.0
    keep = y.sum(axis=1) > 0
    return TaskLabels(ids[keep], names, y[keep], folds[keep], task)


def ptbxl_ecg_label_frame(index: PtbxlIndex) -> pd.DataFrame:
    """:data:`~datamodules.labels.ECG_LABELS` for every record (DataFrame indexed by ecg_id)."""
    rows = [ptbxl_ecg_labels(codes) for codes in index.records["scp_codes"]]
    return pd.DataFrame(rows, index=index.records.index).astype(np.float32)


@dataclass
class PtbxlTaskStudies:
    """Studies of one PTB-XL label space plus its label names.

    Attributes:
        studies: one ECG-only :class:`Study` per record (report = PTB-XL ``report``).
        label_names: keys of ``Study.labels`` (task classes, or ECG_LABELS).
        task: the task name, or ``"ecg"`` for the ECG_LABELS vocabulary.
    """

    studies: list[Study]
    label_names: tuple[str, ...]
    task: str


def ptbxl_studies(
    index: PtbxlIndex,
    *,
    task: str = "superdiagnostic",
    fs: int = 100,
    label_space: Literal["task", "ecg"] = "task",
    min_samples: int = 0,
) -> PtbxlTaskStudies:
    """Build :class:`Study` objects from the index.

    Args:
        index: the PTB-XL index.
        task: benchmark task for ``label_space="task"`` (records without a label dropped).
        fs: 100 (``records100``) or 500 Hz (``records500``) record stems.
        label_space: ``task`` (task classes) or ``ecg`` (:data:`~datamodules.labels.ECG_LABELS`
            from the SCP codes, all records kept).
        min_samples: see :func:`ptbxl_task`.
    """
    column = _fs_column(fs)
    records = index.records
    if label_space == "task":
        labels = ptbxl_task(index, task, min_samples=min_samples)
        names = labels.names
        rows = records.loc[labels.ids]
        label_dicts = [{n: float(v) for n, v in zip(names, row)} for row in labels.y.tolist()]
        name = task
    elif label_space == "ecg":
        rows = records
        label_dicts = [ptbxl_ecg_labels(codes) for codes in rows["scp_codes"]]
        names = ECG_LABELS
        name = "ecg"
    else:
        raise ValueError(f"label_space must be 'task' or 'ecg', not {label_space!r}")
    dates = rows["recording_date"] if "recording_date" in rows.columns else None
    ids = rows.index.to_numpy(dtype=np.int64).tolist()
    patients = rows["patient_id"].to_numpy(dtype=np.int64).tolist()
    folds = rows["strat_fold"].to_numpy(dtype=np.int64).tolist()
    stems = rows[column].astype(str).tolist()
    reports = rows["report"].tolist()
    split_names = rows["split"].astype(str).tolist()
    studies = [
        Study(
            study_id=str(ids[i]),
            subject_id=str(patients[i]),
            ecg_path=index.root / stems[i],
            report=ptbxl_report_text(reports[i]),
            labels=label_dicts[i],
            split=split_names[i],
            dataset="ptbxl",
            ecg_time=to_datetime64(dates.iloc[i]) if dates is not None else None,
            extra={"ecg_id": ids[i], "strat_fold": folds[i], "task": name},
        )
        for i in range(len(ids))
    ]
    n_blank = sum(s.report is None for s in studies)
    if n_blank:
        logger.warning("PTB-XL: %d of %d record(s) have an empty report", n_blank, len(studies))
    return PtbxlTaskStudies(studies, tuple(names), name)


def load_task(
    root: str | Path,
    task: str = "superdiagnostic",
    *,
    fs: int = 100,
    label_space: Literal["task", "ecg"] = "task",
    min_samples: int = 0,
    database: str | Path | None = None,
    statements: str | Path | None = None,
) -> PtbxlTaskStudies:
    """Read PTB-XL and return the studies of one task (see :func:`ptbxl_studies`)."""
    index = load_ptbxl(root, database=database, statements=statements)
    return ptbxl_studies(index, task=task, fs=fs, label_space=label_space, min_samples=min_samples)
