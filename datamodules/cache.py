"""Preprocessing cache: decode and preprocess once, then read memory-mapped arrays.

Layout of one cache, ``OUT/cache-<config_hash>/``::

    ecg.npy       (N, 12, L) float16 or float32, preprocessed ECGs (zeros where absent)
    xray.npy      (N, S, S) uint8 (pixel values in [0, 1] quantised to 0..255) or float16
                  (normalised values), zeros where absent
    present.npy   (N, 3) bool, MODALITY_ORDER; False also for files unreadable at build time
    labels.npy    (N, L) float32, NaN = unknown
    index.json    study id and absolute source paths (X-ray, ECG) of every row
    table.csv     study_id, present flags, report text and labels, for people and other tools
    meta.json     format version, config hash and configs, dtypes, shapes, label names, number of
                  unreadable files, ``complete: true`` (written last)

The folder is built in a temporary folder inside ``OUT`` (files fsynced) and moved into place with
:func:`os.replace`, so a killed build never leaves a folder that :func:`open_cache` accepts. The
key is :func:`datamodules.transforms.config_hash` of the preprocessing configs, so a cache built
with other settings is never used. ECG random-crop augmentation is not cached: the cache always
holds centre crops and is keyed as such.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from datamodules.dataset import (
    StudyDataset,
    _path_key,
    labels_matrix,
    union_label_names,
)
from datamodules.errors import OutputWriteError
from datamodules.transforms import CxrTransformConfig, EcgTransformConfig, config_hash
from datamodules.types import Study

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
META_FILE = "meta.json"
INDEX_FILE = "index.json"
TABLE_FILE = "table.csv"
_DATA_FILES = ("ecg.npy", "xray.npy", "present.npy", "labels.npy", INDEX_FILE, TABLE_FILE)
_BUILDING_PREFIX = ".building-"
_OLD_PREFIX = ".old-"

EcgDtype = Literal["float16", "float32"]
XrayDtype = Literal["uint8", "float16"]


def cacheable_ecg_cfg(ecg_cfg: EcgTransformConfig) -> EcgTransformConfig:
    """The deterministic variant of ``ecg_cfg`` that the cache stores (centre crop)."""
    if getattr(ecg_cfg, "crop", "center") != "center":
        return cast(EcgTransformConfig, dataclasses.replace(cast(Any, ecg_cfg), crop="center"))
    return ecg_cfg


def cache_key(ecg_cfg: EcgTransformConfig, cxr_cfg: CxrTransformConfig) -> str:
    """Hash that names the cache folder for these preprocessing configs."""
    return str(config_hash(cacheable_ecg_cfg(ecg_cfg), cxr_cfg))


def cache_path(
    out_dir: str | Path, ecg_cfg: EcgTransformConfig, cxr_cfg: CxrTransformConfig
) -> Path:
    """Folder where the cache for these configs lives (whether or not it exists)."""
    return Path(out_dir) / f"cache-{cache_key(ecg_cfg, cxr_cfg)}"


class PreprocessedCache:
    """A complete cache folder, opened read-only.

    The big arrays are memory-mapped lazily in each process, and the file index is reloaded on
    demand: pickling the cache into DataLoader workers copies neither.
    """

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = Path(path)
        self.meta = meta
        self.label_names: list[str] = list(meta["label_names"])
        self.present: np.ndarray = np.load(self.path / "present.npy")
        self.xray_mean = float(meta["xray_mean"])
        self.xray_std = float(meta["xray_std"])
        self._ecg: np.ndarray | None = None
        self._xray: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._index: _FileIndex | None = None

    def __len__(self) -> int:
        return int(self.meta["n"])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_ecg=None, _xray=None, _labels=None, _index=None)
        return state

    @property
    def config_hash(self) -> str:
        """Hash of the preprocessing configs the cache was built with."""
        return str(self.meta["config_hash"])

    @property
    def labels(self) -> np.ndarray:
        """``(N, L)`` float32 labels (memory-mapped), columns :attr:`label_names`."""
        if self._labels is None:
            self._labels = np.load(self.path / "labels.npy", mmap_mode="r")
        return self._labels

    def _files(self) -> _FileIndex:
        if self._index is None:
            self._index = _FileIndex.load(self.path / INDEX_FILE)
        return self._index

    @property
    def study_ids(self) -> list[str]:
        """Study id of every row."""
        return self._files().study_ids

    def row_of(self, study_id: str) -> int | None:
        """Row of ``study_id`` in the arrays, or None when the cache lacks it."""
        return self._files().rows.get(study_id)

    def row_of_file(self, modality: int, path: str) -> int | None:
        """Row holding file ``path`` (absolute) for ``modality`` (0 X-ray, 1 ECG), or None."""
        return self._files().file_rows[modality].get(path)

    def sources(self, row: int) -> tuple[str, str]:
        """Absolute (xray path, ECG path) the row was built from ("" when absent)."""
        return self._files().sources[row]

    def texts(self) -> list[str]:
        """Report text of every row ("" when absent), read from ``table.csv``."""
        with open(self.path / TABLE_FILE, encoding="utf-8", newline="") as fh:
            return [r["text"] for r in csv.DictReader(fh)]

    def ecg(self, row: int) -> np.ndarray:
        """Preprocessed ECG of ``row``: float32 ``(12, L)``."""
        if self._ecg is None:
            self._ecg = np.load(self.path / "ecg.npy", mmap_mode="r")
        return np.asarray(self._ecg[row], dtype=np.float32)

    def xray(self, row: int) -> np.ndarray:
        """Preprocessed (normalised) X-ray of ``row``: float32 ``(S, S)``."""
        if self._xray is None:
            self._xray = np.load(self.path / "xray.npy", mmap_mode="r")
        raw = self._xray[row]
        if raw.dtype == np.uint8:
            return (raw.astype(np.float32) / 255.0 - self.xray_mean) / self.xray_std
        return np.asarray(raw, dtype=np.float32)


@dataclasses.dataclass
class _FileIndex:
    """Study ids and source files of the rows (``index.json``)."""

    study_ids: list[str]
    sources: list[tuple[str, str]]
    rows: dict[str, int]
    file_rows: tuple[dict[str, int], dict[str, int]]

    @classmethod
    def load(cls, path: Path) -> _FileIndex:
        data = json.loads(path.read_text(encoding="utf-8"))
        ids = [str(v) for v in data["study_ids"]]
        sources = [(str(x), str(e)) for x, e in data["sources"]]
        return cls(
            ids,
            sources,
            {sid: i for i, sid in enumerate(ids)},
            (
                {x: i for i, (x, _) in enumerate(sources) if x},
                {e: i for i, (_, e) in enumerate(sources) if e},
            ),
        )


def open_cache(
    out_dir: str | Path, ecg_cfg: EcgTransformConfig, cxr_cfg: CxrTransformConfig
) -> PreprocessedCache | None:
    """Open the cache built for these configs under ``out_dir``.

    Returns:
        The cache, or None when it is absent, incomplete (e.g. a killed build), of another format
        version or built with other preprocessing settings.
    """
    folder = cache_path(out_dir, ecg_cfg, cxr_cfg)
    meta = _read_meta(folder)
    if meta is None:
        return None
    key = cache_key(ecg_cfg, cxr_cfg)
    problem = _validate(folder, meta, key)
    if problem:
        log.warning("ignoring cache %s: %s", folder, problem)
        return None
    return PreprocessedCache(folder, meta)


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring cache %s: unreadable %s (%s)", folder, META_FILE, exc)
        return None
    return meta if isinstance(meta, dict) else None


def _validate(folder: Path, meta: dict[str, Any], key: str) -> str | None:
    if meta.get("complete") is not True:
        return "build did not complete"
    if meta.get("format_version") != CACHE_FORMAT_VERSION:
        return f"format version {meta.get('format_version')} != {CACHE_FORMAT_VERSION}"
    if meta.get("config_hash") != key:
        return "built with other preprocessing settings"
    n = int(meta.get("n", -1))
    expected = {
        "ecg.npy": tuple(meta.get("ecg_shape", ())),
        "xray.npy": tuple(meta.get("xray_shape", ())),
        "present.npy": (n, 3),
        "labels.npy": (n, len(meta.get("label_names", []))),
    }
    for name, shape in expected.items():
        try:
            arr = np.load(folder / name, mmap_mode="r")
        except (OSError, ValueError) as exc:
            return f"{name}: unreadable ({exc})"
        if tuple(arr.shape) != shape:
            return f"{name}: shape {tuple(arr.shape)} != {shape}"
    try:
        index = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{INDEX_FILE}: unreadable ({exc})"
    if not (len(index.get("study_ids", [])) == len(index.get("sources", [])) == n):
        return f"{INDEX_FILE}: length does not match the arrays"
    if not (folder / TABLE_FILE).is_file():
        return f"{TABLE_FILE} missing"
    return None


def _identity(sample: Any) -> Any:
    return sample


def build_cache(
    studies: Sequence[Study],
    ecg_cfg: EcgTransformConfig,
    cxr_cfg: CxrTransformConfig,
    out_dir: str | Path,
    *,
    ecg_dtype: EcgDtype = "float16",
    xray_dtype: XrayDtype = "uint8",
    num_workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Preprocess every study once and write the memory-mapped cache.

    Unreadable files are logged (file name and reason), stored as absent and counted in
    ``meta.json`` (``n_bad``).

    Args:
        studies: studies to cache (their report text and labels are stored too).
        ecg_cfg: ECG preprocessing (random crop is replaced by the centre crop).
        cxr_cfg: X-ray preprocessing.
        out_dir: parent folder; the cache goes to ``out_dir/cache-<hash>``.
        ecg_dtype: storage type of ECGs (float16 halves the size; values are standardised).
        xray_dtype: ``uint8`` stores de-normalised pixels in [0, 1] as 0..255 (error <= 1/510
            before normalisation), ``float16`` stores normalised values.
        num_workers: DataLoader workers that decode in parallel.
        overwrite: rebuild even if a complete cache of the same studies exists.
        progress: show a progress bar.

    Returns:
        The cache folder.

    Raises:
        OutputWriteError: the disk is full (or read-only, ...); a previous build of the same
            key stays in place and the temporary folder is removed.
    """
    if ecg_dtype not in ("float16", "float32"):
        raise ValueError(f"ecg_dtype: {ecg_dtype!r} is not float16 or float32")
    if xray_dtype not in ("uint8", "float16"):
        raise ValueError(f"xray_dtype: {xray_dtype!r} is not uint8 or float16")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ecg_cfg = cacheable_ecg_cfg(ecg_cfg)
    key = cache_key(ecg_cfg, cxr_cfg)
    final = out / f"cache-{key}"
    studies = list(studies)
    sources = [[_path_key(s.xray_path), _path_key(s.ecg_path)] for s in studies]
    existing = open_cache(out, ecg_cfg, cxr_cfg)
    if existing is not None and not overwrite:
        same = (
            existing.study_ids == [s.study_id for s in studies]
            and [list(existing.sources(i)) for i in range(len(existing))] == sources
        )
        if same:
            log.info("cache %s is up to date", final)
            return final
    _remove_stale(out)

    tmp = Path(tempfile.mkdtemp(prefix=f"{_BUILDING_PREFIX}{key}-", dir=out))
    (tmp / "owner").write_text(f"{socket.gethostname()} {os.getpid()}\n", encoding="utf-8")
    try:
        _write(
            tmp,
            studies,
            ecg_cfg,
            cxr_cfg,
            key=key,
            sources=sources,
            ecg_dtype=ecg_dtype,
            xray_dtype=xray_dtype,
            num_workers=num_workers,
            progress=progress,
        )
        (tmp / "owner").unlink()
        _fsync_dir(tmp)
        _install(tmp, final, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        error = OutputWriteError.from_exception(final, exc)
        if error is not None:  # e.g. the disk is full: the previous build stays in place
            raise error from exc
        raise
    return final


def _write(
    tmp: Path,
    studies: list[Study],
    ecg_cfg: EcgTransformConfig,
    cxr_cfg: CxrTransformConfig,
    *,
    key: str,
    sources: list[list[str]],
    ecg_dtype: EcgDtype,
    xray_dtype: XrayDtype,
    num_workers: int,
    progress: bool,
) -> None:
    n = len(studies)
    has_ecg = any(s.ecg_path is not None for s in studies)
    has_xray = any(s.xray_path is not None for s in studies)
    length = int(ecg_cfg.length) if has_ecg else 0  # no empty gigabytes for a one-modality set
    size = int(cxr_cfg.image_size) if has_xray else 0
    mean = float(getattr(cxr_cfg, "mean", 0.0))
    std = float(getattr(cxr_cfg, "std", 1.0))
    label_names = union_label_names(studies)
    ecg_arr = np.lib.format.open_memmap(tmp / "ecg.npy", "w+", np.dtype(ecg_dtype), (n, 12, length))
    xray_arr = np.lib.format.open_memmap(
        tmp / "xray.npy", "w+", np.dtype(xray_dtype), (n, size, size)
    )
    present = np.zeros((n, 3), dtype=bool)
    dataset = StudyDataset(
        studies,
        ecg_cfg if has_ecg else None,
        cxr_cfg if has_xray else None,
        [],
        cache=None,
        skip_bad=True,
    )
    loader = DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_identity,
    )
    clipped = 0
    bar = tqdm(loader, total=n, desc="building cache", unit="study", disable=not progress)
    for i, sample in enumerate(bar):
        present[i] = sample["present"].numpy()
        if sample["ecg"] is not None:
            ecg_arr[i] = sample["ecg"].numpy().astype(ecg_dtype)
        if sample["xray"] is not None:
            img = sample["xray"][0].numpy()
            if xray_dtype == "uint8":
                pixels = img * std + mean
                clipped += int(((pixels < -0.01) | (pixels > 1.01)).sum())
                xray_arr[i] = np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
            else:
                xray_arr[i] = img.astype(np.float16)
    if clipped:
        log.warning("%d X-ray pixel values fell outside [0, 1] and were clipped for uint8", clipped)
    for arr in (ecg_arr, xray_arr):
        arr.flush()
    del ecg_arr, xray_arr
    labels = labels_matrix(studies, label_names)
    np.save(tmp / "present.npy", present)
    np.save(tmp / "labels.npy", labels)
    _write_json(tmp / INDEX_FILE, {"study_ids": [s.study_id for s in studies], "sources": sources})
    _write_table(tmp / TABLE_FILE, studies, present, labels, label_names)
    meta = {
        "format_version": CACHE_FORMAT_VERSION,
        "config_hash": key,
        "ecg_config": _as_dict(ecg_cfg),
        "cxr_config": _as_dict(cxr_cfg),
        "n": n,
        "ecg_shape": [n, 12, length],
        "xray_shape": [n, size, size],
        "ecg_dtype": ecg_dtype,
        "xray_dtype": xray_dtype,
        "xray_mean": mean,
        "xray_std": std,
        "label_names": label_names,
        "n_bad": dataset.bad_records,
        "created_unix_s": time.time(),
    }
    for name in _DATA_FILES:
        _fsync_file(tmp / name)
    meta["complete"] = True  # meta.json is written last: its presence marks a full build
    _write_json(tmp / META_FILE, meta)
    if dataset.bad_records:
        log.warning("cache: %d unreadable files stored as absent", dataset.bad_records)


