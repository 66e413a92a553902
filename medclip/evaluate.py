"""Evaluation protocols over a model bundle (``medclip evaluate PROTOCOL``). Research use only.

Every protocol writes ``results.json``, ``results.md`` and ROC PNGs into its output folder.
AUROC is computed once over the whole evaluated set with percentile-bootstrap 95 % CIs
(:func:`medclip.metrics.bootstrap_auroc`); F1 uses thresholds tuned on the **validation** split
only (never on the test split, unlike the published PTB-XL Fmax, ANCHORS.md §3).

Protocols
---------
``ptbxl`` (tasks ``all``, ``diagnostic``, ``subdiagnostic``, ``superdiagnostic``, ``form``,
``rhythm``; Strodthoff et al. 2021):

* Split by ``strat_fold``: 1-8 train, 9 validation, 10 test.
* *Zero-shot*: prompts are built from ``scp_statements.csv`` - each SCP code's ``description``
  (and ``SCP-ECG Statement Description``) become the label's synonyms; a sub-class gets the
  descriptions of its member codes; super-classes use medclip's default vocabulary; ``NORM`` uses
  the normal/abnormal prompt pair. Labels without any description are left out of zero-shot (and
  listed). ECGs are preprocessed as the bundle says (the model's own input).
* *Linear probe* on frozen ECG-tower features, with the benchmark's preprocessing: records at
  100 Hz (the model's rate if it differs), no filtering, one global standardisation (mean/std
  pooled over leads and samples) fitted on the training folds only, 2.5 s windows with a 1.25 s
  stride; training uses every window with its record's labels, validation/test take the
  **max** over a record's windows. A tower that cannot take 2.5 s inputs gets whole records
  (noted in the results). The L2 penalty is chosen on fold 9. Label budgets: ``fractions``
  (default 1 %, 10 %, 100 % of the training records, seeded, at least one positive per label).

``chexpert-5x200`` (GLoRIA / MedCLIP convention, DATASETS.md §4.3): from CheXpert ``train.csv``,
frontal images with blanks read as 0; for each competition class (Atelectasis, Cardiomegaly,
Consolidation, Edema, Pleural Effusion) the images positive for it and 0 for every other
observation except ``No Finding`` (uncertain rows drop out); 200 per class drawn with a
**seeded** generator (GLoRIA used none) - :func:`datamodules.chexpert.chexpert_5x200`. Scored as
5-way single-label zero-shot (softmax over the classes' positive prompts): accuracy, macro F1,
one-vs-rest AUROC. A hash of the selection is stored so runs can be compared.

``chexpert`` and ``mimic-cxr``: 14-label multi-label zero-shot AUROC (positive/negative prompt
pairs). CheXpert: test = ``valid.csv`` (frontal), validation for thresholds = a seeded sample of
``train.csv`` (``threshold_rows``). MIMIC-CXR: the official test / validate / train split;
uncertain labels are ignored, blanks count as negative. ``probe=True`` adds a linear probe on
X-ray tower features trained on the train split at each label fraction.

``edema`` (MIMIC-CXR pulmonary edema severity, grades 0-3): 4-way zero-shot over grade prompts;
accuracy, macro F1, one-vs-rest AUROC, and ordinal agreement (Spearman rho of the expected grade,
mean absolute grade error). Default labels: the 4-reader consensus file.

``retrieval``: paired cross-modal retrieval within one split (default test) of a tri-modal
dataset (synthetic / MIMIC) or PTB-XL (ECG <-> report): for every ordered modality pair, the
rank of the query's own study among all candidates; Recall@1/5/10, mean and median rank.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from datamodules.types import Study
from medclip.errors import MedclipError
from medclip.eval_report import Report, fmt, quiet_auroc, score_multiclass, score_multilabel
from medclip.indexing import StudyEmbeddings, detect_dataset, embed_studies
from medclip.probe import ProbeConfig, aggregate_windows, fit_linear_probe, label_fraction_subset
from medclip.zeroshot_config import ZeroShotConfig

logger = logging.getLogger(__name__)

PROTOCOLS: tuple[str, ...] = (
    "ptbxl",
    "chexpert-5x200",
    "chexpert",
    "mimic-cxr",
    "edema",
    "retrieval",
)

#: Edema grade prompts (label order = grade 0..3 of ``datamodules.edema.EDEMA_LABELS``).
EDEMA_PROMPTS: dict[str, tuple[str, ...]] = {
    "edema_none": (
        "no pulmonary edema",
        "clear lungs without vascular congestion",
        "normal pulmonary vasculature",
    ),
    "edema_vascular_congestion": (
        "pulmonary vascular congestion",
        "mild pulmonary vascular engorgement",
        "cephalization of the pulmonary vessels",
    ),
    "edema_interstitial": (
        "interstitial pulmonary edema",
        "moderate pulmonary edema with kerley b lines",
        "interstitial edema",
    ),
    "edema_alveolar": (
        "alveolar pulmonary edema",
        "severe pulmonary edema with bilateral airspace opacities",
        "alveolar edema",
    ),
}

#: Ordered (query, gallery) modality pairs of the retrieval protocol.
RETRIEVAL_PAIRS: tuple[tuple[str, str], ...] = (
    ("text", "xray"),
    ("xray", "text"),
    ("text", "ecg"),
    ("ecg", "text"),
    ("xray", "ecg"),
    ("ecg", "xray"),
)


@dataclass(frozen=True)
class EvalOptions:
    """Options shared by every protocol.

    Attributes:
        batch_size: studies per embedding batch.
        device: torch device.
        num_workers: DataLoader workers reading files.
        n_boot: bootstrap resamples for the AUROC CIs.
        seed: seed of every random choice (subsets, bootstrap, probes).
        limit: at most this many records per split (quick runs); None = all.
        fractions: label budgets of the linear probes (shares of the training rows).
        probe: run linear probes where the protocol offers them (PTB-XL always does unless
            ``zero_shot_only``).
        features: probe features: ``tower`` (pre-projection) or ``embedding`` (shared space).
        progress: progress bars.
        command: the command line, recorded in the results.
    """

    batch_size: int = 32
    device: str = "cpu"
    num_workers: int = 0
    n_boot: int = 1000
    seed: int = 0
    limit: int | None = None
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    probe: bool = False
    features: str = "tower"
    progress: bool = True
    command: str = ""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.n_boot < 1:
            raise ValueError("n_boot must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be >= 1")
        if not self.fractions or any(not 0.0 < f <= 1.0 for f in self.fractions):
            raise ValueError("fractions must lie in (0, 1]")
        if self.features not in ("tower", "embedding"):
            raise ValueError("features must be 'tower' or 'embedding'")
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))


# ----------------------------------------------------------------------------- shared pieces
def _header(protocol: str, bundle: Any, data_root: Path, opts: EvalOptions) -> dict[str, Any]:
    from medclip import __version__

    labels = getattr(bundle, "labels", {}) or {}
    return {
        "bundle": str(getattr(bundle, "path", "")),
        "trained_on": str(labels.get("trained_on", "unknown")),
        "data": str(data_root),
        "options": dataclasses.asdict(opts),
        "command": opts.command,
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "medclip_version": __version__,
    }


def _zs_config(
    bundle: Any,
    labels: Sequence[str],
    modality: str,
    *,
    synonyms: dict[str, tuple[str, ...]] | None = None,
    mode: str = "multilabel",
    templates_pos: tuple[str, ...] | None = None,
) -> ZeroShotConfig:
    base: ZeroShotConfig = getattr(bundle.config, "zeroshot", None) or ZeroShotConfig()
    changes: dict[str, Any] = {
        "mode": mode,
        "synonyms": {**base.synonyms, **(synonyms or {})},
        "label_modalities": {**base.label_modalities, **{lab: (modality,) for lab in labels}},
    }
    if templates_pos is not None:
        changes["templates_pos"] = templates_pos
    return dataclasses.replace(base, **changes)


def zeroshot_scores(
    bundle: Any,
    embeddings: np.ndarray,
    labels: Sequence[str],
    modality: str,
    cfg: ZeroShotConfig,
    device: str = "cpu",
) -> np.ndarray:
    """``(N, L)`` zero-shot probabilities of ``(N, E)`` embeddings of one modality."""
    from medclip.inference import Predictor

    if len(embeddings) == 0:
        return np.zeros((0, len(labels)))
    pred = Predictor(bundle, device=device, labels=list(labels), zeroshot_config=cfg)
    out = pred.classifier.predict_proba(torch.from_numpy(embeddings), modality)
    return out.cpu().numpy().astype(np.float64)


def _limit(items: list[Any], limit: int | None) -> list[Any]:
    return items if limit is None else items[:limit]


def _labels_of(studies: Sequence[Study], names: Sequence[str]) -> np.ndarray:
    from datamodules.dataset import labels_matrix

    return labels_matrix(studies, names).astype(np.float64)


def _embed(
    bundle: Any, studies: Sequence[Study], modality: str, opts: EvalOptions, features: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors, rows)`` of one modality (rows index ``studies``)."""
    if not studies:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    emb = embed_studies(
        bundle,
        studies,
        modalities=(modality,),
        features=features,  # type: ignore[arg-type]
        batch_size=opts.batch_size,
        device=opts.device,
        num_workers=opts.num_workers,
        progress=opts.progress,
    )
    return emb.get(modality)


