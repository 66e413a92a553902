"""MIMIC-CXR reader for the DICOM (2.0.0/2.1.0) and JPG (2.0.0/2.1.0) releases.

Formats: DATASETS.md §3. Sources of each piece of the index:

* images: DICOM release ``cxr-record-list.csv.gz`` (``path`` -> ``.dcm``); JPG release
  ``mimic-cxr-2.0.0-metadata.csv.gz`` (path derived as
  ``files/p<2>/p<subject>/s<study>/<dicom>.jpg``).
* study time and view: ``mimic-cxr-2.0.0-metadata.csv.gz`` (``StudyDate`` + ``StudyTime`` whose
  leading zero is lost, ``ViewPosition``). The DICOM release does not ship it; pass the JPG
  release folder as ``meta_root`` (or put the file beside the record list). Without it study
  times are unknown (NaT: the study cannot be paired by time) and the view filter is skipped.
* split: ``mimic-cxr-2.0.0-split.csv.gz`` (``validate`` -> ``val``); without it subjects are split
  by :func:`datamodules.splits.hash_split`.
* labels: ``mimic-cxr-2.0.0-chexpert.csv.gz`` (or ``-negbio``), one row per study, raw values
  1/0/-1/blank kept in the index; :meth:`MimicCxrIndex.label_matrix` applies the policy.
* reports: ``files/p<2>/p<subject>/s<study>.txt`` beside the study folder, in the DICOM release
  (``reports_root``; defaults to ``root``).

One image is selected per study for training: the first of ``views`` (default PA, then AP) in
preference order, ties broken by ``dicom_id``. Studies without such an image (including images
with a blank ``ViewPosition``) keep ``image_path=None`` (the X-ray is missing; report and labels
remain) unless ``view_fallback``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from datamodules.errors import MetadataError
from datamodules.labels import XRAY_LABELS, UncertaintyPolicy, apply_uncertainty
from datamodules.reports import CXR_REPORT_SECTIONS, read_cxr_report
from datamodules.splits import hash_split, normalize_split
from datamodules.tables import find_file, read_table, study_datetime, to_int_ids

logger = logging.getLogger(__name__)

__all__ = [
    "LABEL_FILES",
    "METADATA_FILE",
    "RECORD_LIST_FILE",
    "SPLIT_FILE",
    "MimicCxrIndex",
    "cxr_report_path",
    "load_mimic_cxr",
]

RECORD_LIST_FILE = "cxr-record-list.csv.gz"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv.gz"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv.gz"
LABEL_FILES: dict[str, str] = {
    "chexpert": "mimic-cxr-2.0.0-chexpert.csv.gz",
    "negbio": "mimic-cxr-2.0.0-negbio.csv.gz",
}
_RAW_VALUES = {1.0, 0.0, -1.0}


@dataclass
class MimicCxrIndex:
    """The MIMIC-CXR index.

    Attributes:
        root: image release folder.
        image_format: ``dicom`` or ``jpg``.
        images: one row per image: ``dicom_id``, ``subject_id``, ``study_id``, ``image_path``
            (absolute, str), ``view`` ("" when unknown), ``study_time`` (datetime64[ns]).
        studies: one row per study: ``subject_id``, ``study_id``, ``study_time``, ``split``,
            ``image_path`` (selected image or None), ``dicom_id``, ``view``, ``n_images``,
            ``report_path`` (str), ``has_labels`` (bool) and the 14
            :data:`~datamodules.labels.XRAY_LABELS` columns with raw values 1/0/-1/NaN.
    """

    root: Path
    image_format: str
    images: pd.DataFrame
    studies: pd.DataFrame

    def __len__(self) -> int:
        return len(self.studies)

    def label_matrix(
        self,
        policy: UncertaintyPolicy = "ignore",
        *,
        blank: float = 0.0,
        rows: pd.DataFrame | None = None,
    ) -> np.ndarray:
        """float32 ``(N, 14)`` labels of ``rows`` (default all studies) after the policy.

        Studies without a label row are all-NaN whatever ``blank`` is.
        """
        rows = self.studies if rows is None else rows
        values = apply_uncertainty(rows[list(XRAY_LABELS)].to_numpy(), policy, blank=blank)
        values[~rows["has_labels"].to_numpy(dtype=bool)] = np.nan
        return values

    def read_reports(
        self,
        rows: pd.DataFrame | None = None,
        *,
        sections: Sequence[str] = CXR_REPORT_SECTIONS,
        phi_token: str = "",
        progress: bool = True,
    ) -> list[str | None]:
        """Report texts of ``rows`` (default all studies); None where missing or empty."""
        rows = self.studies if rows is None else rows
        paths = rows["report_path"].tolist()
        texts = [
            read_cxr_report(p, sections=sections, phi_token=phi_token)
            for p in tqdm(
                paths, desc="MIMIC-CXR reports", disable=not progress or len(paths) < 1000
            )
        ]
        n_none = sum(t is None for t in texts)
        if n_none:
            logger.warning(
                "MIMIC-CXR: %d of %d report(s) missing or without FINDINGS/IMPRESSION text",
                n_none,
                len(texts),
            )
        return texts


def _group_folder(subject: pd.Series) -> pd.Series:
    text = subject.astype(str)
    return "files/p" + text.str[:2] + "/p" + text


def cxr_report_path(root: str | Path, subject_id: int, study_id: int) -> Path:
    """``<root>/files/p<2>/p<subject>/s<study>.txt`` (beside the study folder)."""
    sid = str(int(subject_id))
    return Path(root) / "files" / f"p{sid[:2]}" / f"p{sid}" / f"s{int(study_id)}.txt"


def _optional(folders: Sequence[Path], name: str) -> Path | None:
    for folder in folders:
        try:
            return find_file(folder, [name])
        except MetadataError:
            continue
    return None


def _read_ids(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    frame = read_table(path, columns)
    for col in ("subject_id", "study_id"):
        if col in columns:
            frame[col] = to_int_ids(frame[col], path, col)
    if "dicom_id" in columns:
        if frame["dicom_id"].isna().any():
            raise MetadataError(path, "blank dicom_id value(s)")
        frame["dicom_id"] = frame["dicom_id"].astype(str).str.strip()
    return frame


def _read_labels(path: Path) -> pd.DataFrame:
    frame = _read_ids(path, ["subject_id", "study_id", *XRAY_LABELS])
    frame = frame[["study_id", *XRAY_LABELS]].drop_duplicates("study_id", keep="first")
    for name in XRAY_LABELS:
        values = pd.to_numeric(frame[name], errors="coerce")
        bad = (frame[name].notna() & values.isna()) | (values.notna() & ~values.isin(_RAW_VALUES))
        if bool(bad.any()):
            raise MetadataError(
                path, f"column {name!r}: {int(bad.sum())} value(s) not in 1.0/0.0/-1.0/blank"
            )
        frame[name] = values.astype(np.float64)
    return frame.set_index("study_id")


def _select_images(
    images: pd.DataFrame, views: Sequence[str] | None, fallback: bool, views_known: bool
) -> pd.DataFrame:
    ranked = images.copy()
    if views is None or not views_known:
        ranked["rank"] = 0.0
    else:
        order = {v.upper(): i for i, v in enumerate(views)}
        ranked["rank"] = ranked["view"].str.upper().map(order).astype(float)
        if fallback:
            ranked["rank"] = ranked["rank"].fillna(float(len(views) + 1))
    ranked = ranked.dropna(subset=["rank"])
    ranked = ranked.sort_values(["study_id", "rank", "dicom_id"], kind="stable")
    return ranked.drop_duplicates("study_id", keep="first")


def load_mimic_cxr(
    root: str | Path,
    *,
    image_format: Literal["dicom", "jpg"] | None = None,
    meta_root: str | Path | None = None,
    reports_root: str | Path | None = None,
    labeler: Literal["chexpert", "negbio"] = "chexpert",
    views: Sequence[str] | None = ("PA", "AP"),
    view_fallback: bool = False,
    val_frac: float = 0.05,
    test_frac: float = 0.05,
    split_salt: str = "medclip",
) -> MimicCxrIndex:
    """Build the MIMIC-CXR index from the CSVs as distributed.

    Args:
        root: the DICOM release (``cxr-record-list.csv.gz``) or JPG release
            (``mimic-cxr-2.0.0-metadata.csv.gz``) folder.
        image_format: ``dicom`` or ``jpg``; detected from the files in ``root`` when None.
        meta_root: folder with the metadata/split/label CSVs when they are not in ``root``
            (typically the JPG release for a DICOM root).
        reports_root: folder whose ``files/`` holds the report ``.txt`` files (default ``root``).
        labeler: ``chexpert`` or ``negbio`` label file.
        views: accepted views in preference order for the study's image (None: any view).
        view_fallback: use any view when a study has none of ``views``.
        val_frac: hash-split val fraction (only without the split CSV).
        test_frac: hash-split test fraction (only without the split CSV).
        split_salt: hash-split salt.

    Raises:
        MetadataError: missing image list, missing columns, malformed ids or label values.
    """
    root = Path(root)
    meta_dirs = [Path(meta_root)] if meta_root is not None else []
    meta_dirs.append(root)
    if image_format is None:
        if _optional([root], RECORD_LIST_FILE) is not None:
            image_format = "dicom"
        elif _optional([root], METADATA_FILE) is not None:
            image_format = "jpg"
        else:
            raise MetadataError(
                root / RECORD_LIST_FILE,
                f"file not found (nor {METADATA_FILE}); is this a MIMIC-CXR release folder?",
            )
    if image_format not in ("dicom", "jpg"):
        raise ValueError(f"image_format must be 'dicom' or 'jpg', not {image_format!r}")

    meta_path = _optional(meta_dirs, METADATA_FILE)
    if image_format == "dicom":
        rec_path = find_file(root, [RECORD_LIST_FILE], what="MIMIC-CXR record list")
        images = _read_ids(rec_path, ["subject_id", "study_id", "dicom_id", "path"])
        images["image_path"] = [str(root / str(p)) for p in images["path"]]
        images = images[["dicom_id", "subject_id", "study_id", "image_path"]]
    else:
        if meta_path is None:
            meta_path = find_file(root, [METADATA_FILE], what="MIMIC-CXR-JPG metadata")
        images = _read_ids(meta_path, ["dicom_id", "subject_id", "study_id"])
        folder = _group_folder(images["subject_id"])
        rel = folder + "/s" + images["study_id"].astype(str) + "/" + images["dicom_id"] + ".jpg"
        images["image_path"] = [str(root / r) for r in rel]
        images = images[["dicom_id", "subject_id", "study_id", "image_path"]]
    images = images.drop_duplicates("dicom_id", keep="first").reset_index(drop=True)

    if meta_path is not None:
        meta = _read_ids(meta_path, ["dicom_id", "StudyDate", "StudyTime", "ViewPosition"])
        meta["study_time"] = study_datetime(meta["StudyDate"], meta["StudyTime"])
        meta["view"] = meta["ViewPosition"].astype("string").fillna("").str.strip().astype(str)
        meta = meta.drop_duplicates("dicom_id").set_index("dicom_id")
        # reindex, not map: map() with an empty table cannot cast back to datetime (fuzz)
        times = meta["study_time"].reindex(images["dicom_id"].to_numpy())
        images["study_time"] = times.to_numpy(dtype="datetime64[ns]")
        images["view"] = images["dicom_id"].map(meta["view"]).fillna("").astype(str)
        n_missing = int(images["study_time"].isna().sum())
        if n_missing:
            logger.warning("%s: %d image(s) without a valid study time", meta_path.name, n_missing)
    else:
        logger.warning(
            "MIMIC-CXR: %s not found in %s; study times unknown, view filter skipped",
            METADATA_FILE,
            ", ".join(str(d) for d in meta_dirs),
        )
        images["study_time"] = pd.Series(pd.NaT, index=images.index, dtype="datetime64[ns]")
        images["view"] = ""

    study_groups = images.groupby("study_id", sort=True)
    studies = pd.DataFrame(
        {
            "subject_id": study_groups["subject_id"].first(),
            "study_time": study_groups["study_time"].min(),
            "n_images": study_groups.size(),
        }
    )
    selected = _select_images(
        images, views, view_fallback, views_known=meta_path is not None
    ).set_index("study_id")
    studies["dicom_id"] = selected["dicom_id"].reindex(studies.index)
    studies["image_path"] = selected["image_path"].reindex(studies.index)
    studies["view"] = selected["view"].reindex(studies.index).fillna("")
    studies["image_path"] = (
        studies["image_path"].astype(object).where(studies["image_path"].notna(), None)
    )
    studies["dicom_id"] = (
        studies["dicom_id"].astype(object).where(studies["dicom_id"].notna(), None)
    )

    split_path = _optional(meta_dirs, SPLIT_FILE)
    hashed = pd.Series(
        hash_split(
            studies["subject_id"].to_numpy(),
            val_frac=val_frac,
            test_frac=test_frac,
            salt=split_salt,
        ),
        index=studies.index,
    )
    if split_path is not None:
        split = _read_ids(split_path, ["dicom_id", "study_id", "split"])
        try:
            split["split"] = [normalize_split(s) for s in split["split"].astype(str)]
        except ValueError as exc:
            raise MetadataError(split_path, f"column 'split': {exc}") from exc
        per_study = split.drop_duplicates("study_id").set_index("study_id")["split"]
        studies["split"] = per_study.reindex(studies.index)
        n_missing = int(studies["split"].isna().sum())
        if n_missing:
            logger.warning(
                "%s: %d study(ies) without a split row; hashed by subject",
                split_path.name,
                n_missing,
            )
        studies["split"] = studies["split"].fillna(hashed).astype(str)
    else:
        logger.warning("MIMIC-CXR: %s not found; splitting subjects by hash", SPLIT_FILE)
        studies["split"] = hashed.astype(str)

    label_path = _optional(meta_dirs, LABEL_FILES[labeler])
    if label_path is not None:
        labels = _read_labels(label_path)
        studies["has_labels"] = studies.index.isin(labels.index)
        aligned = labels.reindex(studies.index)
        for name in XRAY_LABELS:
            studies[name] = aligned[name].to_numpy(dtype=np.float64)
    else:
        logger.warning("MIMIC-CXR: %s not found; X-ray labels unknown (NaN)", LABEL_FILES[labeler])
        studies["has_labels"] = False
        for name in XRAY_LABELS:
            studies[name] = np.nan

    report_root = Path(reports_root) if reports_root is not None else root
    studies = studies.reset_index()
    studies["report_path"] = [
        str(cxr_report_path(report_root, s, t))
        for s, t in zip(studies["subject_id"], studies["study_id"])
    ]
    n_no_image = int(studies["image_path"].isna().sum())
    if n_no_image:
        logger.info("MIMIC-CXR: %d study(ies) have no image in views %s", n_no_image, views)
    return MimicCxrIndex(root, image_format, images, studies)
