"""Torch dataset over :class:`~datamodules.types.Study` objects.

A sample is a dict::

    xray      float32 (1, S, S) tensor, normalised, or None when missing/unreadable
    ecg       float32 (12, L) tensor, preprocessed, or None when missing/unreadable
    text      report string ("" when missing)
    present   bool (3,) tensor in MODALITY_ORDER (xray, ecg, text)
    labels    float32 (n_labels,) tensor; NaN = unknown
    study_id  str

Bad records: with ``skip_bad=True`` a file whose reader raises
:class:`~datamodules.errors.MedclipDataError` is logged once (file name and reason only), its
modality is marked missing for that sample (the rest of the sample and of the batch is kept), and
it is counted in :attr:`StudyDataset.bad_records`. The count lives in shared memory, so it is
correct with ``num_workers > 0`` too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.cxr_io import read_cxr
from datamodules.ecg_io import read_ecg
from datamodules.errors import CxrReadError, EcgReadError, MedclipDataError
from datamodules.seeding import sample_rng
from datamodules.transforms import (
    CxrTransformConfig,
    EcgTransformConfig,
    preprocess_cxr,
    preprocess_ecg,
)
from datamodules.types import Study

if TYPE_CHECKING:
    from datamodules.cache import PreprocessedCache

log = logging.getLogger(__name__)

#: Column of the bad-record table (and of ``present``) per image/signal modality.
_XRAY, _ECG = 0, 1
_MODALITY_NAMES = ("X-ray", "ECG")
_MAX_REASON = 300  # characters of a reader's message that reach the log

Sample = dict[str, Any]


def display_name(path: str | Path | None) -> str:
    """File name without folders: MIMIC and CheXpert folders carry subject ids, names do not."""
    return Path(str(path)).name if path is not None else "<none>"


def labels_matrix(studies: Sequence[Study], label_names: Sequence[str]) -> np.ndarray:
    """``(N, L)`` float32 label table from ``Study.labels``; NaN where a label is unknown."""
    out = np.full((len(studies), len(label_names)), np.nan, dtype=np.float32)
    for i, study in enumerate(studies):
        for j, name in enumerate(label_names):
            value = study.labels.get(name)
            if value is not None:
                out[i, j] = float(value)
    return out


def union_label_names(studies: Sequence[Study]) -> list[str]:
    """Every label name used by ``studies``, in order of first appearance."""
    seen: dict[str, None] = {}
    for study in studies:
        for name in study.labels:
            seen.setdefault(name, None)
    return list(seen)


def _path_key(path: str | Path | None) -> str:
    return os.path.abspath(str(path)) if path is not None else ""


class StudyDataset(Dataset[Sample]):
    """Reads, preprocesses and returns one study per index.

    Args:
        studies: the studies (any modality may be missing).
        ecg_cfg: ECG preprocessing; ``None`` never loads ECGs (e.g. X-ray classification).
        cxr_cfg: X-ray preprocessing; ``None`` never loads X-rays.
        label_names: label vocabulary; ``labels[j]`` is ``study.labels[label_names[j]]`` or NaN.
        cache: an opened preprocessing cache; studies found in it (same id and same files) are
            read from it, the others from disk.
        skip_bad: log and mask unreadable files (True) or raise the reader's error (False).
    """

    def __init__(
        self,
        studies: Sequence[Study],
        ecg_cfg: EcgTransformConfig | None,
        cxr_cfg: CxrTransformConfig | None,
        label_names: Sequence[str],
        cache: PreprocessedCache | None = None,
        skip_bad: bool = True,
    ) -> None:
        self.studies = list(studies)
        self.ecg_cfg = ecg_cfg
        self.cxr_cfg = cxr_cfg
        self.label_names = list(label_names)
        self.cache = cache
        self.skip_bad = skip_bad
        self._labels = labels_matrix(self.studies, self.label_names)
        # Shared memory: workers flag bad files here, the main process reads the count.
        self._bad = torch.zeros((len(self.studies), 2), dtype=torch.bool).share_memory_()
        self._cache_rows = self._match_cache(cache)
        self._random_crop = getattr(ecg_cfg, "crop", "center") == "random"
        if cache is not None and self._random_crop and (self._cache_rows[:, _ECG] >= 0).any():
            log.info("ECG random crop is not applied to cached ECGs (the cache holds centre crops)")

    def _match_cache(self, cache: PreprocessedCache | None) -> np.ndarray:
        """``(N, 2)`` cache row of each study's X-ray and ECG file (-1: not cached)."""
        rows = np.full((len(self.studies), 2), -1, dtype=np.int64)
        if cache is None:
            return rows
        for i, study in enumerate(self.studies):
            for col, path in ((_XRAY, study.xray_path), (_ECG, study.ecg_path)):
                if path is not None:
                    row = cache.row_of_file(col, _path_key(path))
                    rows[i, col] = -1 if row is None else row
        wanted = np.array([[s.xray_path is not None, s.ecg_path is not None] for s in self.studies])
        hits, total = int((rows >= 0).sum()), int(wanted.sum()) if len(wanted) else 0
        if hits < total:
            log.info("cache holds %d of %d files; the rest are decoded from disk", hits, total)
        return rows

    def __len__(self) -> int:
        return len(self.studies)

    @property
    def bad_records(self) -> int:
        """Number of unreadable (study, modality) files met so far, over all workers."""
        return int(self._bad.sum().item())

    def bad_files(self) -> list[str]:
        """Paths of the unreadable files met so far (for the user; never logged)."""
        out: list[str] = []
        for i, col in self._bad.nonzero().tolist():
            study = self.studies[i]
            out.append(str(study.xray_path if col == _XRAY else study.ecg_path))
        return out

    def __getitem__(self, index: int) -> Sample:
        study = self.studies[index]
        xray = self._load_xray(index, study)
        ecg = self._load_ecg(index, study)
        text = study.report or ""
        present = torch.tensor([xray is not None, ecg is not None, bool(text.strip())])
        return {
            "xray": xray,
            "ecg": ecg,
            "text": text,
            # report parts for text_mode=per_modality (tri-modal studies keep both in ``extra``;
            # single-modality datasets fall back to the one report they have)
            "text_xray": str(study.extra.get("cxr_report", text) or ""),
            "text_ecg": str(study.extra.get("ecg_report", text) or ""),
            "present": present,
            "labels": torch.from_numpy(self._labels[index].copy()),
            "study_id": study.study_id,
        }

    def _cached(self, index: int, col: int) -> bool | None:
        """True/False: the cache holds this file / marked it unreadable; None: not cached."""
        row = int(self._cache_rows[index, col])
        if row < 0 or self.cache is None:
            return None
        return bool(self.cache.present[row, col])

    def _load_xray(self, index: int, study: Study) -> torch.Tensor | None:
        if self.cxr_cfg is None or study.xray_path is None or bool(self._bad[index, _XRAY]):
            return None
        cached = self._cached(index, _XRAY)
        if cached and self.cache is not None:
            return torch.from_numpy(self.cache.xray(int(self._cache_rows[index, _XRAY])))[None]
        if cached is False and self.skip_bad:
            self._mark_bad(index, _XRAY, study.xray_path, "unreadable when the cache was built")
            return None
        try:
            pixels = preprocess_cxr(read_cxr(study.xray_path), self.cxr_cfg)
            _check_finite(pixels, study.xray_path, CxrReadError)
        except (MedclipDataError, OSError) as exc:
            self._handle(index, _XRAY, study.xray_path, exc, CxrReadError)
            return None
        return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None]

    def _load_ecg(self, index: int, study: Study) -> torch.Tensor | None:
        if self.ecg_cfg is None or study.ecg_path is None or bool(self._bad[index, _ECG]):
            return None
        cached = self._cached(index, _ECG)
        if cached and self.cache is not None:
            return torch.from_numpy(self.cache.ecg(int(self._cache_rows[index, _ECG])))
        if cached is False and self.skip_bad:
            self._mark_bad(index, _ECG, study.ecg_path, "unreadable when the cache was built")
            return None
        try:
            rng = sample_rng() if self._random_crop else None
            signal = preprocess_ecg(read_ecg(study.ecg_path), self.ecg_cfg, rng)
            _check_finite(signal, study.ecg_path, EcgReadError)
        except (MedclipDataError, OSError) as exc:
            self._handle(index, _ECG, study.ecg_path, exc, EcgReadError)
            return None
        return torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32))

    def _handle(
        self,
        index: int,
        col: int,
        path: str | Path,
        exc: Exception,
        kind: type[MedclipDataError],
    ) -> None:
        problem = exc.problem if isinstance(exc, MedclipDataError) else type(exc).__name__
        if not self.skip_bad:
            if isinstance(exc, MedclipDataError) and exc.path is not None:
                raise exc
            raise kind(path, problem) from exc
        self._mark_bad(index, col, path, problem)

    def _mark_bad(self, index: int, col: int, path: str | Path, reason: str) -> None:
        if bool(self._bad[index, col]):
            return
        self._bad[index, col] = True
        if len(reason) > _MAX_REASON:
            reason = reason[:_MAX_REASON] + "..."
        log.warning(
            "skipping unreadable %s %s: %s (modality masked as missing)",
            _MODALITY_NAMES[col],
            display_name(path),
            reason,
        )


def _check_finite(array: np.ndarray, path: str | Path, kind: type[MedclipDataError]) -> None:
    if not np.isfinite(array).all():
        raise kind(path, "non-finite values after preprocessing")