def _choose_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    labels: Sequence[str],
    opts: EvalOptions,
    val_scores: Callable[[Any], tuple[np.ndarray, np.ndarray] | None],
) -> tuple[Any, dict[str, float | None]]:
    """Fit one probe per L2 penalty; keep the best validation macro AUROC (ties: larger)."""
    grid = ProbeConfig().weight_decays
    best: tuple[float, Any] | None = None
    scores: dict[str, float | None] = {}
    for wd in grid:
        probe = fit_linear_probe(
            x_train,
            y_train,
            labels=labels,
            cfg=ProbeConfig(weight_decays=(wd,), seed=opts.seed),
        )
        val = val_scores(probe)
        if val is None or len(val[0]) == 0:
            return probe, {}
        macro = quiet_auroc(val[0], val[1], labels, 1, opts.seed).point.macro
        scores[f"{wd:g}"] = None if math.isnan(macro) else float(macro)
        key = -math.inf if math.isnan(macro) else macro
        if best is None or key >= best[0]:
            best = (key, probe)
    assert best is not None
    return best[1], scores


def _probe_blocks(
    report: Report,
    name: str,
    labels: Sequence[str],
    feats: dict[str, np.ndarray],
    ys: dict[str, np.ndarray],
    out: Path,
    opts: EvalOptions,
) -> None:
    """Linear probes at each label fraction on per-record features (train/val/test)."""
    y_tr, x_tr = ys["train"], feats["train"]
    if len(x_tr) < 2:
        report.add(f"{name}/probe", {"skipped": "fewer than 2 training rows"})
        return
    for frac in opts.fractions:
        rows = label_fraction_subset(len(x_tr), frac, opts.seed, y_tr, min_rows=2)
        xv, yv = feats["val"], ys["val"]

        def val_scores(p: Any, xv: np.ndarray = xv, yv: np.ndarray = yv) -> Any:
            return (yv, p.predict_proba(xv)) if len(xv) else None

        probe, selection = _choose_probe(x_tr[rows], y_tr[rows], labels, opts, val_scores)
        s_test = probe.predict_proba(feats["test"])
        s_val = probe.predict_proba(xv) if len(xv) else None
        title = f"{name}: linear probe, {frac:.0%} of labels ({len(rows)} rows)"
        res, md, files = score_multilabel(
            f"{name}_probe_{frac:g}",
            ys["test"],
            s_test,
            labels,
            out,
            y_val=yv if s_val is not None else None,
            s_val=s_val,
            n_boot=opts.n_boot,
            seed=opts.seed,
            title=title,
        )
        res.update(
            fraction=frac,
            n_train=len(rows),
            weight_decay=probe.weight_decay,
            selection=selection,
            features=opts.features,
            constant_labels=list(probe.constant_labels),
        )
        report.add(f"{name}/probe_{frac:g}", res, md, files)


