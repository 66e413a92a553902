"""Supervised fine-tuning of a bundle's X-ray or ECG tower on a small labelled set.

Input (:func:`load_finetune_data`):

* an **ImageFolder-style tree**: ``FOLDER/<class>/<images>`` (DICOM, PNG, JPEG, searched
  recursively). An optional ``FOLDER/labels.csv`` with columns ``file`` (relative to FOLDER) and
  ``patient`` groups images by patient for cross-validation, and ``duplicate_of`` (another
  ``file``) marks byte-identical copies: each duplicate group keeps its first file only and
  its patients are merged into one group;
* a **CSV of ECG records**: columns ``path`` (WFDB record / DICOM waveform, relative to the CSV's
  folder) and ``label`` (class name), optional ``patient`` (or ``group``) for grouping.

Method: features of the frozen tower (pre-projection output, or the shared embedding with
``features="embedding"``) and a softmax linear probe (:mod:`medclip.probe`; L2 penalty chosen on
a patient-grouped hold-out of the training folds). Optionally ``train_blocks=N`` also fine-tunes
the tower's last ``N`` blocks (ViT blocks / CNN stages) with the linear head, AdamW, cross-entropy.

Evaluation: stratified, patient-grouped K-fold cross-validation
(:class:`sklearn.model_selection.StratifiedGroupKFold`, seeded); out-of-fold probabilities give
AUROC with bootstrap CIs (binary: the second class, alphabetically, is positive), accuracy and
macro F1 at the argmax, plus per-fold AUROC. The final classifier is refit on every row.

Output folder (a classifier bundle, no pickle)::

    OUT/  config.json, model.safetensors, tokenizer/, labels.json, card.md  (a medclip bundle,
          loadable with load_bundle; towers as fine-tuned)
    OUT/classifier/head.safetensors + head.json   (probe weights, classes, feature kind)
    OUT/classifier/finetune.json                  (base bundle, data summary, settings)
    OUT/report.json, OUT/report.md, OUT/roc_finetune.png   (cross-validation report)

:func:`load_classifier` reloads it; :meth:`Classifier.predict_proba` scores files.
Research use only.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from datamodules.types import Study
from medclip.errors import MedclipError
from medclip.probe import LinearProbe, ProbeConfig, fit_linear_probe
from medclip.safe_load import write_json_atomic

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
CLASSIFIER_DIR = "classifier"
HEAD_NAME = "head"


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning settings.

    Attributes:
        folds: cross-validation folds (>= 2; fewer groups than folds lowers it).
        features: ``tower`` (pre-projection features) or ``embedding`` (shared space).
        train_blocks: also fine-tune the tower's last N blocks (0: frozen tower, linear probe).
        epochs: epochs of block fine-tuning.
        lr: learning rate of the fine-tuned blocks (the head uses 10x).
        seed: seed of folds, hold-outs, initialisation and bootstrap.
        batch_size: images / records per batch.
        device: torch device.
        n_boot: bootstrap resamples of the AUROC CI.
        progress: progress bars.
    """

    folds: int = 5
    features: str = "tower"
    train_blocks: int = 0
    epochs: int = 5
    lr: float = 1e-4
    seed: int = 0
    batch_size: int = 32
    device: str = "cpu"
    n_boot: int = 1000
    progress: bool = True

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError("folds must be >= 2")
        if self.features not in ("tower", "embedding"):
            raise ValueError("features must be 'tower' or 'embedding'")
        if self.train_blocks < 0 or self.epochs < 1 or not self.lr > 0:
            raise ValueError("train_blocks must be >= 0, epochs >= 1 and lr > 0")
        if self.train_blocks and self.features != "tower":
            raise ValueError("train_blocks needs features='tower'")


