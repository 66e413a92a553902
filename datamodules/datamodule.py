"""LightningDataModules: tri-modal contrastive pre-training, ECG and X-ray classification.

Every module splits by ``Study.split`` (train/val/test), yields :class:`~datamodules.types.Batch`
objects, uses the preprocessing cache when ``cache_dir`` holds one built with the same settings
(``build_cache=True`` builds it in :meth:`prepare_data`), and builds reproducible loaders: a seeded
``torch.Generator``, :func:`~datamodules.seeding.seed_worker`, persistent workers when
``num_workers > 0`` and pinned memory when CUDA is available. Loaders are resumable
(:class:`~datamodules.resumable.ResumableDataLoader`): a mid-epoch checkpoint continues with the
exact next batch.

The contrastive module's train/val loaders put at most one study per ``unique_by`` group
(``subject`` by default) in a batch, so many-to-many pairs never serve as each other's negatives
(ANCHORS.md §1.2). Under DDP that batch sampler shards itself by rank: run the trainer with
``use_distributed_sampler=False``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from datamodules.cache import build_cache, open_cache
from datamodules.collate import StudyCollator, Tokenizer
from datamodules.dataset import StudyDataset, union_label_names
from datamodules.errors import MetadataError
from datamodules.resumable import ResumableDataLoader
from datamodules.sampler import UniqueGroupBatchSampler
from datamodules.seeding import make_generator, seed_worker
from datamodules.splits import SPLITS, hash_split, normalize_split
from datamodules.tables import read_table
from datamodules.transforms import CxrTransformConfig, EcgTransformConfig
from datamodules.types import Study

log = logging.getLogger(__name__)

UniqueBy = Literal["subject", "study"] | None

IMAGE_EXTENSIONS: tuple[str, ...] = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")


class _StudyDataModule(L.LightningDataModule):
    """Shared machinery: load studies once, split, cache, seeded loaders."""

    def __init__(
        self,
        *,
        ecg_cfg: EcgTransformConfig | None,
        cxr_cfg: CxrTransformConfig | None,
        label_names: Sequence[str] | None,
        batch_size: int,
        num_workers: int,
        seed: int,
        cache_dir: str | Path | None,
        build_cache: bool,
        skip_bad: bool,
        tokenizer: Tokenizer | None,
        pin_memory: bool | None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers: must be >= 0, got {num_workers}")
        self.ecg_cfg = ecg_cfg
        self.cxr_cfg = cxr_cfg
        self.label_names = list(label_names) if label_names is not None else None
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.build_cache = build_cache
        self.skip_bad = skip_bad
        self.tokenizer = tokenizer
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.datasets: dict[str, StudyDataset] = {}
        self._studies: list[Study] | None = None

    # -- to be provided by subclasses -------------------------------------------------------
    def _load_studies(self) -> list[Study]:
        raise NotImplementedError

    def _default_label_names(self, studies: Sequence[Study]) -> list[str]:
        return union_label_names(studies)

    # -- Lightning hooks --------------------------------------------------------------------
    @property
    def studies(self) -> list[Study]:
        """All studies of every split (loaded on first use)."""
        if self._studies is None:
            self._studies = self._load_studies()
            if self.label_names is None:
                self.label_names = self._default_label_names(self._studies)
        return self._studies

    def prepare_data(self) -> None:
        """Build the preprocessing cache when ``build_cache`` is set (rank 0 only)."""
        if not (self.build_cache and self.cache_dir is not None):
            return
        ecg_cfg, cxr_cfg = self.cache_configs()
        build_cache(self.studies, ecg_cfg, cxr_cfg, self.cache_dir, num_workers=self.num_workers)

    def cache_configs(self) -> tuple[EcgTransformConfig, CxrTransformConfig]:
        """Configs that key the cache (defaults stand in for a modality this module skips)."""
        return (
            self.ecg_cfg if self.ecg_cfg is not None else EcgTransformConfig(),
            self.cxr_cfg if self.cxr_cfg is not None else CxrTransformConfig(),
        )

    def setup(self, stage: str | None = None) -> None:
        """Split the studies by ``Study.split`` and build one dataset per split."""
        if self.datasets:
            return
        cache = None
        if self.cache_dir is not None:
            cache = open_cache(self.cache_dir, *self.cache_configs())
            if cache is None:
                log.info("no usable cache in %s; decoding files per sample", self.cache_dir)
        studies = self.studies
        assert self.label_names is not None
        by_split: dict[str, list[Study]] = {k: [] for k in SPLITS}
        for study in studies:
            by_split[normalize_split(study.split)].append(study)  # ValueError names a bad split
        for split, part in by_split.items():
            self.datasets[split] = StudyDataset(
                part, self.ecg_cfg, self.cxr_cfg, self.label_names, cache, self.skip_bad
            )
        log.info(
            "splits: %s",
            ", ".join(f"{k} {len(v)}" for k, v in self.datasets.items()),
        )

    @property
    def bad_records(self) -> int:
        """Unreadable files met so far over every split (and every worker)."""
        return sum(ds.bad_records for ds in self.datasets.values())

    def collator(self) -> StudyCollator:
        """The ``collate_fn`` of every loader."""
        return StudyCollator(
            self.tokenizer,
            image_size=int(self.cxr_cfg.image_size) if self.cxr_cfg is not None else None,
            ecg_length=int(self.ecg_cfg.length) if self.ecg_cfg is not None else None,
        )

    def _loader_kwargs(self, offset: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "num_workers": self.num_workers,
            "collate_fn": self.collator(),
            "pin_memory": self.pin_memory,
            "worker_init_fn": seed_worker,
            "generator": make_generator(self.seed + offset),
            "persistent_workers": self.num_workers > 0,
        }
        return kwargs

    def _plain_loader(self, split: str, shuffle: bool) -> DataLoader[Any]:
        dataset = self._dataset(split)
        # resumable: a mid-epoch checkpoint continues with the exact next batch
        return ResumableDataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=False,
            **self._loader_kwargs(SPLITS.index(split)),
        )

    def _dataset(self, split: str) -> StudyDataset:
        if not self.datasets:
            self.setup()
        return self.datasets[split]

    def train_dataloader(self) -> DataLoader[Any]:
        """Shuffled training loader."""
        return self._plain_loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        """Validation loader (fixed order)."""
        return self._plain_loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[Any]:
        """Test loader (fixed order)."""
        return self._plain_loader("test", shuffle=False)


class ContrastiveDataModule(_StudyDataModule):
    """Tri-modal (X-ray, ECG, report) studies for contrastive pre-training.

    Args:
        studies: the studies; or give ``dataset`` and ``root`` to load them with
            :func:`datamodules.sources.load_studies` (``load_kwargs`` passed through).
        ecg_cfg, cxr_cfg: preprocessing (defaults: the transforms' defaults).
        label_names: label vocabulary of ``Batch.labels`` (default: every label the studies use).
        batch_size, num_workers, seed: loader settings.
        cache_dir: folder of preprocessing caches; used when one matches the configs.
        build_cache: build the cache in :meth:`prepare_data` when missing.
        skip_bad: mask unreadable files (True) or raise (False).
        tokenizer: optional ``tokenizer(list[str]) -> dict`` filling ``Batch.text_tokens``.
        unique_by: ``subject`` or ``study``: at most one item per group in a train/val batch;
            None: plain shuffling.
        drop_last: drop the incomplete training batch (the group sampler keeps batches balanced).
        pin_memory: None = when CUDA is available.
    """

    def __init__(
        self,
        studies: Sequence[Study] | None = None,
        *,
        dataset: str | None = None,
        root: str | Path | None = None,
        load_kwargs: Mapping[str, Any] | None = None,
        ecg_cfg: EcgTransformConfig | None = None,
        cxr_cfg: CxrTransformConfig | None = None,
        label_names: Sequence[str] | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        build_cache: bool = False,
        skip_bad: bool = True,
        tokenizer: Tokenizer | None = None,
        unique_by: UniqueBy = "subject",
        drop_last: bool = False,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(
            ecg_cfg=ecg_cfg if ecg_cfg is not None else EcgTransformConfig(),
            cxr_cfg=cxr_cfg if cxr_cfg is not None else CxrTransformConfig(),
            label_names=label_names,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            cache_dir=cache_dir,
            build_cache=build_cache,
            skip_bad=skip_bad,
            tokenizer=tokenizer,
            pin_memory=pin_memory,
        )
        if studies is None and (dataset is None or root is None):
            raise ValueError("give either studies or both dataset and root")
        if unique_by not in ("subject", "study", None):
            raise ValueError(f"unique_by: {unique_by!r} is not 'subject', 'study' or None")
        self._given = list(studies) if studies is not None else None
        self.dataset_name = dataset
        self.root = Path(root) if root is not None else None
        self.load_kwargs = dict(load_kwargs or {})
        self.unique_by = unique_by
        self.drop_last = drop_last

    def _load_studies(self) -> list[Study]:
        if self._given is not None:
            return self._given
        from datamodules.sources import load_studies

        assert self.dataset_name is not None and self.root is not None
        return list(load_studies(self.dataset_name, self.root, **self.load_kwargs))

    def _grouped_loader(self, split: str, shuffle: bool, drop_last: bool) -> DataLoader[Any]:
        if self.unique_by is None:
            return self._plain_loader(split, shuffle)
        dataset = self._dataset(split)
        groups = [
            s.subject_id if self.unique_by == "subject" else s.study_id for s in dataset.studies
        ]
        sampler = UniqueGroupBatchSampler(
            groups,
            self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            seed=self.seed + SPLITS.index(split),
        )
        return ResumableDataLoader(
            dataset, batch_sampler=sampler, **self._loader_kwargs(SPLITS.index(split))
        )

    def train_dataloader(self) -> DataLoader[Any]:
        """Shuffled loader with at most one item per ``unique_by`` group per batch."""
        return self._grouped_loader("train", shuffle=True, drop_last=self.drop_last)

    def val_dataloader(self) -> DataLoader[Any]:
        """Fixed-order loader, same grouping rule (so validation loss has no false negatives)."""
        return self._grouped_loader("val", shuffle=False, drop_last=False)

    def test_dataloader(self) -> DataLoader[Any]:
        """Fixed-order loader, same grouping rule."""
        return self._grouped_loader("test", shuffle=False, drop_last=False)


def _only(study: Study, keep: Literal["xray", "ecg"]) -> Study:
    """The study with the other modality dropped (classification reads one file per sample)."""
    if keep == "ecg":
        return dataclasses.replace(study, xray_path=None)
    return dataclasses.replace(study, ecg_path=None)


def _label_value(value: Any, path: Path, column: str) -> float:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return float("nan")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise MetadataError(
            path, f"label column {column!r} holds {value!r}, not 0/1/blank"
        ) from None
    if number not in (0.0, 1.0):
        raise MetadataError(path, f"label column {column!r} holds {value!r}, not 0/1/blank")
    return number


def studies_from_csv(
    csv_path: str | Path,
    *,
    modality: Literal["xray", "ecg"],
    root: str | Path | None = None,
    path_column: str = "path",
    label_columns: Sequence[str] | None = None,
    split_column: str = "split",
    subject_column: str | None = None,
    id_column: str | None = None,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
) -> tuple[list[Study], list[str]]:
    """Studies from a CSV of file paths and 0/1/blank label columns.

    Args:
        csv_path: the table.
        modality: what ``path_column`` points at.
        root: base folder of relative paths (default: the CSV's folder).
        path_column: column with the file (ECG record stem/.hea/.mat/.dcm or image).
        label_columns: label columns (default: every other column except split/subject/id).
        split_column: optional column with train/val/test (``valid``/``validate`` accepted);
            when absent the split is a deterministic hash of the subject (or path).
        subject_column: optional patient column used for the hash split (never logged).
        id_column: optional record id column (default: the path).
        val_frac, test_frac: fractions of the hash split.

    Returns:
        (studies, label names).

    Raises:
        MetadataError: missing columns or label values other than 0, 1 and blank.
    """
    path = Path(csv_path)
    frame = read_table(path, [path_column])
    base = Path(root) if root is not None else path.parent
    reserved = {path_column, split_column, subject_column, id_column}
    if label_columns is None:
        label_columns = [c for c in frame.columns if c not in reserved]
    else:
        missing = [c for c in label_columns if c not in frame.columns]
        if missing:
            raise MetadataError(path, f"missing label column(s): {', '.join(missing)}")
    label_names = [str(c) for c in label_columns]
    files = [base / str(p) for p in frame[path_column].astype(str)]
    if split_column in frame.columns:
        try:
            splits = [normalize_split(str(v)) for v in frame[split_column]]
        except ValueError as exc:
            raise MetadataError(path, f"column {split_column!r}: {exc}") from None
    else:
        keys = frame[subject_column] if subject_column in frame.columns else frame[path_column]
        splits = list(hash_split(keys.astype(str), val_frac=val_frac, test_frac=test_frac))
    subjects = (
        frame[subject_column].astype(str).tolist()
        if subject_column and subject_column in frame.columns
        else [str(p) for p in frame[path_column]]
    )
    ids = (
        frame[id_column].astype(str).tolist()
        if id_column and id_column in frame.columns
        else [str(p) for p in frame[path_column]]
    )
    label_rows = frame[label_names].to_numpy(dtype=object) if label_names else None
    studies: list[Study] = []
    for i, file in enumerate(files):
        labels = (
            {n: _label_value(v, path, n) for n, v in zip(label_names, label_rows[i])}
            if label_rows is not None
            else {}
        )
        studies.append(
            Study(
                study_id=ids[i],
                subject_id=subjects[i],
                xray_path=file if modality == "xray" else None,
                ecg_path=file if modality == "ecg" else None,
                labels=labels,
                split=splits[i],
                dataset=path.stem,
            )
        )
    return studies, label_names


class EcgClassificationDataModule(_StudyDataModule):
    """ECG classification: a PTB-XL task, or any CSV of record paths and label columns.

    Give ``task`` (and ``root``, the PTB-XL folder) for a PTB-XL benchmark task read by
    :mod:`datamodules.ptbxl` (official folds: 1-8 train, 9 val, 10 test), or ``csv`` for a
    table read by :func:`studies_from_csv`. Batches carry ``ecg`` and ``labels``.
    """

    def __init__(
        self,
        csv: str | Path | None = None,
        *,
        root: str | Path | None = None,
        task: str | None = None,
        ptbxl_kwargs: Mapping[str, Any] | None = None,
        path_column: str = "path",
        label_columns: Sequence[str] | None = None,
        split_column: str = "split",
        subject_column: str | None = None,
        val_frac: float = 0.1,
        test_frac: float = 0.1,
        ecg_cfg: EcgTransformConfig | None = None,
        cxr_cfg: CxrTransformConfig | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        build_cache: bool = False,
        skip_bad: bool = True,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(
            ecg_cfg=ecg_cfg if ecg_cfg is not None else EcgTransformConfig(),
            cxr_cfg=cxr_cfg,
            label_names=label_columns,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            cache_dir=cache_dir,
            build_cache=build_cache,
            skip_bad=skip_bad,
            tokenizer=None,
            pin_memory=pin_memory,
        )
        if (csv is None) == (task is None):
            raise ValueError("give exactly one of csv (a table of records) or task (PTB-XL)")
        if task is not None and root is None:
            raise ValueError("a PTB-XL task needs root (the PTB-XL folder)")
        self.csv = Path(csv) if csv is not None else None
        self.root = Path(root) if root is not None else None
        self.task = task
        self.ptbxl_kwargs = dict(ptbxl_kwargs or {})
        self.csv_kwargs: dict[str, Any] = {
            "path_column": path_column,
            "label_columns": label_columns,
            "split_column": split_column,
            "subject_column": subject_column,
            "val_frac": val_frac,
            "test_frac": test_frac,
        }

    def _load_studies(self) -> list[Study]:
        if self.csv is not None:
            studies, names = studies_from_csv(
                self.csv, modality="ecg", root=self.root, **self.csv_kwargs
            )
        else:
            assert self.task is not None and self.root is not None
            studies, names = _ptbxl_task(self.root, self.task, **self.ptbxl_kwargs)
        if self.label_names is None:
            self.label_names = names
        return [_only(s, "ecg") for s in studies]


def _ptbxl_task(root: Path, task: str, **kwargs: Any) -> tuple[list[Study], list[str]]:
    """Studies and class names of a PTB-XL task (:func:`datamodules.ptbxl.load_task`).

    ``kwargs``: ``fs`` (100/500), ``label_space``, ``min_samples``, ``database``, ``statements``.
    """
    from datamodules.ptbxl import load_task

    result = load_task(root, task, **kwargs)
    return list(result.studies), list(result.label_names)


def image_folder_studies(
    root: str | Path, *, val_frac: float = 0.1, test_frac: float = 0.1
) -> tuple[list[Study], list[str]]:
    """Studies from an ImageFolder-style tree: ``root/<class>/<image>`` (DICOM/PNG/JPG).

    When ``root`` has ``train``/``val``/``test`` sub-folders (``valid``/``validation``/``validate``
    accepted) each holding class folders, those are the splits; otherwise the split is a
    deterministic hash of the file's path. Labels are one-hot over the sorted class names.

    Raises:
        MetadataError: no class folders or no images.
    """
    base = Path(root)
    if not base.is_dir():
        raise MetadataError(base, "folder not found")
    split_dirs: dict[str, Path] = {}
    for child in sorted(p for p in base.iterdir() if p.is_dir()):
        try:
            split_dirs[normalize_split(child.name)] = child
        except ValueError:
            continue
    layout = split_dirs if split_dirs else {"": base}
    entries: list[tuple[str, str, Path]] = []  # (split or "", class, file)
    for split, folder in layout.items():
        for cls_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            for file in sorted(cls_dir.rglob("*")):
                if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS:
                    entries.append((split, cls_dir.name, file))
    if not entries:
        raise MetadataError(base, "no class folders with .dcm/.png/.jpg images found")
    classes = sorted({cls for _, cls, _ in entries})
    rel = [str(f.relative_to(base)) for _, _, f in entries]
    hashed = hash_split(rel, val_frac=val_frac, test_frac=test_frac)
    studies = [
        Study(
            study_id=rel[i],
            subject_id=rel[i],
            xray_path=file,
            labels={c: float(c == cls) for c in classes},
            split=split or str(hashed[i]),
            dataset=base.name,
        )
        for i, (split, cls, file) in enumerate(entries)
    ]
    return studies, classes


class CxrClassificationDataModule(_StudyDataModule):
    """Chest X-ray classification.

    ``source="folder"``: an ImageFolder-style tree (:func:`image_folder_studies`);
    ``source="chexpert"`` or ``"mimic"``: the dataset's CheXpert-style labels via
    :func:`datamodules.sources.load_studies` (default labels: CheXpert's 14 observations);
    ``source="csv"``: a table of image paths and label columns (:func:`studies_from_csv`).
    Batches carry ``xray`` and ``labels``.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        source: Literal["folder", "chexpert", "mimic", "csv"] = "folder",
        csv: str | Path | None = None,
        load_kwargs: Mapping[str, Any] | None = None,
        label_names: Sequence[str] | None = None,
        val_frac: float = 0.1,
        test_frac: float = 0.1,
        cxr_cfg: CxrTransformConfig | None = None,
        ecg_cfg: EcgTransformConfig | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        build_cache: bool = False,
        skip_bad: bool = True,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(
            ecg_cfg=ecg_cfg,
            cxr_cfg=cxr_cfg if cxr_cfg is not None else CxrTransformConfig(),
            label_names=label_names,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            cache_dir=cache_dir,
            build_cache=build_cache,
            skip_bad=skip_bad,
            tokenizer=None,
            pin_memory=pin_memory,
        )
        if source not in ("folder", "chexpert", "mimic", "csv"):
            raise ValueError(f"source: {source!r} is not folder, chexpert, mimic or csv")
        if source == "csv" and csv is None:
            raise ValueError("source='csv' needs csv")
        self.root = Path(root)
        self.source = source
        self.csv = Path(csv) if csv is not None else None
        self.load_kwargs = dict(load_kwargs or {})
        self.val_frac = val_frac
        self.test_frac = test_frac

    def _load_studies(self) -> list[Study]:
        if self.source == "folder":
            studies, names = image_folder_studies(
                self.root, val_frac=self.val_frac, test_frac=self.test_frac
            )
        elif self.source == "csv":
            assert self.csv is not None
            studies, names = studies_from_csv(
                self.csv,
                modality="xray",
                root=self.root,
                val_frac=self.val_frac,
                test_frac=self.test_frac,
                **self.load_kwargs,
            )
        else:
            from datamodules.labels import XRAY_LABELS
            from datamodules.sources import load_studies

            loaded = load_studies(self.source, self.root, **self.load_kwargs)
            studies = [s for s in loaded if s.xray_path is not None]
            names = list(XRAY_LABELS)
        if self.label_names is None:
            self.label_names = names
        return [_only(s, "xray") for s in studies]