def _require(items: Sequence[Any], what: str) -> None:
    if not items:
        raise MedclipError(f"no {what} found; check --data and the dataset layout")


# ----------------------------------------------------------------------------- PTB-XL
def ptbxl_synonyms(
    statements: pd.DataFrame, task: str, labels: Sequence[str], max_phrases: int = 4
) -> dict[str, tuple[str, ...]]:
    """Zero-shot phrases of PTB-XL task labels from ``scp_statements.csv`` descriptions.

    Codes map to their ``description`` (+ ``SCP-ECG Statement Description``); sub-classes to
    their member codes' descriptions; super-classes to medclip's default vocabulary. Labels
    with no phrase are absent from the result.
    """
    from medclip import prompts as default_prompts

    cols = [c for c in ("description", "SCP-ECG Statement Description") if c in statements]

    def phrases(code: str) -> list[str]:
        if code not in statements.index:
            return []
        out = []
        for c in cols:
            v = statements.at[code, c]
            if isinstance(v, str) and v.strip():
                out.append(v.strip().lower())
        return out

    result: dict[str, tuple[str, ...]] = {}
    for lab in labels:
        found: list[str] = []
        if task == "superdiagnostic":
            found = list(default_prompts.DEFAULT_SYNONYMS.get(lab, ()))
        if task == "subdiagnostic" or (task == "superdiagnostic" and not found):
            column = "diagnostic_subclass" if task == "subdiagnostic" else "diagnostic_class"
            if column in statements:
                members = statements.index[statements[column].astype(str).str.strip() == lab]
                for code in members:
                    found.extend(phrases(str(code))[:1])
        else:
            found.extend(phrases(lab))
        uniq = tuple(dict.fromkeys(p for p in found if p))[:max_phrases]
        if uniq:
            result[lab] = uniq
    return result


class _EcgArrays(torch.utils.data.Dataset[Any]):
    """Reads and preprocesses ECG records; unreadable ones give None (logged)."""

    def __init__(self, paths: Sequence[Path], cfg: Any) -> None:
        self.paths = list(paths)
        self.cfg = cfg

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray | None:
        from datamodules.ecg_io import read_ecg
        from datamodules.errors import MedclipDataError
        from datamodules.transforms import preprocess_ecg

        try:
            return preprocess_ecg(read_ecg(self.paths[i]), self.cfg)
        except (MedclipDataError, OSError, ValueError) as exc:
            logger.warning("skipping unreadable ECG %s: %s", Path(self.paths[i]).name, exc)
            return None


def _iter_arrays(paths: Sequence[Path], cfg: Any, opts: EvalOptions, desc: str) -> Any:
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    loader = DataLoader(
        _EcgArrays(paths, cfg),
        batch_size=opts.batch_size,
        num_workers=opts.num_workers,
        collate_fn=list,
    )
    start = 0
    with tqdm(total=len(paths), desc=desc, disable=not opts.progress) as bar:
        for chunk in loader:
            yield start, chunk
            start += len(chunk)
            bar.update(len(chunk))


@torch.no_grad()
def _ecg_accepts(model: Any, length: int, features: str, device: str) -> bool:
    """Can the ECG tower encode ``(B, 12, length)`` inputs?"""
    x = torch.zeros(2, 12, length, device=device)
    try:
        out = model.towers["ecg"](x) if features == "tower" else model.encode_ecg(x)
    except Exception:  # any shape error from the tower
        return False
    return bool(out.ndim == 2 and out.shape[0] == 2)