@dataclass
class FinetuneData:
    """A labelled single-label dataset of one modality.

    Attributes:
        modality: ``xray`` or ``ecg``.
        paths: input files.
        labels: ``(N,)`` int64 class ids.
        classes: class names (sorted).
        groups: ``N`` group keys (patients; the file itself when unknown).
        source: the folder / CSV read.
        dropped_duplicates: files dropped as duplicates.
    """

    modality: str
    paths: list[Path]
    labels: np.ndarray
    classes: tuple[str, ...]
    groups: list[str]
    source: str
    dropped_duplicates: int = 0

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, rows: Sequence[int]) -> FinetuneData:
        """The given rows."""
        idx = list(rows)
        return FinetuneData(
            self.modality,
            [self.paths[i] for i in idx],
            self.labels[idx],
            self.classes,
            [self.groups[i] for i in idx],
            self.source,
            self.dropped_duplicates,
        )

    def summary(self) -> dict[str, Any]:
        """Counts for reports (no file names)."""
        return {
            "modality": self.modality,
            "n": len(self),
            "classes": list(self.classes),
            "per_class": {c: int((self.labels == k).sum()) for k, c in enumerate(self.classes)},
            "groups": len(set(self.groups)),
            "dropped_duplicates": self.dropped_duplicates,
        }


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def load_image_folder(folder: str | Path) -> FinetuneData:
    """Read an ImageFolder-style tree (module docstring), deduplicated, grouped by patient.

    Raises:
        MedclipError: fewer than two classes with images.
    """
    root = Path(folder)
    if not root.is_dir():
        raise MedclipError(f"{root}: folder not found")
    classes = sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and not d.name.startswith(".") and _images_in(d)
    )
    if len(classes) < 2:
        raise MedclipError(
            f"{root}: expected one sub-folder of images per class (at least two), found "
            f"{classes or 'none'}"
        )
    rel: list[str] = []
    labels: list[int] = []
    for k, c in enumerate(classes):
        for p in _images_in(root / c):
            rel.append(p.relative_to(root).as_posix())
            labels.append(k)
    meta = root / "labels.csv"
    groups = {r: r for r in rel}
    dropped: set[str] = set()
    if meta.is_file():
        table = pd.read_csv(meta, dtype=str, keep_default_na=False)
        if "file" not in table.columns:
            raise MedclipError(f"{meta}: needs a 'file' column (path relative to {root})")
        uf = _UnionFind()
        for row in table.to_dict("records"):
            f = str(row["file"]).strip()
            if f not in groups:
                continue
            if row.get("patient"):
                groups[f] = f"patient:{row['patient']}"
            dup = str(row.get("duplicate_of") or "").strip()
            if dup and dup in groups:
                uf.union(f, dup)
        clusters: dict[str, list[str]] = {}
        for f in rel:
            clusters.setdefault(uf.find(f), []).append(f)
        for members in clusters.values():
            if len(members) < 2:
                continue
            keep = sorted(members)[0]
            merged = min(groups[m] for m in members)
            for m in members:
                groups[m] = merged
                if m != keep:
                    dropped.add(m)
    keep_idx = [i for i, r in enumerate(rel) if r not in dropped]
    if dropped:
        logger.info("%s: dropped %d duplicate image(s)", root.name, len(dropped))
    return FinetuneData(
        modality="xray",
        paths=[root / rel[i] for i in keep_idx],
        labels=np.asarray([labels[i] for i in keep_idx], dtype=np.int64),
        classes=tuple(classes),
        groups=[groups[rel[i]] for i in keep_idx],
        source=str(root),
        dropped_duplicates=len(dropped),
    )


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def load_ecg_csv(csv_path: str | Path) -> FinetuneData:
    """Read a CSV of ECG records (``path``, ``label``, optional ``patient``/``group``).

    Raises:
        MedclipError: missing columns or fewer than two classes.
    """
    path = Path(csv_path)
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    for col in ("path", "label"):
        if col not in table.columns:
            raise MedclipError(f"{path}: needs columns 'path' and 'label' (missing {col!r})")
    table = table[(table["path"].str.strip() != "") & (table["label"].str.strip() != "")]
    classes = tuple(sorted(set(table["label"].str.strip())))
    if len(classes) < 2:
        raise MedclipError(f"{path}: needs at least two classes in 'label'")
    gcol = (
        "patient" if "patient" in table.columns else "group" if "group" in table.columns else None
    )
    paths, labels, groups = [], [], []
    for row in table.to_dict("records"):
        p = Path(str(row["path"]).strip())
        paths.append(p if p.is_absolute() else path.parent / p)
        labels.append(classes.index(str(row["label"]).strip()))
        g = str(row[gcol]).strip() if gcol else ""
        groups.append(f"group:{g}" if g else str(paths[-1]))
    return FinetuneData(
        "ecg", paths, np.asarray(labels, dtype=np.int64), classes, groups, str(path)
    )


def load_finetune_data(source: str | Path) -> FinetuneData:
    """A folder is read as an X-ray ImageFolder tree, a ``.csv`` as an ECG record list."""
    p = Path(source)
    if p.is_dir():
        return load_image_folder(p)
    if p.is_file() and p.suffix.lower() == ".csv":
        return load_ecg_csv(p)
    raise MedclipError(f"{p}: expected a folder of class sub-folders or a CSV of ECG records")


