"""CheXpert v1.0 reader (small or full release): image index, labels, official split, 5x200.

Formats: DATASETS.md §4. ``train.csv`` / ``valid.csv`` list one image per row; ``Path`` starts
with the release folder name (``CheXpert-v1.0-small/`` or ``CheXpert-v1.0/``), which is stripped
and replaced by ``root``. Labels are kept raw (1/0/-1/blank); :meth:`ChexpertIndex.label_matrix`
applies the uncertainty policy of :func:`datamodules.labels.apply_uncertainty`.
Official split: ``train.csv`` -> ``train``, ``valid.csv`` -> ``val`` (no test CSV ships).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from datamodules.errors import MetadataError
from datamodules.labels import (
    CHEXPERT_COMPETITION_LABELS,
    XRAY_LABELS,
    UncertaintyPolicy,
    apply_uncertainty,
)
from datamodules.splits import normalize_split
from datamodules.tables import find_file, read_table

logger = logging.getLogger(__name__)

__all__ = ["CSV_COLUMNS", "SPLIT_FILES", "ChexpertIndex", "chexpert_5x200", "load_chexpert"]

CSV_COLUMNS: tuple[str, ...] = ("Path", "Frontal/Lateral", *XRAY_LABELS)
SPLIT_FILES: dict[str, str] = {"train": "train.csv", "val": "valid.csv"}
_RAW_VALUES = (1.0, 0.0, -1.0)


@dataclass
class ChexpertIndex:
    """The CheXpert image index.

    Attributes:
        root: the release folder (holds ``train.csv``, ``valid.csv``, ``train/``, ``valid/``).
        images: one row per image: ``path`` (absolute, str), ``rel_path`` (relative to
            ``root``), ``patient`` (``patient00001``), ``study`` (``patient00001/study1``),
            ``view`` (``Frontal``/``Lateral``), ``ap_pa``, ``sex``, ``age``, ``split``
            (``train``/``val``) and the 14 :data:`~datamodules.labels.XRAY_LABELS` raw columns.
    """

    root: Path
    images: pd.DataFrame

    def __len__(self) -> int:
        return len(self.images)

    def label_matrix(
        self,
        policy: UncertaintyPolicy = "ignore",
        *,
        blank: float = 0.0,
        rows: pd.DataFrame | None = None,
    ) -> np.ndarray:
        """float32 ``(N, 14)`` labels of ``rows`` (default all images) after the policy."""
        rows = self.images if rows is None else rows
        return apply_uncertainty(rows[list(XRAY_LABELS)].to_numpy(), policy, blank=blank)


def _resolve_root(root: Path) -> Path:
    if (root / "train.csv").is_file() or (root / "valid.csv").is_file():
        return root
    for name in ("CheXpert-v1.0-small", "CheXpert-v1.0"):
        if (root / name / "train.csv").is_file() or (root / name / "valid.csv").is_file():
            return root / name
    return root


def _strip_release(rel: str) -> str:
    parts = rel.replace("\\", "/").split("/")
    if parts and parts[0].startswith("CheXpert-v1.0"):
        parts = parts[1:]
    return "/".join(parts)


def _read_split(path: Path, split: str, root: Path) -> pd.DataFrame:
    frame = read_table(path, CSV_COLUMNS)
    if frame["Path"].isna().any():
        raise MetadataError(path, f"{int(frame['Path'].isna().sum())} blank Path value(s)")
    rel = [_strip_release(str(p)) for p in frame["Path"]]
    parts = [r.split("/") for r in rel]
    if any(len(p) < 3 for p in parts):
        raise MetadataError(path, "Path values must look like <split>/<patient>/<study>/<view>.jpg")
    out = pd.DataFrame(
        {
            "path": [str(root / r) for r in rel],
            "rel_path": rel,
            "patient": [p[-3] for p in parts],
            "study": [f"{p[-3]}/{p[-2]}" for p in parts],
            "view": frame["Frontal/Lateral"].astype("string").fillna("").astype(str).to_numpy(),
            "ap_pa": frame.get("AP/PA", pd.Series("", index=frame.index))
            .astype("string")
            .fillna("")
            .astype(str)
            .to_numpy(),
            "sex": frame.get("Sex", pd.Series("", index=frame.index)).astype(str).to_numpy(),
            "age": pd.to_numeric(
                frame.get("Age", pd.Series(np.nan, index=frame.index)), errors="coerce"
            ).to_numpy(dtype=np.float64),
            "split": split,
        }
    )
    for name in XRAY_LABELS:
        values = pd.to_numeric(frame[name], errors="coerce")
        bad = (frame[name].notna() & values.isna()) | (values.notna() & ~values.isin(_RAW_VALUES))
        if bool(bad.any()):
            raise MetadataError(
                path, f"column {name!r}: {int(bad.sum())} value(s) not in 1.0/0.0/-1.0/blank"
            )
        out[name] = values.to_numpy(dtype=np.float64)
    return out


def load_chexpert(root: str | Path, *, splits: Sequence[str] = ("train", "val")) -> ChexpertIndex:
    """Build the CheXpert index from ``train.csv`` / ``valid.csv``.

    Args:
        root: the release folder (``CheXpert-v1.0-small``) or its parent.
        splits: which official CSVs to read (``train`` -> train.csv, ``val`` -> valid.csv).

    Raises:
        MetadataError: a requested CSV is missing, lacks columns or has invalid label values.
    """
    base = _resolve_root(Path(root))
    frames = []
    for split in splits:
        name = normalize_split(split)
        if name not in SPLIT_FILES:
            raise ValueError("CheXpert ships train.csv and valid.csv only (no test split)")
        path = find_file(base, [SPLIT_FILES[name]], what=f"CheXpert {name} CSV")
        frames.append(_read_split(path, name, base))
    images = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return ChexpertIndex(base, images)


def chexpert_5x200(
    index: ChexpertIndex,
    *,
    n_per_class: int = 200,
    seed: int = 0,
    classes: Sequence[str] = CHEXPERT_COMPETITION_LABELS,
) -> pd.DataFrame:
    """The CheXpert 5x200 zero-shot subset (GLoRIA/MedCLIP recipe, DATASETS.md §4.3).

    From the train images, frontal only, blanks filled with 0: for each class keep images where
    the class is 1 and every other observation except ``No Finding`` is 0 (uncertain rows drop
    out), then draw ``n_per_class`` with a seeded generator (all of them when fewer exist).

    Returns:
        DataFrame with ``path``, ``study``, ``patient`` and ``label`` (class name), one row per
        image, classes in the order given.
    """
    images = index.images
    pool = images[(images["split"] == "train") & (images["view"].str.lower() == "frontal")]
    values = pool[list(XRAY_LABELS)].fillna(0.0)
    others_all = [n for n in XRAY_LABELS if n != "No Finding"]
    rng = np.random.default_rng(seed)
    parts = []
    for cls in classes:
        if cls not in XRAY_LABELS:
            raise ValueError(f"unknown CheXpert class {cls!r}")
        rest = [n for n in others_all if n != cls]
        mask = (values[cls] == 1.0) & (values[rest] == 0.0).all(axis=1)
        candidates = pool[mask.to_numpy()]
        if len(candidates) < n_per_class:
            logger.warning(
                "CheXpert 5x200: only %d candidate(s) for %s (wanted %d)",
                len(candidates),
                cls,
                n_per_class,
            )
        take = min(n_per_class, len(candidates))
        picked = np.sort(rng.choice(len(candidates), size=take, replace=False))
        chosen = candidates.iloc[picked][["path", "study", "patient"]].copy()
        chosen["label"] = cls
        parts.append(chosen)
    return pd.concat(parts, ignore_index=True)
