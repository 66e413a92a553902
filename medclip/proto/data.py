"""PTB-XL-layout data for ProtoECGNet: records100 signals, branch labels, official folds.

Reads a folder in the PTB-XL layout (``ptbxl_database.csv`` + ``scp_statements.csv`` +
``records100``/``records500``) with :func:`datamodules.ptbxl.load_ptbxl`, builds the label matrix
over the ProtoECGNet groups, splits by ``strat_fold`` (1-8 / 9 / 10 by default), preprocesses with
:mod:`datamodules.transforms` (lead order by name, resample, 0.5 Hz first-order Butterworth
high-pass with ``filtfilt``, crop/pad; one global mean/std fitted on train only) and caches the
arrays as ``.npy`` so a resumed run does not re-read thousands of files.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from datamodules.ecg_io import read_ecg
from datamodules.errors import EcgReadError, MetadataError
from datamodules.proto_groups import ProtoGroups, derive_proto_groups, multi_hot
from datamodules.ptbxl import load_ptbxl
from datamodules.transforms import EcgTransformConfig, fit_global_standardizer, preprocess_ecg
from datamodules.types import CANONICAL_LEADS, Ecg
from medclip.proto.config import ProtoConfig

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class Preprocessing:
    """How raw mV signals become model input; stored in the bundle so inference matches training.

    Attributes:
        fs_hz: sampling rate the model expects.
        length: samples per lead (centre crop / zero pad).
        highpass_hz: first-order Butterworth high-pass cut-off (None: off).
        mean / std: global standardisation fitted on train (0 / 1 when off).
        leads: lead order.
    """

    fs_hz: float = 100.0
    length: int = 1000
    highpass_hz: float | None = 0.5
    mean: float = 0.0
    std: float = 1.0
    leads: tuple[str, ...] = CANONICAL_LEADS

    def as_dict(self) -> dict[str, object]:
        """JSON-serialisable dict."""
        return {
            "fs_hz": self.fs_hz,
            "length": self.length,
            "highpass_hz": self.highpass_hz,
            "mean": self.mean,
            "std": self.std,
            "leads": list(self.leads),
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Preprocessing:
        """Inverse of :meth:`as_dict`."""
        hp = d.get("highpass_hz")
        return cls(
            fs_hz=float(d["fs_hz"]),  # type: ignore[arg-type]
            length=int(d["length"]),  # type: ignore[call-overload]
            highpass_hz=None if hp is None else float(hp),  # type: ignore[arg-type]
            mean=float(d.get("mean", 0.0)),  # type: ignore[arg-type]
            std=float(d.get("std", 1.0)),  # type: ignore[arg-type]
            leads=tuple(d.get("leads", CANONICAL_LEADS)),  # type: ignore[arg-type]
        )


@dataclass
class ProtoSplit:
    """One split in memory.

    Attributes:
        x: ``(N, 12, T)`` float32 high-passed signal in mV (not yet standardised).
        labels: ``(N, L)`` float32 multi-hot over ``ProtoData.groups.all_labels``.
        ecg_ids: ``(N,)`` int64 PTB-XL ``ecg_id``.
    """

    x: np.ndarray
    labels: np.ndarray
    ecg_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class ProtoData:
    """Train/val/test splits plus the label groups and preprocessing."""

    groups: ProtoGroups
    train: ProtoSplit
    val: ProtoSplit
    test: ProtoSplit
    preprocessing: Preprocessing
    source: str = "PTB-XL layout"
    dropped_labels: tuple[str, ...] = field(default_factory=tuple)

    def split(self, name: str) -> ProtoSplit:
        """Split by name (train, val, test)."""
        out: ProtoSplit = getattr(self, name)
        return out

    def model_input(self, x: np.ndarray) -> np.ndarray:
        """Standardise high-passed mV signal ``(..., 12, T)`` with the train mean/std."""
        return standardise(x, self.preprocessing)

    def group_labels(self, split: str, group: str) -> np.ndarray:
        """``(N, C_group)`` label columns of ``group`` in ``split``."""
        cols = [self.groups.all_labels.index(c) for c in self.groups[group]]
        return self.split(split).labels[:, cols]


def standardise(x: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """``(x - mean) / std`` as float32."""
    return ((x - pre.mean) / pre.std).astype(np.float32)


def find_ptbxl_root(root: str | Path) -> Path:
    """Folder holding ``ptbxl_database.csv`` under ``root`` (itself, ``ptb-xl/`` or 3 levels down).

    Raises:
        MetadataError: no ``ptbxl_database.csv`` found.
    """
    base = Path(root)
    for cand in (base, base / "ptb-xl"):
        if (cand / "ptbxl_database.csv").is_file():
            return cand
    if base.is_dir():
        for depth in ("*", "*/*", "*/*/*"):
            hits = sorted(base.glob(f"{depth}/ptbxl_database.csv"))
            if hits:
                return hits[0].parent
    raise MetadataError(base / "ptbxl_database.csv", "not found (expected the PTB-XL layout)")


def transform_config(pre: Preprocessing, standardize: bool = False) -> EcgTransformConfig:
    """The :mod:`datamodules.transforms` settings for ``pre`` (crop: centre)."""
    return EcgTransformConfig(
        fs_hz=pre.fs_hz,
        length=pre.length,
        highpass_hz=pre.highpass_hz or 0.0,
        standardize="global" if standardize else "none",
        global_mean=pre.mean,
        global_std=pre.std,
        crop="center",
    )


def preprocess_record(ecg: Ecg, pre: Preprocessing) -> np.ndarray:
    """Impute, resample, high-pass and crop/pad an ECG: ``(12, pre.length)`` float32 mV."""
    return preprocess_ecg(ecg, transform_config(pre))


def preprocess_signal(sig: np.ndarray, fs: float, pre: Preprocessing) -> np.ndarray:
    """Same as :func:`preprocess_record` for a bare ``(12, T)`` mV array at ``fs`` Hz."""
    return preprocess_record(Ecg(signal=np.asarray(sig, dtype=np.float32), fs=float(fs)), pre)


def _cache_key(root: Path, cfg: ProtoConfig, fs_hz: float, length: int) -> str:
    db = root / "ptbxl_database.csv"
    stat = db.stat()
    parts = [
        str(root.resolve()),
        str(stat.st_size),
        str(int(stat.st_mtime)),
        str(fs_hz),
        str(length),
        str(cfg.highpass_hz),
        str(cfg.train_folds),
        str(cfg.val_folds),
        str(cfg.test_folds),
        str(cfg.max_records),
        "v1",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, arr, allow_pickle=False)
    os.replace(tmp, path)


def load_proto_data(
    root: str | Path,
    cfg: ProtoConfig,
    fs_hz: float = 100.0,
    length: int = 1000,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> ProtoData:
    """Load a PTB-XL-layout folder into :class:`ProtoData`.

    Records with no label in any group are dropped; labels with fewer than
    ``cfg.min_train_positives`` training positives are dropped (and listed in
    ``dropped_labels``). Unreadable records are skipped with a warning.

    Raises:
        MetadataError: missing/malformed CSVs, or no record in some split.
    """
    base = find_ptbxl_root(root)
    index = load_ptbxl(base)
    groups_all = derive_proto_groups(index.statements, source=base / "scp_statements.csv")
    db = index.records
    pre = Preprocessing(fs_hz=fs_hz, length=length, highpass_hz=cfg.highpass_hz)
    record_fs = 500 if fs_hz > 100.0 else 100
    cache = Path(cache_dir) if cache_dir is not None else None
    key = _cache_key(base, cfg, fs_hz, length)

    codes_all = groups_all.all_labels
    splits: dict[str, ProtoSplit] = {}
    fold_sets = {"train": cfg.train_folds, "val": cfg.val_folds, "test": cfg.test_folds}
    for split in SPLITS:
        if cache is not None and (cache / f"{key}_{split}_x.npy").is_file():
            splits[split] = ProtoSplit(
                np.load(cache / f"{key}_{split}_x.npy", allow_pickle=False),
                np.load(cache / f"{key}_{split}_y.npy", allow_pickle=False),
                np.load(cache / f"{key}_{split}_id.npy", allow_pickle=False),
            )
            log.info("%s: %d records from cache", split, len(splits[split]))
            continue
        rows = db[db["strat_fold"].isin(fold_sets[split])]
        labels = multi_hot([set(c) for c in rows["scp_codes"]], codes_all)
        keep = labels.sum(axis=1) > 0
        rows, labels = rows[keep], labels[keep]
        if cfg.max_records is not None:
            rows, labels = rows.iloc[: cfg.max_records], labels[: cfg.max_records]
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        ids: list[int] = []
        it = tqdm(
            zip(rows.index, labels),
            total=len(rows),
            desc=f"reading {split}",
            disable=not progress,
            leave=False,
        )
        for ecg_id, y in it:
            try:
                ecg = read_ecg(index.record_path(int(ecg_id), fs=record_fs))
            except EcgReadError as exc:
                log.warning("skipping unreadable record: %s", exc)
                continue
            xs.append(preprocess_record(ecg, pre))
            ys.append(y)
            ids.append(int(ecg_id))
        if not xs:
            raise MetadataError(
                index.database_path, f"no readable labelled record in the {split} folds"
            )
        splits[split] = ProtoSplit(
            np.stack(xs), np.stack(ys).astype(np.float32), np.asarray(ids, dtype=np.int64)
        )
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            _save_npy(cache / f"{key}_{split}_x.npy", splits[split].x)
            _save_npy(cache / f"{key}_{split}_y.npy", splits[split].labels)
            _save_npy(cache / f"{key}_{split}_id.npy", splits[split].ecg_ids)

    counts = splits["train"].labels.sum(axis=0)
    kept = [c for c, n in zip(codes_all, counts) if n >= cfg.min_train_positives]
    dropped = tuple(c for c in codes_all if c not in kept)
    if dropped:
        log.info(
            "dropping %d label(s) with < %d training positives",
            len(dropped),
            cfg.min_train_positives,
        )
    groups = groups_all.restrict(kept)
    cols = [codes_all.index(c) for c in groups.all_labels]
    for s in splits.values():
        s.labels = s.labels[:, cols]
    if cfg.standardize == "global":
        mean, std = fit_global_standardizer(splits["train"].x)
        pre = Preprocessing(
            fs_hz=fs_hz, length=length, highpass_hz=cfg.highpass_hz, mean=mean, std=std
        )
    return ProtoData(
        groups=groups,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        preprocessing=pre,
        source=f"PTB-XL layout ({base.name})",
        dropped_labels=dropped,
    )


def data_summary(data: ProtoData) -> dict[str, object]:
    """JSON-serialisable description of the data (no identifiers)."""
    return {
        "source": data.source,
        "n": {s: len(data.split(s)) for s in SPLITS},
        "labels": data.groups.as_dict(),
        "dropped_labels": list(data.dropped_labels),
        "preprocessing": data.preprocessing.as_dict(),
    }