# ----------------------------------------------------------------------------- features
def _studies(data: FinetuneData) -> list[Study]:
    if data.modality == "xray":
        return [Study(f"f{i}", "", xray_path=p) for i, p in enumerate(data.paths)]
    return [Study(f"f{i}", "", ecg_path=p) for i, p in enumerate(data.paths)]


def extract_features(bundle: Any, data: FinetuneData, cfg: FinetuneConfig) -> np.ndarray:
    """``(N, D)`` frozen features; rows of unreadable files are NaN."""
    from medclip.indexing import embed_studies

    emb = embed_studies(
        bundle,
        _studies(data),
        modalities=(data.modality,),
        features=cfg.features,  # type: ignore[arg-type]
        batch_size=cfg.batch_size,
        device=cfg.device,
        progress=cfg.progress,
    )
    return emb.dense(data.modality)


def _inputs(bundle: Any, data: FinetuneData) -> torch.Tensor:
    """Preprocessed inputs ``(N, 1, S, S)`` or ``(N, 12, T)`` as the bundle expects."""
    from datamodules.cxr_io import read_cxr
    from datamodules.ecg_io import read_ecg
    from datamodules.transforms import preprocess_cxr, preprocess_ecg
    from medclip.inference import preprocessing_from_bundle

    ecg_cfg, cxr_cfg = preprocessing_from_bundle(bundle)
    if data.modality == "xray":
        arr = [preprocess_cxr(read_cxr(p), cxr_cfg)[None] for p in data.paths]
    else:
        arr = [preprocess_ecg(read_ecg(p), ecg_cfg) for p in data.paths]
    return torch.from_numpy(np.stack(arr).astype(np.float32))


def tower_blocks(tower: torch.nn.Module) -> torch.nn.Sequential | torch.nn.ModuleList:
    """The tower's main stack of blocks (ViT ``blocks``, CNN ``stages``/``layers``)."""
    best: tuple[int, Any] | None = None
    for name, mod in tower.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(mod, (torch.nn.Sequential, torch.nn.ModuleList)) and leaf in (
            "blocks",
            "stages",
            "layers",
            "layer",
        ):
            depth = name.count(".")
            if best is None or depth < best[0]:
                best = (depth, mod)
    if best is None:
        raise MedclipError(f"{type(tower).__name__}: no block stack found to fine-tune")
    blocks: torch.nn.Sequential | torch.nn.ModuleList = best[1]
    return blocks


class _TowerClassifier(torch.nn.Module):
    def __init__(self, tower: torch.nn.Module, dim: int, n_classes: int) -> None:
        super().__init__()
        self.tower = tower
        self.head = torch.nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.tower(x))
        return out


def _train_blocks(
    tower: torch.nn.Module, x: torch.Tensor, y: np.ndarray, n_classes: int, cfg: FinetuneConfig
) -> torch.nn.Module:
    """Fine-tune the last ``cfg.train_blocks`` blocks of a copy of ``tower`` with a linear head."""
    from tqdm.auto import tqdm

    tower = copy.deepcopy(tower).to(cfg.device)
    for p in tower.parameters():
        p.requires_grad_(False)
    blocks = tower_blocks(tower)
    for blk in list(blocks)[-cfg.train_blocks :]:
        for p in blk.parameters():
            p.requires_grad_(True)
    for name, mod in tower.named_modules():  # final norm after the blocks (ViT)
        if name.endswith("norm") and name.count(".") <= 1:
            for p in mod.parameters():
                p.requires_grad_(True)
    dim = int(getattr(tower, "output_dim", 0)) or int(tower(x[:2].to(cfg.device)).shape[1])
    model = _TowerClassifier(tower, dim, n_classes).to(cfg.device)
    params = [
        {"params": [p for p in tower.parameters() if p.requires_grad], "lr": cfg.lr},
        {"params": model.head.parameters(), "lr": cfg.lr * 10},
    ]
    opt = torch.optim.AdamW(params, weight_decay=1e-2)
    g = torch.Generator().manual_seed(cfg.seed)
    target = torch.from_numpy(y.astype(np.int64))
    model.train()
    for _ in tqdm(range(cfg.epochs), desc="fine-tuning blocks", disable=not cfg.progress):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            if len(idx) < 2:
                continue
            loss = torch.nn.functional.cross_entropy(
                model(x[idx].to(cfg.device)), target[idx].to(cfg.device)
            )
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    model.eval()
    return model.tower