@torch.no_grad()
def ptbxl_window_features(
    bundle: Any,
    paths: Sequence[Path],
    train_mask: np.ndarray,
    opts: EvalOptions,
    *,
    window_s: float = 2.5,
    stride_s: float = 1.25,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Frozen-tower features of benchmark-preprocessed ECG windows.

    Args:
        bundle: the bundle (its ECG tower and sampling rate).
        paths: WFDB record stems.
        train_mask: ``(N,)`` bool, the records the global standardisation is fitted on.
        opts: options (``features``, batch size, device).
        window_s: window length in seconds (0: whole records).
        stride_s: window stride in seconds.

    Returns:
        ``(features (W, D), owner (W,), info)``; ``owner`` indexes ``paths``; unreadable
        records have no windows.
    """
    from datamodules.transforms import EcgTransformConfig, ecg_windows, fit_global_standardizer
    from medclip.inference import preprocessing_from_bundle

    model = bundle.model.to(opts.device).eval()
    fs = float(preprocessing_from_bundle(bundle)[0].fs_hz)
    length = round(10.0 * fs)
    read_cfg = EcgTransformConfig(fs_hz=fs, length=length, highpass_hz=0.0, standardize="none")
    train_paths = [p for p, m in zip(paths, train_mask) if m]

    def train_arrays() -> Any:
        for _, chunk in _iter_arrays(train_paths, read_cfg, opts, "PTB-XL standardiser"):
            yield from (a for a in chunk if a is not None)

    mean, std = fit_global_standardizer(train_arrays())
    win = round(window_s * fs) if window_s > 0 else length
    stride = max(1, round(stride_s * fs))
    windows = window_s > 0 and _ecg_accepts(model, win, opts.features, opts.device)
    if window_s > 0 and not windows:
        logger.warning(
            "the ECG tower cannot encode %d-sample windows; the probe uses whole records", win
        )
        win = length
    feats: list[np.ndarray] = []
    owner: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    pending_owner: list[int] = []

    def flush() -> None:
        if not pending:
            return
        x = torch.from_numpy(np.concatenate(pending)).to(opts.device)
        for i in range(0, len(x), max(opts.batch_size * 4, 1)):
            xb = x[i : i + opts.batch_size * 4]
            f = model.towers["ecg"](xb) if opts.features == "tower" else model.encode_ecg(xb)
            feats.append(f.float().cpu().numpy())
        owner.append(np.asarray(pending_owner, dtype=np.int64))
        pending.clear()
        pending_owner.clear()

    for start, chunk in _iter_arrays(paths, read_cfg, opts, "PTB-XL probe features"):
        for j, arr in enumerate(chunk):
            if arr is None:
                continue
            z = ((arr - mean) / std).astype(np.float32)
            w = ecg_windows(z, win, stride) if windows else z[None]
            pending.append(w)
            pending_owner.extend([start + j] * len(w))
        flush()
    info = {
        "fs_hz": fs,
        "standardiser": {"mean_mv": mean, "std_mv": std, "fitted_on": "training folds"},
        "window_s": win / fs if windows else None,
        "stride_s": stride / fs if windows else None,
        "aggregation": "max over windows" if windows else "none (whole records)",
        "features": opts.features,
    }
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), info
    return np.concatenate(feats), np.concatenate(owner), info


def evaluate_ptbxl(
    bundle: Any,
    root: Path,
    out: Path,
    opts: EvalOptions,
    *,
    tasks: Sequence[str] = ("superdiagnostic",),
    zero_shot: bool = True,
    probe: bool = True,
    window_s: float = 2.5,
    stride_s: float = 1.25,
) -> Report:
    """The PTB-XL protocol (module docstring): zero-shot and linear probe per task."""
    from datamodules.ptbxl import PTBXL_TASKS, load_ptbxl, ptbxl_task

    bad = [t for t in tasks if t not in PTBXL_TASKS]
    if bad:
        raise ValueError(f"unknown PTB-XL task(s) {bad}; choose from {list(PTBXL_TASKS)}")
    base = root / "ptb-xl" if (root / "ptb-xl").is_dir() else root
    index = load_ptbxl(base)
    report = Report("ptbxl", _header("ptbxl", bundle, root, opts))
    per_task = {t: ptbxl_task(index, t) for t in tasks}
    split_of = index.records["split"]
    ids_all = sorted({int(i) for tl in per_task.values() for i in tl.ids})
    keep: list[int] = []
    for split in ("train", "val", "test"):
        keep += _limit([i for i in ids_all if split_of.at[i] == split], opts.limit)
    keep = sorted(keep)
    _require(keep, "PTB-XL records with task labels")
    pos = {ecg_id: k for k, ecg_id in enumerate(keep)}
    paths = [index.record_path(i, 100) for i in keep]
    splits = np.asarray([split_of.at[i] for i in keep])
    counts = {s: int((splits == s).sum()) for s in ("train", "val", "test")}
    report.header["split"] = {
        "folds": {"train": "1-8", "val": "9", "test": "10"},
        "records": counts,
    }

    zs_emb = np.full((len(keep), 0), np.nan, np.float32)
    if zero_shot:
        studies = [Study(str(i), "", ecg_path=p, split=s) for i, p, s in zip(keep, paths, splits)]
        vec, rows = _embed(bundle, studies, "ecg", opts, "embedding")
        zs_emb = np.full((len(keep), vec.shape[1] if vec.size else 0), np.nan, np.float32)
        zs_emb[rows] = vec
    run_probe = probe and counts["train"] >= 2
    if run_probe:
        feats, owner, info = ptbxl_window_features(
            bundle, paths, splits == "train", opts, window_s=window_s, stride_s=stride_s
        )
        report.add("probe_preprocessing", info)
    elif probe:
        report.add("probe_preprocessing", {"skipped": "fewer than 2 training records"})

    for task, tl in per_task.items():
        names = list(tl.names)
        sel = np.asarray([int(i) in pos for i in tl.ids])
        rec = np.asarray([pos[int(i)] for i in tl.ids[sel]], dtype=np.int64)
        y = tl.y[sel].astype(np.float64)
        sp = splits[rec]
        md_head = [f"## PTB-XL `{task}` ({len(names)} labels)", ""]
        report.add(f"{task}/labels", {"labels": names, "n_records": len(rec)}, md_head)
        if zero_shot:
            syn = ptbxl_synonyms(index.statements, task, names)
            zcfg0 = getattr(bundle.config, "zeroshot", None) or ZeroShotConfig()
            covered = [n for n in names if n in syn or n in zcfg0.normal_labels]
            missing = [n for n in names if n not in covered]
            ok = ~np.isnan(zs_emb[rec]).any(axis=1) if zs_emb.shape[1] else np.zeros(len(rec), bool)
            if covered and ok.any():
                cfg = _zs_config(bundle, covered, "ecg", synonyms=syn)
                cols = [names.index(n) for n in covered]
                scores = zeroshot_scores(bundle, zs_emb[rec[ok]], covered, "ecg", cfg, opts.device)
                yk, spk = y[ok][:, cols], sp[ok]
                res, md, files = score_multilabel(
                    f"ptbxl_{task}_zeroshot",
                    yk[spk == "test"],
                    scores[spk == "test"],
                    covered,
                    out,
                    y_val=yk[spk == "val"],
                    s_val=scores[spk == "val"],
                    n_boot=opts.n_boot,
                    seed=opts.seed,
                    title=f"PTB-XL {task}: zero-shot (test fold 10)",
                )
                res.update(labels_without_prompts=missing, prompts_from="scp_statements.csv")
                if missing:
                    md.append(f"Labels without prompts (not scored): {', '.join(missing)}.\n")
                report.add(f"{task}/zeroshot", res, md, files)
            else:
                report.add(f"{task}/zeroshot", {"skipped": "no labels with prompts or no ECGs"})
        if run_probe:
            task_feats: dict[str, np.ndarray] = {}
            task_y: dict[str, np.ndarray] = {}
            rec_of = {int(r): k for k, r in enumerate(rec)}
            w_task = np.asarray([int(o) in rec_of for o in owner])
            w_rec = np.asarray([rec_of[int(o)] for o in owner[w_task]], dtype=np.int64)
            w_feat = feats[w_task]
            w_split = sp[w_rec] if len(w_rec) else np.asarray([], dtype=str)
            for s in ("train", "val", "test"):
                m = w_split == s
                task_feats[s] = w_feat[m]
                task_y[s] = w_rec[m]
            _ptbxl_probe(report, task, names, y, sp, task_feats, task_y, out, opts)
    return report


def _ptbxl_probe(
    report: Report,
    task: str,
    names: list[str],
    y: np.ndarray,
    sp: np.ndarray,
    wfeat: dict[str, np.ndarray],
    wrec: dict[str, np.ndarray],
    out: Path,
    opts: EvalOptions,
) -> None:
    """Window-level training, max-aggregated record scores on validation/test."""
    train_recs = np.flatnonzero(sp == "train")
    if len(train_recs) < 2 or len(wfeat["train"]) < 2:
        report.add(f"{task}/probe", {"skipped": "fewer than 2 training records"})
        return

    def record_scores(probe: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
        recs = np.flatnonzero(sp == split)
        if len(wfeat[split]) == 0:
            return y[recs][:0], np.zeros((0, len(names)))
        local = {int(r): k for k, r in enumerate(recs)}
        own = np.asarray([local[int(r)] for r in wrec[split]], dtype=np.int64)
        agg = aggregate_windows(probe.predict_proba(wfeat[split]), own, len(recs))
        ok = ~np.isnan(agg).any(axis=1)
        return y[recs][ok], agg[ok]

    for frac in opts.fractions:
        chosen = train_recs[label_fraction_subset(len(train_recs), frac, opts.seed, y[train_recs])]
        chosen_set = set(chosen.tolist())
        wmask = np.asarray([int(r) in chosen_set for r in wrec["train"]])
        x_tr = wfeat["train"][wmask]
        y_tr = y[wrec["train"][wmask]]

        def val_scores(p: Any) -> Any:
            yv, sv = record_scores(p, "val")
            return (yv, sv) if len(yv) else None

        probe, selection = _choose_probe(x_tr, y_tr, names, opts, val_scores)
        y_te, s_te = record_scores(probe, "test")
        y_va, s_va = record_scores(probe, "val")
        res, md, files = score_multilabel(
            f"ptbxl_{task}_probe_{frac:g}",
            y_te,
            s_te,
            names,
            out,
            y_val=y_va if len(y_va) else None,
            s_val=s_va if len(y_va) else None,
            n_boot=opts.n_boot,
            seed=opts.seed,
            title=f"PTB-XL {task}: linear probe, {frac:.0%} of training records ({len(chosen)})",
        )
        res.update(
            fraction=frac,
            n_train_records=len(chosen),
            n_train_windows=len(x_tr),
            weight_decay=probe.weight_decay,
            selection=selection,
            constant_labels=list(probe.constant_labels),
        )
        report.add(f"{task}/probe_{frac:g}", res, md, files)


# ----------------------------------------------------------------------------- X-ray datasets
def _chexpert_root(root: Path) -> Path:
    return root / "chexpert" if (root / "chexpert").is_dir() else root


def _mimic_cxr_index(root: Path) -> Any:
    from datamodules.mimic_cxr import load_mimic_cxr

    cxr = root / "mimic-cxr" if (root / "mimic-cxr").is_dir() else root
    jpg = root / "mimic-cxr-jpg" if (root / "mimic-cxr-jpg").is_dir() else None
    return load_mimic_cxr(cxr, meta_root=jpg)


def _xray_multilabel(
    report: Report,
    name: str,
    bundle: Any,
    sets: dict[str, list[Study]],
    labels: Sequence[str],
    out: Path,
    opts: EvalOptions,
    title: str,
) -> None:
    """Zero-shot (+ optional probe) over X-ray studies split into train/val/test lists."""
    emb: dict[str, np.ndarray] = {}
    ys: dict[str, np.ndarray] = {}
    for split in ("val", "test"):
        vec, rows = _embed(bundle, sets[split], "xray", opts, "embedding")
        emb[split] = vec
        ys[split] = (
            _labels_of(sets[split], labels)[rows] if len(rows) else np.zeros((0, len(labels)))
        )
    _require(list(emb["test"]), f"{name} test images")
    cfg = _zs_config(bundle, labels, "xray")
    s_test = zeroshot_scores(bundle, emb["test"], labels, "xray", cfg, opts.device)
    s_val = zeroshot_scores(bundle, emb["val"], labels, "xray", cfg, opts.device)
    res, md, files = score_multilabel(
        f"{name}_zeroshot",
        ys["test"],
        s_test,
        labels,
        out,
        y_val=ys["val"] if len(s_val) else None,
        s_val=s_val if len(s_val) else None,
        n_boot=opts.n_boot,
        seed=opts.seed,
        title=title,
    )
    report.add(f"{name}/zeroshot", res, md, files)
    if not opts.probe:
        return
    feats: dict[str, np.ndarray] = {}
    fys: dict[str, np.ndarray] = {}
    for split in ("train", "val", "test"):
        vec, rows = _embed(bundle, sets[split], "xray", opts, opts.features)
        feats[split] = vec if len(rows) else np.zeros((0, 1), np.float32)
        lab = _labels_of(sets[split], labels)
        fys[split] = lab[rows] if len(rows) else np.zeros((0, len(labels)))
    _probe_blocks(report, name, labels, feats, fys, out, opts)


def evaluate_chexpert(
    bundle: Any, root: Path, out: Path, opts: EvalOptions, *, threshold_rows: int = 1000
) -> Report:
    """CheXpert 14-label zero-shot on ``valid.csv`` (thresholds: a seeded train sample)."""
    from datamodules.labels import XRAY_LABELS
    from datamodules.sources import load_studies

    base = _chexpert_root(root)
    report = Report("chexpert", _header("chexpert", bundle, root, opts))
    test = _limit(load_studies("chexpert", base, split="val"), opts.limit)
    train = load_studies("chexpert", base, split="train")
    rng = np.random.default_rng(opts.seed)
    order = rng.permutation(len(train))
    val = [train[i] for i in order[:threshold_rows]]
    rest = _limit([train[i] for i in order[threshold_rows:]], opts.limit)
    report.header["split"] = {
        "test": f"valid.csv, frontal ({len(test)})",
        "val": f"seeded sample of train.csv ({len(val)}) for thresholds",
        "train": f"rest of train.csv ({len(rest)}, probe only)",
    }
    report.markdown += ["## CheXpert, 14 observations", ""]
    sets = {"train": rest, "val": val, "test": test}
    _xray_multilabel(
        report, "chexpert", bundle, sets, XRAY_LABELS, out, opts, "CheXpert valid: zero-shot"
    )
    return report


def evaluate_mimic_cxr(bundle: Any, root: Path, out: Path, opts: EvalOptions) -> Report:
    """MIMIC-CXR 14-label zero-shot on the official test split (thresholds: validate)."""
    from datamodules.labels import XRAY_LABELS

    idx = _mimic_cxr_index(root)
    table = idx.studies
    table = table[table["image_path"].notna()]
    labels = idx.label_matrix("ignore", blank=0.0, rows=table)
    sets: dict[str, list[Study]] = {"train": [], "val": [], "test": []}
    for k, row in enumerate(table.itertuples(index=False)):
        split = str(row.split)
        split = "val" if split in ("validate", "valid") else split
        if split not in sets:
            continue
        sets[split].append(
            Study(
                study_id=str(row.study_id),
                subject_id="",
                xray_path=Path(str(row.image_path)),
                labels={n: float(v) for n, v in zip(XRAY_LABELS, labels[k])},
                split=split,
            )
        )
    sets = {k: _limit(v, opts.limit) for k, v in sets.items()}
    report = Report("mimic-cxr", _header("mimic-cxr", bundle, root, opts))
    report.header["split"] = {k: len(v) for k, v in sets.items()}
    report.markdown += ["## MIMIC-CXR, 14 CheXpert labels (uncertain ignored)", ""]
    _xray_multilabel(
        report, "mimic_cxr", bundle, sets, XRAY_LABELS, out, opts, "MIMIC-CXR test: zero-shot"
    )
    return report


def evaluate_chexpert_5x200(
    bundle: Any, root: Path, out: Path, opts: EvalOptions, *, n_per_class: int = 200
) -> Report:
    """CheXpert 5x200 5-way zero-shot (selection rule in the module docstring)."""
    from datamodules.chexpert import chexpert_5x200, load_chexpert
    from datamodules.labels import CHEXPERT_COMPETITION_LABELS

    index = load_chexpert(_chexpert_root(root), splits=("train",))
    sel = chexpert_5x200(index, n_per_class=n_per_class, seed=opts.seed)
    classes = list(CHEXPERT_COMPETITION_LABELS)
    _require(list(sel["path"]), "CheXpert 5x200 images")
    digest = hashlib.sha256("\n".join(sorted(map(str, sel["path"]))).encode()).hexdigest()
    studies = [Study(f"x{k}", "", xray_path=Path(str(p))) for k, p in enumerate(sel["path"])]
    y_all = np.asarray([classes.index(c) for c in sel["label"]], dtype=np.int64)
    vec, rows = _embed(bundle, studies, "xray", opts, "embedding")
    cfg = _zs_config(bundle, classes, "xray", mode="single")
    probs = zeroshot_scores(bundle, vec, classes, "xray", cfg, opts.device)
    report = Report("chexpert-5x200", _header("chexpert-5x200", bundle, root, opts))
    report.header["selection"] = {
        "rule": "GLoRIA/MedCLIP 5x200 (DATASETS.md 4.3), seeded",
        "seed": opts.seed,
        "n_per_class": n_per_class,
        "counts": {c: int((sel["label"] == c).sum()) for c in classes},
        "paths_sha256": digest,
    }
    res, md, files = score_multiclass(
        "chexpert_5x200",
        y_all[rows],
        probs,
        classes,
        out,
        n_boot=opts.n_boot,
        seed=opts.seed,
        title="CheXpert 5x200: 5-way zero-shot",
    )
    report.add("chexpert_5x200/zeroshot", res, ["## CheXpert 5x200", "", *md], files)
    return report


def evaluate_edema(
    bundle: Any, root: Path, out: Path, opts: EvalOptions, *, source: str = "consensus"
) -> Report:
    """Edema severity grades 0-3: 4-way zero-shot with ordinal agreement."""
    from scipy.stats import spearmanr

    from datamodules.edema import EDEMA_GRADES, EDEMA_LABELS, edema_studies, load_edema

    edema_root = (
        root / "mimic-cxr-pe-severity" if (root / "mimic-cxr-pe-severity").is_dir() else root
    )
    grades = load_edema(edema_root, source)  # type: ignore[arg-type]
    studies = _limit(edema_studies(grades, _mimic_cxr_index(root)), opts.limit)
    _require(studies, "edema-graded images")
    y_all = np.asarray([int(s.extra["edema_severity"]) for s in studies], dtype=np.int64)
    vec, rows = _embed(bundle, studies, "xray", opts, "embedding")
    labels = list(EDEMA_LABELS)
    cfg = _zs_config(
        bundle, labels, "xray", synonyms=EDEMA_PROMPTS, mode="single", templates_pos=("{}.",)
    )
    probs = zeroshot_scores(bundle, vec, labels, "xray", cfg, opts.device)
    y = y_all[rows]
    report = Report("edema", _header("edema", bundle, root, opts))
    report.header["labels"] = {"source": source, "grades": dict(enumerate(EDEMA_GRADES))}
    res, md, files = score_multiclass(
        "edema",
        y,
        probs,
        labels,
        out,
        n_boot=opts.n_boot,
        seed=opts.seed,
        title=f"Edema severity ({source} labels): 4-way zero-shot",
    )
    expected = probs @ np.arange(len(labels), dtype=np.float64) if len(probs) else np.zeros(0)
    rho = float(spearmanr(expected, y).statistic) if len(y) > 2 and len(set(y)) > 1 else math.nan
    mae = float(np.abs(probs.argmax(axis=1) - y).mean()) if len(y) else math.nan
    res["ordinal"] = {"spearman_expected_grade": rho, "mae_argmax_grade": mae}
    md.append(
        f"Ordinal: Spearman rho (expected grade) {fmt(rho)}; mean absolute grade error "
        f"{fmt(mae)}.\n"
    )
    report.add("edema/zeroshot", res, ["## Pulmonary edema severity", "", *md], files)
    return report


# ----------------------------------------------------------------------------- retrieval
def evaluate_retrieval(
    bundle: Any,
    root: Path,
    out: Path,
    opts: EvalOptions,
    *,
    dataset: str | None = None,
    split: str | None = "test",
    ks: Sequence[int] = (1, 5, 10),
) -> Report:
    """Paired cross-modal retrieval R@K and ranks within one split."""
    from datamodules.sources import load_studies
    from medclip.metrics import retrieval_metrics
    from medclip.plots import save_figure

    name = dataset or detect_dataset(root)
    studies = load_studies(name, root, split=split)
    studies = _limit(studies, opts.limit)
    _require(studies, f"{name} studies in split {split or 'all'}")
    emb: StudyEmbeddings = embed_studies(
        bundle,
        studies,
        batch_size=opts.batch_size,
        device=opts.device,
        num_workers=opts.num_workers,
        progress=opts.progress,
    )
    report = Report("retrieval", _header("retrieval", bundle, root, opts))
    report.header["split"] = {"dataset": name, "split": split or "all", "studies": len(studies)}
    md = [
        f"## Cross-modal retrieval ({name}, split {split or 'all'})",
        "",
        "Query -> gallery: the query's own study must be found among every gallery item of the "
        "split.",
        "",
        "| query -> gallery | queries | gallery | "
        + " | ".join(f"R@{k}" for k in ks)
        + " | mean rank | median rank |",
        "|---|---|---|" + "---|" * len(ks) + "---|---|",
    ]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    curve_k = [k for k in range(1, 51)]
    results: dict[str, Any] = {}
    for q, g in RETRIEVAL_PAIRS:
        qv, qr = emb.get(q)
        gv, gr = emb.get(g)
        if len(qr) == 0 or len(gr) < 2:
            continue
        g_pos = {int(r): k for k, r in enumerate(gr)}
        mask = np.asarray([int(r) in g_pos for r in qr])
        if mask.sum() < 1:
            continue
        targets = np.asarray([g_pos[int(r)] for r in qr[mask]])
        m = retrieval_metrics(qv[mask], gv, targets, ks)
        key = f"{q}->{g}"
        results[key] = {**m.as_dict(), "n_queries": m.n_queries, "n_gallery": len(gv)}
        md.append(
            f"| {key} | {m.n_queries} | {len(gv)} | "
            + " | ".join(fmt(m.recall[k]) for k in ks)
            + f" | {fmt(m.mean_rank, 1)} | {fmt(m.median_rank, 1)} |"
        )
        curve = retrieval_metrics(qv[mask], gv, targets, curve_k).recall
        ax.plot(curve_k, [curve[k] for k in curve_k], label=key)
    _require(list(results), "modality pairs to evaluate (need >= 2 gallery items)")
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_ylim(0, 1.01)
    ax.set_title("Cross-modal retrieval")
    ax.legend(fontsize=7)
    fig.text(0.01, 0.01, "Research use only - not for clinical decisions.", fontsize=7)
    png = save_figure(fig, out / "recall_at_k.png")
    md.append("")
    report.add("retrieval", results, md, [png])
    return report


# ----------------------------------------------------------------------------- entry point
def run_evaluation(
    protocol: str,
    bundle: Any,
    data_root: str | Path,
    out_dir: str | Path,
    opts: EvalOptions | None = None,
    **kwargs: Any,
) -> Report:
    """Run one protocol and write its files into ``out_dir``.

    Args:
        protocol: one of :data:`PROTOCOLS`.
        bundle: a loaded bundle (:func:`medclip.bundle.load_bundle`).
        data_root: dataset folder (the synthetic generator's OUT folder works for all).
        out_dir: output folder (created).
        opts: shared options.
        **kwargs: protocol options: ptbxl ``tasks``, ``zero_shot``, ``probe``, ``window_s``,
            ``stride_s``; chexpert ``threshold_rows``; chexpert-5x200 ``n_per_class``; edema
            ``source``; retrieval ``dataset``, ``split``.

    Returns:
        The :class:`~medclip.eval_report.Report` (already written).
    """
    funcs: dict[str, Callable[..., Report]] = {
        "ptbxl": evaluate_ptbxl,
        "chexpert-5x200": evaluate_chexpert_5x200,
        "chexpert": evaluate_chexpert,
        "mimic-cxr": evaluate_mimic_cxr,
        "edema": evaluate_edema,
        "retrieval": evaluate_retrieval,
    }
    if protocol not in funcs:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {list(PROTOCOLS)}")
    root = Path(data_root).expanduser()
    if not root.exists():
        raise MedclipError(f"{root}: data folder not found")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    opts = opts or EvalOptions()
    torch.manual_seed(opts.seed)
    t0 = time.perf_counter()
    report = funcs[protocol](bundle, root, out, opts, **kwargs)
    report.header["elapsed_s"] = round(time.perf_counter() - t0, 2)
    report.write(out)
    logger.info("%s results written to %s", protocol, out)
    return report


__all__ = [
    "EDEMA_PROMPTS",
    "PROTOCOLS",
    "EvalOptions",
    "evaluate_chexpert",
    "evaluate_chexpert_5x200",
    "evaluate_edema",
    "evaluate_mimic_cxr",
    "evaluate_ptbxl",
    "evaluate_retrieval",
    "ptbxl_synonyms",
    "ptbxl_window_features",
    "run_evaluation",
    "zeroshot_scores",
]