def _as_dict(cfg: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cast(Any, cfg))
    return {"repr": repr(cfg)}


def _write_table(
    path: Path,
    studies: Sequence[Study],
    present: np.ndarray,
    labels: np.ndarray,
    label_names: Sequence[str],
) -> None:
    """Human-readable table: study id, present flags, report text, labels (blank = unknown)."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["study_id", "present_xray", "present_ecg", "present_text", "text", *label_names]
        )
        for i, study in enumerate(studies):
            values = ["" if np.isnan(v) else f"{v:g}" for v in labels[i]]
            flags = [int(v) for v in present[i]]
            writer.writerow([study.study_id, *flags, study.report or "", *values])


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _install(tmp: Path, final: Path, out: Path) -> None:
    """Move the finished build into place; an older build of the same key is removed."""
    old: Path | None = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=_OLD_PREFIX, dir=out))
        os.replace(final, old / final.name)
    os.replace(tmp, final)
    _fsync_dir(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale(out: Path) -> None:
    """Delete leftovers of killed builds started on this host (their process is gone)."""
    host = socket.gethostname()
    for entry in out.iterdir():
        if entry.name.startswith(_OLD_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(_BUILDING_PREFIX) and entry.is_dir():
            try:
                owner_host, pid = (entry / "owner").read_text(encoding="utf-8").split()
            except (OSError, ValueError):
                continue
            if owner_host == host and not _alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