@torch.no_grad()
def _tower_features(tower: torch.nn.Module, x: torch.Tensor, cfg: FinetuneConfig) -> np.ndarray:
    tower.eval()
    out = [
        tower(x[i : i + cfg.batch_size].to(cfg.device)).float().cpu().numpy()
        for i in range(0, len(x), cfg.batch_size)
    ]
    return np.concatenate(out)


# ----------------------------------------------------------------------------- CV + export
@dataclass
class FinetuneResult:
    """What :func:`finetune` produced.

    Attributes:
        out_dir: the classifier bundle (None when not saved).
        report: the cross-validation report (``report.json`` content).
        oof_proba: ``(N, C)`` out-of-fold probabilities (NaN rows: unreadable files).
        data: the data used.
    """

    out_dir: Path | None
    report: dict[str, Any]
    oof_proba: np.ndarray
    data: FinetuneData
    files: list[Path] = field(default_factory=list)


def cv_folds(data: FinetuneData, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded stratified K-fold splits that never put one group (patient) on both sides.

    ``k`` is lowered (with a warning) when there are fewer groups or rows per class.

    Returns:
        ``(train_rows, test_rows)`` per fold.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(set(data.groups))
    per_class = np.bincount(data.labels, minlength=len(data.classes))
    k_eff = int(min(k, n_groups, max(2, per_class.min())))
    if k_eff < k:
        logger.warning(
            "cross-validation: %d folds instead of %d (too few groups/class rows)", k_eff, k
        )
    if k_eff < 2:
        raise MedclipError("need at least 2 groups and 2 rows per class for cross-validation")
    splitter = StratifiedGroupKFold(n_splits=k_eff, shuffle=True, random_state=seed)
    x = np.zeros(len(data))
    return [(tr, te) for tr, te in splitter.split(x, data.labels, data.groups)]


def finetune(
    bundle: Any,
    data: FinetuneData,
    out_dir: str | Path | None = None,
    cfg: FinetuneConfig | None = None,
) -> FinetuneResult:
    """Cross-validate, refit on all rows and (optionally) save a classifier bundle.

    Args:
        bundle: the base bundle (:func:`medclip.bundle.load_bundle`).
        data: labelled data (:func:`load_finetune_data`).
        out_dir: classifier bundle folder (None: report only, nothing written).
        cfg: settings.

    Returns:
        :class:`FinetuneResult`.
    """
    from medclip.eval_report import RESEARCH_LINE, clean_json, score_multiclass

    cfg = cfg or FinetuneConfig()
    torch.manual_seed(cfg.seed)
    if cfg.train_blocks:
        x_in = _inputs(bundle, data)
        feats = np.full((len(data), 1), np.nan)
        ok = np.ones(len(data), dtype=bool)
    else:
        feats = extract_features(bundle, data, cfg)
        ok = ~np.isnan(feats).any(axis=1)
        if not ok.all():
            logger.warning("%d unreadable file(s) left out", int((~ok).sum()))
    data_ok = data.subset(np.flatnonzero(ok).tolist())
    feats = feats[ok]
    pcfg_mode = "multiclass"
    oof = np.full((len(data_ok), len(data.classes)), np.nan)
    fold_auroc: list[float | None] = []
    folds = cv_folds(data_ok, cfg.folds, cfg.seed)
    tower = bundle.model.towers[data.modality]
    for f, (tr, te) in enumerate(folds):
        if cfg.train_blocks:
            tuned = _train_blocks(tower, x_in[tr], data_ok.labels[tr], len(data.classes), cfg)
            x_tr = _tower_features(tuned, x_in[tr], cfg)
            x_te = _tower_features(tuned, x_in[te], cfg)
        else:
            x_tr, x_te = feats[tr], feats[te]
        probe = fit_linear_probe(
            x_tr,
            data_ok.labels[tr],
            labels=data.classes,
            groups=[data_ok.groups[i] for i in tr],
            cfg=ProbeConfig(mode=pcfg_mode, seed=cfg.seed + f),
        )
        oof[te] = probe.predict_proba(x_te)
        fold_auroc.append(_fold_auroc(data_ok.labels[te], oof[te]))
    out_path = Path(out_dir) if out_dir is not None else None
    plot_dir = Path(tempfile.mkdtemp(prefix="medclip-finetune-"))
    res, md, files = score_multiclass(
        "finetune",
        data_ok.labels,
        oof,
        data.classes,
        plot_dir,
        n_boot=cfg.n_boot,
        seed=cfg.seed,
        title=f"{len(folds)}-fold cross-validation (out-of-fold)",
    )
    if len(data.classes) == 2:
        from medclip.eval_report import quiet_auroc

        ci = quiet_auroc(
            (data_ok.labels == 1).astype(float)[:, None],
            oof[:, 1:2],
            [data.classes[1]],
            cfg.n_boot,
            cfg.seed,
        )
        res["binary_auroc"] = {
            "positive_class": data.classes[1],
            "auroc": ci.point.macro,
            "ci": [ci.macro_low, ci.macro_high],
        }
    report: dict[str, Any] = {
        "research_use_notice": RESEARCH_LINE,
        "base_bundle": str(getattr(bundle, "path", "")),
        "trained_on": str((getattr(bundle, "labels", {}) or {}).get("trained_on", "unknown")),
        "data": {**data.summary(), "source": data.source, "unreadable": int((~ok).sum())},
        "method": {
            **dataclasses.asdict(cfg),
            "head": "softmax linear probe (L2 chosen on a patient-grouped hold-out)",
            "cv": "StratifiedGroupKFold by patient",
        },
        "folds": len(folds),
        "fold_auroc": fold_auroc,
        "cv": res,
    }
    result = FinetuneResult(out_path, clean_json(report), oof, data_ok, list(files))
    if out_path is None:
        shutil.rmtree(plot_dir, ignore_errors=True)
        result.files = []
        return result
    # final classifier on every row
    final_tower = tower
    if cfg.train_blocks:
        final_tower = _train_blocks(tower, x_in, data_ok.labels, len(data.classes), cfg)
        feats = _tower_features(final_tower, x_in, cfg)
    probe = fit_linear_probe(
        feats,
        data_ok.labels,
        labels=data.classes,
        groups=data_ok.groups,
        cfg=ProbeConfig(mode=pcfg_mode, seed=cfg.seed),
    )
    _save_classifier(bundle, final_tower, probe, data_ok, cfg, out_path, report)
    moved = []
    for png in files:  # drawn into a temporary folder: the bundle folder is replaced on save
        moved.append(Path(shutil.move(str(png), str(out_path / png.name))))
    shutil.rmtree(plot_dir, ignore_errors=True)
    _write_text(out_path / "report.md", _report_md(report, md, len(folds)))
    write_json_atomic(out_path / "report.json", result.report, allow_nan=False)
    result.files = [*moved, out_path / "report.json", out_path / "report.md"]
    return result


def _fold_auroc(y: np.ndarray, p: np.ndarray) -> float | None:
    from medclip.eval_report import quiet_auroc

    onehot = np.eye(p.shape[1])[y]
    macro = quiet_auroc(onehot, p, [str(i) for i in range(p.shape[1])], 1, 0).point.macro
    return None if math.isnan(macro) else float(macro)


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _report_md(report: dict[str, Any], md: list[str], n_folds: int) -> str:
    from medclip.eval_report import fmt

    d = report["data"]
    lines = [
        "# medclip fine-tune report",
        "",
        f"*{report['research_use_notice']}*",
        "",
        f"- base bundle: `{report['base_bundle']}` (trained on: {report['trained_on']})",
        f"- data: {d['n']} {d['modality']} files, classes "
        + ", ".join(f"{c} {n}" for c, n in d["per_class"].items())
        + f"; {d['groups']} patient groups; {d['dropped_duplicates']} duplicates dropped; "
        f"{d['unreadable']} unreadable",
        f"- method: {report['method']['head']}; features `{report['method']['features']}`; "
        f"fine-tuned blocks: {report['method']['train_blocks']}",
        f"- {n_folds}-fold patient-grouped cross-validation; per-fold AUROC: "
        + ", ".join(fmt(v) for v in report["fold_auroc"]),
    ]
    if "binary_auroc" in report["cv"]:
        b = report["cv"]["binary_auroc"]
        ci = b["ci"]
        lines.append(
            f"- out-of-fold AUROC ({b['positive_class']} vs rest): **{fmt(b['auroc'])}** "
            f"[{fmt(ci[0])}, {fmt(ci[1])}]"
        )
    return "\n".join([*lines, "", *md]) + "\n"


def _save_classifier(
    bundle: Any,
    tower: torch.nn.Module,
    probe: LinearProbe,
    data: FinetuneData,
    cfg: FinetuneConfig,
    out: Path,
    report: dict[str, Any],
) -> None:
    """A copy of the base bundle (towers as fine-tuned) plus ``classifier/`` with the head,
    written into a temporary sibling folder and renamed onto ``out``."""
    from safetensors.torch import save_file

    base = Path(str(getattr(bundle, "path", "")))
    if not (base / "config.json").is_file():
        raise MedclipError(f"{base}: base bundle folder not found (needed to copy its files)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    skip = {"index", "index_assets", CLASSIFIER_DIR, "report.json", "report.md"}
    tuned = tower is not bundle.model.towers[data.modality]
    if tuned and data.modality == "ecg":
        skip.add("prototypes")  # prototypes live in the old ECG feature space
    try:
        for item in base.iterdir():
            if item.name in skip or item.name.startswith("."):
                continue
            dest = tmp / item.name
            if item.is_dir():
                shutil.copytree(item, dest)
            else:
                shutil.copy2(item, dest)
        if tuned:
            model = copy.deepcopy(bundle.model).cpu()
            model.towers[data.modality] = copy.deepcopy(tower).cpu()
            state = {
                k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
            }
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _finish_classifier(bundle, probe, data, cfg, tmp, report, base)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _finish_classifier(
    bundle: Any,
    probe: LinearProbe,
    data: FinetuneData,
    cfg: FinetuneConfig,
    out: Path,
    report: dict[str, Any],
    base: Path,
) -> None:
    """Write ``classifier/`` and extend the card inside the (temporary) bundle folder."""
    head_dir = out / CLASSIFIER_DIR
    probe.save(head_dir, HEAD_NAME)
    digest = ""
    if (base / "model.safetensors").is_file():
        h = hashlib.sha256()
        with open(base / "model.safetensors", "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
    write_json_atomic(
        head_dir / "finetune.json",
        {
            "format": "medclip-classifier",
            "version": 1,
            "modality": data.modality,
            "classes": list(data.classes),
            "features": cfg.features,
            "train_blocks": cfg.train_blocks,
            "base_bundle": str(base),
            "base_bundle_sha256": digest,
            "data": data.summary(),
            "cv_auroc": (report["cv"].get("binary_auroc") or {}).get("auroc"),
            "research_use_notice": report["research_use_notice"],
        },
        allow_nan=False,
    )
    card = out / "card.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    text += (
        "\n## Fine-tuned classifier (`classifier/`)\n\n"
        f"- {data.modality} classes: {', '.join(data.classes)}; {len(data)} training files "
        f"({len(set(data.groups))} patient groups)\n"
        f"- head: softmax linear probe on `{cfg.features}` features; fine-tuned blocks: "
        f"{cfg.train_blocks}\n"
        "- cross-validation: see `report.md`. Research use only.\n"
    )
    _write_text(card, text)


@dataclass
class Classifier:
    """A saved fine-tuned classifier: the bundle plus its linear head."""

    bundle: Any
    head: LinearProbe
    modality: str
    classes: tuple[str, ...]
    features: str

    @torch.no_grad()
    def predict_proba(self, files: Sequence[str | Path], batch_size: int = 32) -> np.ndarray:
        """``(N, C)`` class probabilities of X-ray / ECG files (NaN rows: unreadable)."""
        data = FinetuneData(
            self.modality,
            [Path(f) for f in files],
            np.zeros(len(files), dtype=np.int64),
            self.classes,
            [str(f) for f in files],
            "",
        )
        cfg = FinetuneConfig(features=self.features, batch_size=batch_size, progress=False)
        feats = extract_features(self.bundle, data, cfg)
        out = np.full((len(files), len(self.classes)), np.nan)
        ok = ~np.isnan(feats).any(axis=1)
        if ok.any():
            out[ok] = self.head.predict_proba(feats[ok])
        return out


def load_classifier(path: str | Path, map_location: str = "cpu") -> Classifier:
    """Load a folder written by :func:`finetune` (safetensors + JSON, no pickle)."""
    import json

    from medclip.bundle import load_bundle

    root = Path(path)
    meta_path = root / CLASSIFIER_DIR / "finetune.json"
    if not meta_path.is_file():
        raise MedclipError(f"{root}: not a medclip classifier (no {CLASSIFIER_DIR}/finetune.json)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    head = LinearProbe.load(root / CLASSIFIER_DIR, HEAD_NAME)
    return Classifier(
        bundle=load_bundle(root, map_location=map_location),
        head=head,
        modality=str(meta["modality"]),
        classes=tuple(meta["classes"]),
        features=str(meta["features"]),
    )
