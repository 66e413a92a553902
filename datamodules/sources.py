"""One entry point from a dataset on disk to a list of :class:`~datamodules.types.Study`.

``load_studies(dataset, root, split=None, **kw)``:

* ``"synthetic"``: the synthetic generator's OUT folder. Tri-modal studies from
  ``OUT/mimic-cxr`` (DICOM; metadata/split/labels from ``OUT/mimic-cxr-jpg``) paired with
  ``OUT/mimic-iv-ecg``, exactly as for ``"mimic"``.
* ``"mimic"``: MIMIC-CXR + MIMIC-IV-ECG. ``root`` is either a parent folder holding
  ``mimic-cxr/``, ``mimic-iv-ecg/`` and ``mimic-cxr-jpg/``, or the CXR release folder; override
  with ``cxr_root``, ``ecg_root``, ``jpg_root``. ``image_format="jpg"`` takes the images from
  ``jpg_root`` and the reports from ``cxr_root``.
* ``"ptbxl"``: ECG + report per record; labels of ``task`` (default ``superdiagnostic``), or
  ``label_space="ecg"`` for :data:`~datamodules.labels.ECG_LABELS`.
* ``"chexpert"``: X-ray only, one study per image (frontal only unless ``frontal_only=False``).

Labels: ``Study.labels`` has every name of :data:`~datamodules.labels.XRAY_LABELS` and
:data:`~datamodules.labels.ECG_LABELS` (1.0/0.0/NaN, NaN where the modality or its label is
missing), except PTB-XL with ``label_space="task"`` (the task's classes).
Tri-modal text = CXR report (FINDINGS + IMPRESSION) + ECG machine statements; each part is also
in ``extra["cxr_report"]`` / ``extra["ecg_report"]``.

Split: MIMIC-CXR's official split for every study of a subject that has CXR studies (also its
ECG-only rows), a hash of ``subject_id`` otherwise, so subjects never cross splits.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from datamodules.chexpert import load_chexpert
from datamodules.labels import ECG_LABELS, XRAY_LABELS, UncertaintyPolicy
from datamodules.mimic_cxr import MimicCxrIndex, load_mimic_cxr
from datamodules.mimic_ecg import MimicEcgIndex, load_mimic_ecg
from datamodules.pairing import PairingConfig, pair_cxr_ecg, subject_splits
from datamodules.ptbxl import load_task
from datamodules.reports import combine_reports
from datamodules.splits import normalize_split
from datamodules.types import Study

logger = logging.getLogger(__name__)

__all__ = ["DATASETS", "load_studies", "mimic_studies"]

#: Dataset names accepted by :func:`load_studies`.
DATASETS: tuple[str, ...] = ("synthetic", "mimic", "ptbxl", "chexpert")

_MIMIC_KW = {
    "cxr_root",
    "ecg_root",
    "jpg_root",
    "image_format",
    "pairing",
    "pair_window_days",
    "keep_unpaired_ecg",
    "uncertainty_policy",
    "blank",
    "views",
    "view_fallback",
    "labeler",
    "phi_token",
    "val_frac",
    "test_frac",
    "split_salt",
    "progress",
}
_PTBXL_KW = {"task", "fs", "label_space", "min_samples", "database", "statements"}
_CHEXPERT_KW = {"uncertainty_policy", "blank", "frontal_only"}


def _check_kw(dataset: str, kw: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(kw) - allowed)
    if unknown:
        raise TypeError(
            f"load_studies({dataset!r}): unexpected keyword(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def _nan_labels(names: Sequence[str]) -> dict[str, float]:
    return dict.fromkeys(names, math.nan)


def _pairing_config(kw: Mapping[str, Any]) -> PairingConfig:
    pairing = kw.get("pairing")
    if isinstance(pairing, PairingConfig):
        cfg = pairing
    else:
        cfg = PairingConfig(rule=pairing) if pairing is not None else PairingConfig()
    changes: dict[str, Any] = {}
    if kw.get("pair_window_days") is not None:
        changes["window_days"] = float(kw["pair_window_days"])
    if kw.get("keep_unpaired_ecg") is not None:
        changes["keep_unpaired_ecg"] = bool(kw["keep_unpaired_ecg"])
    return dataclasses.replace(cfg, **changes) if changes else cfg


def mimic_studies(
    cxr: MimicCxrIndex,
    ecg: MimicEcgIndex,
    *,
    pairing: PairingConfig | None = None,
    split: str | None = None,
    uncertainty_policy: UncertaintyPolicy = "ignore",
    blank: float = 0.0,
    phi_token: str = "",
    dataset: str = "mimic",
    progress: bool = True,
) -> list[Study]:
    """Pair a MIMIC-CXR and a MIMIC-IV-ECG index into tri-modal studies.

    Args:
        cxr: MIMIC-CXR index.
        ecg: MIMIC-IV-ECG index.
        pairing: pairing rule (default nearest ECG within 60 days).
        split: keep only this split (reports are read only for kept studies).
        uncertainty_policy: CheXpert ``-1`` policy for the X-ray labels.
        blank: value of blank (not mentioned) X-ray labels.
        phi_token: replacement for ``___`` in CXR reports (default: removed).
        dataset: value of ``Study.dataset``.
        progress: show a progress bar while reading reports.

    Returns:
        studies in CXR-study order (ECG-only studies last). Study ids: ``"<cxr>-<ecg>"`` for
        pairs, ``"<cxr>"`` or ``"<ecg>"`` when one modality is missing.
    """
    cfg = pairing or PairingConfig()
    cs, es = cxr.studies, ecg.records
    pairs = pair_cxr_ecg(cs, es, cfg)
    has_c = pairs["cxr_row"].to_numpy() >= 0
    has_e = pairs["ecg_row"].to_numpy() >= 0
    c_rows = np.where(has_c, pairs["cxr_row"].to_numpy(), 0)
    e_rows = np.where(has_e, pairs["ecg_row"].to_numpy(), 0)
    # a trailing sentinel keeps both gathers valid when one index is empty (found by fuzzing)
    c_split = np.append(cs["split"].to_numpy(dtype=object), "")
    e_split = np.append(es["split"].to_numpy(dtype=object), "")
    fallback = np.where(has_c, c_split[c_rows], e_split[e_rows])
    splits = subject_splits(
        pairs["subject_id"].to_numpy(),
        cs["subject_id"].to_numpy(),
        cs["split"].to_numpy(),
        fallback,
    )
    keep = np.ones(len(pairs), dtype=bool) if split is None else splits == normalize_split(split)
    idx = np.flatnonzero(keep)
    pairs, splits, has_c, has_e = pairs.iloc[idx], splits[idx], has_c[idx], has_e[idx]
    c_rows, e_rows = c_rows[idx], e_rows[idx]

    needed = np.unique(c_rows[has_c])
    texts = cxr.read_reports(cs.iloc[needed], phi_token=phi_token, progress=progress)
    cxr_text = dict(zip(needed.tolist(), texts))
    xray_labels = cxr.label_matrix(uncertainty_policy, blank=blank, rows=cs.iloc[needed])
    xray_by_row = dict(zip(needed.tolist(), xray_labels))
    ecg_label_values = es[list(ECG_LABELS)].to_numpy(dtype=np.float32)

    c_ids = cs["study_id"].to_numpy(dtype=np.int64).tolist()
    c_paths = cs["image_path"].tolist()
    c_times = cs["study_time"].to_numpy(dtype="datetime64[ns]")
    c_dicom = cs["dicom_id"].tolist()
    c_view = cs["view"].astype(str).tolist()
    e_ids = es["study_id"].to_numpy(dtype=np.int64).tolist()
    e_paths = es["path"].astype(str).tolist()
    e_times = es["ecg_time"].to_numpy(dtype="datetime64[ns]")
    e_reports = es["report"].tolist()
    studies: list[Study] = []
    iterator = zip(
        pairs["subject_id"].to_numpy(),
        pairs["delta_days"].to_numpy(),
        c_rows,
        e_rows,
        has_c,
        has_e,
        splits,
    )
    for subject, delta, c_row, e_row, hc, he, sp in tqdm(
        iterator, total=len(pairs), desc="studies", disable=not progress or len(pairs) < 10000
    ):
        labels = _nan_labels(XRAY_LABELS)
        labels.update(_nan_labels(ECG_LABELS))
        extra: dict[str, Any] = {"delta_days": None if np.isnan(delta) else float(delta)}
        ids = []
        xray_path = ecg_path = xray_time = ecg_time = None
        c_text = e_text = None
        if hc:
            c = int(c_row)
            ids.append(str(c_ids[c]))
            if c_paths[c] is not None:
                xray_path = Path(str(c_paths[c]))
            xray_time = None if np.isnat(c_times[c]) else c_times[c]
            c_text = cxr_text[c]
            labels.update(zip(XRAY_LABELS, (float(v) for v in xray_by_row[c])))
            extra.update(cxr_study_id=c_ids[c], dicom_id=c_dicom[c], view=c_view[c])
        if he:
            e = int(e_row)
            ids.append(str(e_ids[e]))
            ecg_path = ecg.root / e_paths[e]
            ecg_time = None if np.isnat(e_times[e]) else e_times[e]
            e_text = e_reports[e]
            labels.update(zip(ECG_LABELS, (float(v) for v in ecg_label_values[e])))
            extra["ecg_study_id"] = e_ids[e]
        extra["cxr_report"] = c_text
        extra["ecg_report"] = e_text
        studies.append(
            Study(
                study_id="-".join(ids),
                subject_id=str(int(subject)),
                xray_path=xray_path,
                ecg_path=ecg_path,
                report=combine_reports(c_text, e_text),
                labels=labels,
                split=str(sp),
                dataset=dataset,
                xray_time=xray_time,
                ecg_time=ecg_time,
                extra=extra,
            )
        )
    n_pairs = int((has_c & has_e).sum())
    logger.info(
        "%s: %d studies (%d X-ray+ECG pairs, %d X-ray only, %d ECG only)",
        dataset,
        len(studies),
        n_pairs,
        int((has_c & ~has_e).sum()),
        int((~has_c & has_e).sum()),
    )
    return studies


def _load_mimic(root: Path, split: str | None, kw: Mapping[str, Any], dataset: str) -> list[Study]:
    def sub(name: str) -> Path | None:
        return root / name if (root / name).is_dir() else None

    cxr_root = Path(kw["cxr_root"]) if kw.get("cxr_root") else (sub("mimic-cxr") or root)
    ecg_root = Path(kw["ecg_root"]) if kw.get("ecg_root") else (sub("mimic-iv-ecg") or root)
    jpg_root = Path(kw["jpg_root"]) if kw.get("jpg_root") else sub("mimic-cxr-jpg")
    image_format = kw.get("image_format") or "dicom"
    hash_kw = {k: kw[k] for k in ("val_frac", "test_frac", "split_salt") if k in kw}
    if image_format == "jpg":
        if jpg_root is None:
            raise ValueError("load_studies: image_format='jpg' needs jpg_root")
        cxr = load_mimic_cxr(
            jpg_root,
            image_format="jpg",
            reports_root=cxr_root,
            labeler=kw.get("labeler", "chexpert"),
            views=kw.get("views", ("PA", "AP")),
            view_fallback=kw.get("view_fallback", False),
            **hash_kw,
        )
    else:
        cxr = load_mimic_cxr(
            cxr_root,
            image_format="dicom",
            meta_root=jpg_root,
            labeler=kw.get("labeler", "chexpert"),
            views=kw.get("views", ("PA", "AP")),
            view_fallback=kw.get("view_fallback", False),
            **hash_kw,
        )
    ecg = load_mimic_ecg(ecg_root, **hash_kw)
    return mimic_studies(
        cxr,
        ecg,
        pairing=_pairing_config(kw),
        split=split,
        uncertainty_policy=kw.get("uncertainty_policy", "ignore"),
        blank=kw.get("blank", 0.0),
        phi_token=kw.get("phi_token", ""),
        dataset=dataset,
        progress=kw.get("progress", True),
    )


def _load_chexpert(root: Path, split: str | None, kw: Mapping[str, Any]) -> list[Study]:
    if split is not None and normalize_split(split) == "test":
        logger.warning("CheXpert ships no test CSV (train.csv/valid.csv only); returning []")
        return []
    splits = ("train", "val") if split is None else (normalize_split(split),)
    index = load_chexpert(root, splits=splits)
    rows = index.images
    if kw.get("frontal_only", True):
        rows = rows[rows["view"].str.lower() == "frontal"]
    values = index.label_matrix(
        kw.get("uncertainty_policy", "ignore"), blank=kw.get("blank", 0.0), rows=rows
    )
    ecg_nan = _nan_labels(ECG_LABELS)
    studies = []
    for i, row in enumerate(rows.itertuples(index=False)):
        labels = {n: float(v) for n, v in zip(XRAY_LABELS, values[i])}
        labels.update(ecg_nan)
        rel = str(row.rel_path)
        studies.append(
            Study(
                study_id=rel.rsplit(".", 1)[0],
                subject_id=str(row.patient),
                xray_path=Path(str(row.path)),
                labels=labels,
                split=str(row.split),
                dataset="chexpert",
                extra={"view": str(row.view), "ap_pa": str(row.ap_pa), "study": str(row.study)},
            )
        )
    return studies


def load_studies(
    dataset: str, root: str | Path, *, split: str | None = None, **kw: Any
) -> list[Study]:
    """Load a dataset as a list of studies (see the module docstring for each dataset).

    Args:
        dataset: one of :data:`DATASETS`.
        root: the dataset folder (synthetic: the generator's OUT folder).
        split: ``train``, ``val`` or ``test`` (``validate``/``valid`` accepted); None = all.
        **kw: dataset options. synthetic/mimic: ``cxr_root``, ``ecg_root``, ``jpg_root``,
            ``image_format`` (``dicom``/``jpg``), ``pairing`` (:class:`PairingConfig` or rule
            name), ``pair_window_days``, ``keep_unpaired_ecg``, ``uncertainty_policy``,
            ``blank``, ``views``, ``view_fallback``, ``labeler``, ``phi_token``, ``val_frac``,
            ``test_frac``, ``split_salt``, ``progress``. ptbxl: ``task``, ``fs``,
            ``label_space``, ``min_samples``, ``database``, ``statements``. chexpert:
            ``uncertainty_policy``, ``blank``, ``frontal_only``.

    Raises:
        ValueError: unknown dataset or split; TypeError: unknown keyword.
        MetadataError: missing/malformed metadata files (naming the file).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    wanted = normalize_split(split) if split is not None else None
    root = Path(root)
    if dataset in ("synthetic", "mimic"):
        _check_kw(dataset, kw, _MIMIC_KW)
        return _load_mimic(root, wanted, kw, dataset)
    if dataset == "ptbxl":
        _check_kw(dataset, kw, _PTBXL_KW)
        base = root / "ptb-xl" if (root / "ptb-xl").is_dir() else root
        result = load_task(base, kw.pop("task", "superdiagnostic"), **kw)
        studies = result.studies
        return studies if wanted is None else [s for s in studies if s.split == wanted]
    _check_kw(dataset, kw, _CHEXPERT_KW)
    base = root / "chexpert" if (root / "chexpert").is_dir() else root
    return _load_chexpert(base, wanted, kw)
