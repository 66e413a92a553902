"""Embed a dataset's studies with a bundle and build the similar-case index.

:func:`embed_studies` runs every study's X-ray, ECG and report through the model in batches
(progress bar), with the bundle's preprocessing; unreadable files are skipped with a warning
naming the file (the study keeps its other modalities). It returns shared-space embeddings, or
the towers' pre-projection features (``features="tower"``, for linear probes).

:func:`build_case_index` turns the embeddings into a :class:`~medclip.retrieval.CaseIndex`
with one case row per (study, modality): a case id, the modality, its positive labels, a
de-identified report snippet and the path of a preview image. Index folder layout::

    INDEX/                   CaseIndex.save (index.json, cases.jsonl, <modality>.faiss)
    INDEX_assets/build.json  bundle fingerprint, dataset, counts (checked by --append)
    INDEX_assets/previews/   X-ray thumbnails and ECG 12-lead previews (PNG)

The assets sit *next to* the index folder because :meth:`CaseIndex.save` replaces the index
folder atomically on every save. Preview paths are stored relative to the index folder
(``../INDEX_assets/previews/...``); resolve them with :func:`preview_file`.

No patient identifiers: case ids are dataset record/study ids (MIMIC study ids, PTB-XL ecg_id);
ids that embed a patient id (CheXpert ``patientNNNNN/...`` paths) are replaced by a short hash.
Snippets drop MIMIC's ``___`` de-identification placeholders. Subject ids never enter the index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from datamodules.types import Study
from medclip.errors import MedclipError
from medclip.retrieval import CaseIndex, CaseRecord

logger = logging.getLogger(__name__)

Modality = Literal["xray", "ecg", "text"]
ALL_MODALITIES: tuple[str, ...] = ("xray", "ecg", "text")
#: Previews are drawn automatically up to this many studies (matplotlib is ~0.1 s per ECG).
AUTO_PREVIEW_LIMIT = 5000
BUILD_FILE = "build.json"


# ----------------------------------------------------------------------------- embeddings
@dataclass
class StudyEmbeddings:
    """Per-modality vectors of a list of studies.

    Attributes:
        vectors: modality -> ``(N_m, D)`` float32 (unit rows for ``features="embedding"``).
        rows: modality -> ``(N_m,)`` int64 index of each vector's study in the input list.
        n_studies: length of the input list.
        features: ``embedding`` (shared space) or ``tower`` (pre-projection features).
        thumbnails: study row -> ``(S, S)`` uint8 X-ray thumbnail (only when asked for).
    """

    vectors: dict[str, np.ndarray]
    rows: dict[str, np.ndarray]
    n_studies: int
    features: str = "embedding"
    thumbnails: dict[int, np.ndarray] = field(default_factory=dict)

    def get(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors, rows)`` of one modality (empty arrays when absent)."""
        if modality not in self.vectors:
            return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
        return self.vectors[modality], self.rows[modality]

    def dense(self, modality: str) -> np.ndarray:
        """``(n_studies, D)`` with NaN rows where the study lacks the modality."""
        vec, rows = self.get(modality)
        out = np.full((self.n_studies, vec.shape[1] if vec.size else 0), np.nan, np.float32)
        out[rows] = vec
        return out


@torch.no_grad()
def _encode(model: Any, modality: str, x: Any, features: str, target: str = "xray") -> torch.Tensor:
    """``(B, D)`` embeddings or tower features of one batch (``target``: text tower)."""
    if modality == "text":
        if features == "tower":
            key = model.text_key(target)
            tokens = model.tokenize(list(x), target)
            dev = model.logit_scale.device
            out: torch.Tensor = model.towers[key](
                tokens["input_ids"].to(dev), tokens["attention_mask"].to(dev)
            )
            return out.float()
        out = model.encode_text(list(x), target=target)
        return out.float()
    if features == "tower":
        out = model.towers[modality](x)
        return out.float()
    fn = model.encode_xray if modality == "xray" else model.encode_ecg
    out = fn(x)
    return out.float()


def _thumbnail(x: torch.Tensor, mean: float, std: float, size: int) -> np.ndarray:
    """uint8 ``(size, size)`` thumbnail of one normalised ``(1, S, S)`` X-ray tensor."""
    from PIL import Image

    pix = (x[0].float().cpu().numpy() * std + mean).clip(0.0, 1.0)
    img = Image.fromarray((pix * 255).round().astype(np.uint8))
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR))


def embed_studies(
    bundle: Any,
    studies: Sequence[Study],
    *,
    modalities: Iterable[str] = ALL_MODALITIES,
    features: Literal["embedding", "tower"] = "embedding",
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    thumbnails: int = 0,
    ecg_cfg: Any | None = None,
    cxr_cfg: Any | None = None,
    text_target: str = "xray",
) -> StudyEmbeddings:
    """Embed every study's X-ray, ECG and report with the bundle's model.

    Args:
        bundle: a loaded bundle (``model``, ``config``; see :mod:`medclip.bundle`).
        studies: the studies; any modality may be missing.
        modalities: which of ``xray``, ``ecg``, ``text`` to embed.
        features: ``embedding`` (L2-normalised shared space, ``(N, E)``) or ``tower``
            (pre-projection tower output, ``(N, D_tower)``).
        batch_size: studies per batch.
        device: torch device.
        num_workers: DataLoader workers reading files.
        progress: show a tqdm bar.
        thumbnails: side in pixels of X-ray thumbnails to keep (0: none).
        ecg_cfg: ECG preprocessing (default: the bundle's).
        cxr_cfg: X-ray preprocessing (default: the bundle's).
        text_target: text tower for reports when the model has separate ones (``xray``:
            radiology, ``ecg``: cardiology).

    Returns:
        :class:`StudyEmbeddings`.
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from datamodules.collate import collate_studies
    from datamodules.dataset import StudyDataset
    from medclip.inference import preprocessing_from_bundle

    wanted = tuple(dict.fromkeys(modalities))
    bad = [m for m in wanted if m not in ALL_MODALITIES]
    if bad:
        raise ValueError(f"unknown modality {bad}; choose from {list(ALL_MODALITIES)}")
    if features not in ("embedding", "tower"):
        raise ValueError("features must be 'embedding' or 'tower'")
    default_ecg, default_cxr = preprocessing_from_bundle(bundle)
    ecg_cfg = ecg_cfg or default_ecg
    cxr_cfg = cxr_cfg or default_cxr
    model = bundle.model.to(device).eval()
    dataset = StudyDataset(
        list(studies),
        ecg_cfg if "ecg" in wanted else None,
        cxr_cfg if "xray" in wanted else None,
        label_names=[],
        skip_bad=True,
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_studies,
    )
    chunks: dict[str, list[np.ndarray]] = {m: [] for m in wanted}
    rows: dict[str, list[np.ndarray]] = {m: [] for m in wanted}
    thumbs: dict[int, np.ndarray] = {}
    start = 0
    bar = tqdm(total=len(dataset), desc="embedding studies", unit="study", disable=not progress)
    for batch in loader:
        present = batch.present.bool()
        n = len(batch)
        for col, modality in enumerate(("xray", "ecg", "text")):
            if modality not in wanted:
                continue
            idx = present[:, col].nonzero().flatten()
            if idx.numel() == 0:
                continue
            if modality == "text":
                x: Any = [batch.text[i] for i in idx.tolist()]
            else:
                x = (batch.xray if modality == "xray" else batch.ecg)[idx].to(device)
            emb = (
                _encode(model, modality, x, features, text_target).cpu().numpy().astype(np.float32)
            )
            chunks[modality].append(emb)
            rows[modality].append(idx.numpy().astype(np.int64) + start)
            if modality == "xray" and thumbnails:
                for j, i in enumerate(idx.tolist()):
                    thumbs[start + i] = _thumbnail(
                        batch.xray[idx[j]], cxr_cfg.mean, cxr_cfg.std, thumbnails
                    )
        start += n
        bar.update(n)
    bar.close()
    if dataset.bad_records:
        logger.warning("%d unreadable file(s) were skipped", dataset.bad_records)
    vectors = {m: np.concatenate(c) for m, c in chunks.items() if c}
    index_rows = {m: np.concatenate(rows[m]) for m in vectors}
    return StudyEmbeddings(vectors, index_rows, len(dataset), features, thumbs)


# ----------------------------------------------------------------------------- case rows
_PLACEHOLDER = re.compile(r"_{2,}")
_SPACES = re.compile(r"\s+")


def report_snippet(text: str | None, max_chars: int = 240) -> str:
    """Whitespace-collapsed, de-identified report excerpt (``___`` placeholders removed).

    Cut at a word boundary with an ellipsis when longer than ``max_chars``.
    """
    if not text:
        return ""
    clean = _SPACES.sub(" ", _PLACEHOLDER.sub(" ", str(text))).strip()
    if len(clean) <= max_chars:
        return clean
    cut = clean[:max_chars].rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:.") + " ..."


def _hashed(text: str) -> str:
    return "h" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def safe_study_id(study: Study) -> str:
    """The study's id, or a short hash of it when it embeds the patient id (CheXpert paths)."""
    sid = str(study.study_id)
    subject = str(study.subject_id or "")
    if (subject and subject in sid) or re.search(r"patient\d+", sid):
        return _hashed(sid)
    return sid


def case_id_for(study: Study, modality: str) -> str:
    """Case id of one modality of a study (record-level id where the dataset has one)."""
    if modality == "xray" and study.extra.get("cxr_study_id") is not None:
        return str(study.extra["cxr_study_id"])
    if modality == "ecg" and study.extra.get("ecg_study_id") is not None:
        return str(study.extra["ecg_study_id"])
    return safe_study_id(study)


def _xray_label(name: str) -> bool:
    from datamodules.labels import ECG_LABELS

    return name not in ECG_LABELS


def _ecg_label(name: str) -> bool:
    from datamodules.labels import XRAY_LABELS

    return name not in XRAY_LABELS


def positive_labels(study: Study, modality: str) -> tuple[str, ...]:
    """Positive labels of a study relevant to ``modality`` (X-ray vs ECG vocabularies)."""
    keep = {"xray": _xray_label, "ecg": _ecg_label}.get(modality, lambda _n: True)
    out = []
    for name, value in study.labels.items():
        if value is not None and float(value) == 1.0 and keep(name):
            out.append(name)
    return tuple(out)


def _modality_report(study: Study, modality: str) -> str | None:
    if modality == "xray" and study.extra.get("cxr_report"):
        return str(study.extra["cxr_report"])
    if modality == "ecg" and study.extra.get("ecg_report"):
        return str(study.extra["ecg_report"])
    return study.report


def case_record(
    study: Study, modality: str, preview_path: str | None = None, max_chars: int = 240
) -> CaseRecord:
    """The case row of one modality of a study (no patient identifiers)."""
    return CaseRecord(
        case_id=case_id_for(study, modality),
        modality=modality,
        labels=positive_labels(study, modality),
        report=report_snippet(_modality_report(study, modality), max_chars),
        preview_path=preview_path,
        study_id=safe_study_id(study),
    )


# ----------------------------------------------------------------------------- previews
def assets_dir(index_dir: str | Path) -> Path:
    """Folder next to the index holding previews and ``build.json``."""
    p = Path(index_dir)
    return p.parent / f"{p.name}_assets"


def preview_file(index_dir: str | Path, case: CaseRecord) -> Path | None:
    """Absolute preview path of a case (None when it has none or the file is gone)."""
    if not case.preview_path:
        return None
    path = Path(case.preview_path)
    full = path if path.is_absolute() else (Path(index_dir) / path)
    full = Path(os.path.normpath(full))
    return full if full.is_file() else None


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80] or "case"


def _write_png(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        Image.fromarray(pixels).save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_ecg_preview(ecg_path: str | Path, out: Path) -> bool:
    """Render a small 12-lead preview of a record; False (with a warning) if unreadable."""
    from datamodules.ecg_io import read_ecg
    from datamodules.errors import MedclipDataError
    from medclip.ecg_plot import save_ecg_plot

    try:
        save_ecg_plot(read_ecg(ecg_path), out, preview=True)
    except (MedclipDataError, OSError, ValueError) as exc:
        logger.warning("no ECG preview for %s: %s", Path(str(ecg_path)).name, exc)
        return False
    return True


# ----------------------------------------------------------------------------- index build
@dataclass(frozen=True)
class IndexBuildResult:
    """What :func:`build_case_index` did.

    Attributes:
        index_dir: the saved index folder.
        n_added: case rows added by this call, per modality.
        n_skipped: case rows already in the index (``append``), per modality.
        n_total: rows in the saved index.
        kinds: faiss kind per modality after the build.
    """

    index_dir: Path
    n_added: dict[str, int]
    n_skipped: dict[str, int]
    n_total: int
    kinds: dict[str, str]


def bundle_fingerprint(bundle_path: str | Path) -> str:
    """sha256 of the bundle's ``model.safetensors`` (identifies the embedding space)."""
    path = Path(bundle_path) / "model.safetensors"
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_index_dir(bundle_path: str | Path) -> Path:
    """``BUNDLE/index``: where ``medclip index build`` writes by default."""
    return Path(bundle_path) / "index"


def read_build_info(index_dir: str | Path) -> dict[str, Any]:
    """``build.json`` next to an index (empty dict when absent)."""
    path = assets_dir(index_dir) / BUILD_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _has_new_case(study: Study, modalities: Sequence[str], seen: set[tuple[str, str]]) -> bool:
    present = dict(zip(ALL_MODALITIES, study.present))
    return any(present.get(m, False) and (case_id_for(study, m), m) not in seen for m in modalities)


def build_case_index(
    bundle: Any,
    studies: Sequence[Study],
    index_dir: str | Path,
    *,
    kind: str = "auto",
    modalities: Iterable[str] = ALL_MODALITIES,
    append: bool = False,
    previews: bool | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    dataset: str = "",
    snippet_chars: int = 240,
    force: bool = False,
) -> IndexBuildResult:
    """Embed ``studies`` and save (or extend) a case index.

    Args:
        bundle: the loaded bundle whose embedding space is indexed.
        studies: studies to index.
        index_dir: index folder (replaced atomically; see the module docstring for assets).
        kind: ``auto`` (exact below 100k rows per modality, HNSW above), ``exact``, ``hnsw``
            or ``ivf``.
        modalities: which modalities become cases.
        append: add to an existing index, skipping cases already in it.
        previews: write preview PNGs (None: only up to :data:`AUTO_PREVIEW_LIMIT` studies).
        batch_size: studies per batch.
        device: torch device.
        num_workers: DataLoader workers.
        progress: progress bars.
        dataset: dataset name recorded in ``build.json``.
        snippet_chars: report snippet length.
        force: append even when the index was built with another bundle.

    Raises:
        MedclipError: appending to an index built from another model (unless ``force``) or of
            another embedding size.
    """
    target = Path(index_dir)
    assets = assets_dir(target)
    fingerprint = bundle_fingerprint(bundle.path) if getattr(bundle, "path", None) else ""
    wanted = tuple(dict.fromkeys(modalities))
    existing: CaseIndex | None = None
    if append and (target / "index.json").is_file():
        existing = CaseIndex.load(target)
        info = read_build_info(target)
        old = str(info.get("bundle_sha256") or "")
        if old and fingerprint and old != fingerprint and not force:
            raise MedclipError(
                f"{target}: built with another model (bundle sha256 {old[:12]}... vs "
                f"{fingerprint[:12]}...); its vectors live in another space. Rebuild without "
                "--append, or pass --force"
            )
    elif append:
        logger.info("%s has no index yet; building a new one", target)
    if previews is None:
        previews = len(studies) <= AUTO_PREVIEW_LIMIT
        if not previews:
            logger.info("%d studies: previews skipped (pass previews=True)", len(studies))

    seen = {(c.case_id, c.modality) for c in existing.cases} if existing else set()
    skipped = dict.fromkeys(wanted, 0)
    if seen:
        fresh = []
        for s in studies:
            if _has_new_case(s, wanted, seen):
                fresh.append(s)
                continue
            for m, has in zip(ALL_MODALITIES, s.present):
                if has and m in skipped:
                    skipped[m] += 1
        studies = fresh
        logger.info("%d studies have cases not yet in the index", len(studies))
    emb = (
        StudyEmbeddings({}, {}, 0)
        if not studies
        else embed_studies(
            bundle,
            studies,
            modalities=[m for m in wanted if m in ALL_MODALITIES],
            batch_size=batch_size,
            device=device,
            num_workers=num_workers,
            progress=progress,
            thumbnails=160 if previews and "xray" in wanted else 0,
        )
    )
    dim = next((v.shape[1] for v in emb.vectors.values()), None)
    if dim is None and existing is not None:
        dim = existing.dim  # nothing new to add
    if dim is None:
        raise MedclipError("no study had a readable X-ray, ECG or report to index")
    index = existing or CaseIndex(dim, kind=kind)
    if index.dim != dim:
        raise MedclipError(f"{target}: index has {index.dim}-d vectors, the model gives {dim}-d")
    added = dict.fromkeys(wanted, 0)
    preview_root = assets / "previews"
    rel_root = Path("..") / assets.name / "previews"
    from tqdm.auto import tqdm

    for modality in wanted:
        vecs, rows = emb.get(modality)
        keep_vecs: list[np.ndarray] = []
        records: list[CaseRecord] = []
        it = tqdm(
            list(zip(vecs, rows)),
            desc="ECG previews",
            disable=not (progress and previews and modality == "ecg"),
        )
        for vec, row in it:
            study = studies[int(row)]
            cid = case_id_for(study, modality)
            if (cid, modality) in seen:
                skipped[modality] += 1
                continue
            seen.add((cid, modality))
            preview: str | None = None
            fname = f"{modality}-{_safe_name(cid)}.png"
            if previews and modality == "xray" and int(row) in emb.thumbnails:
                _write_png(emb.thumbnails[int(row)], preview_root / fname)
                preview = str(rel_root / fname)
            elif (
                previews
                and modality == "ecg"
                and study.ecg_path is not None
                and write_ecg_preview(study.ecg_path, preview_root / fname)
            ):
                preview = str(rel_root / fname)
            records.append(case_record(study, modality, preview, snippet_chars))
            keep_vecs.append(vec)
        if records:
            index.add(np.stack(keep_vecs), records)
            added[modality] = len(records)
    saved = index.save(target)
    info = read_build_info(target) if existing else {}
    history = list(info.get("builds") or [])
    history.append(
        {
            "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
            "dataset": dataset,
            "added": added,
            "skipped": skipped,
        }
    )
    from medclip.safe_load import write_json_atomic

    write_json_atomic(
        assets / BUILD_FILE,
        {
            "format": "medclip-index-build",
            "version": 1,
            "bundle": str(getattr(bundle, "path", "")),
            "bundle_sha256": fingerprint,
            "embed_dim": dim,
            "kind": index.kind,
            "n_cases": len(index),
            "builds": history,
        },
        allow_nan=False,
    )
    kinds = {m: index.kind_of(m) for m in index.modalities}
    logger.info("index %s: %d cases (%s)", saved, len(index), kinds)
    return IndexBuildResult(saved, added, skipped, len(index), kinds)


def detect_dataset(root: str | Path) -> str:
    """Guess the dataset of a folder: ``synthetic``, ``ptbxl``, ``chexpert`` or ``mimic``."""
    p = Path(root)
    if (p / "synthetic.json").is_file():
        return "synthetic"
    if (p / "ptbxl_database.csv").is_file() or (p / "ptb-xl" / "ptbxl_database.csv").is_file():
        return "ptbxl"
    for cand in (p, p / "chexpert", p / "CheXpert-v1.0-small", p / "CheXpert-v1.0"):
        if (cand / "train.csv").is_file() or (cand / "valid.csv").is_file():
            return "chexpert"
        if (cand / "CheXpert-v1.0-small" / "train.csv").is_file():
            return "chexpert"
    return "mimic"


def search_query(
    predictor: Any,
    index: CaseIndex,
    query: str | Path,
    *,
    k: int = 5,
    modality: str | None = None,
    query_as: str | None = None,
) -> tuple[str, list[Any]]:
    """Embed a query (X-ray / ECG file or free text) and search the index.

    Args:
        predictor: a :class:`medclip.inference.Predictor` of the bundle the index was built with.
        index: the case index.
        query: a file path or a text.
        k: hits to return.
        modality: only return cases of this modality (None: all).
        query_as: force the query modality (``xray``/``ecg``/``text``; default: detected).

    Returns:
        ``(query modality, hits)``; hits are :class:`~medclip.retrieval.RetrievalHit`, best first.
    """
    from medclip.inputs import query_modality

    kind = query_as or query_modality(query)
    if kind == "xray":
        vec = predictor.embed_xray(Path(query))
    elif kind == "ecg":
        vec = predictor.embed_ecg(Path(query))
    elif kind == "text":
        vec = predictor.embed_text(str(query), target="ecg" if modality == "ecg" else "xray")
    else:
        raise ValueError(f"query modality must be xray, ecg or text, not {kind!r}")
    return kind, index.search(vec, k=k, modality=modality)
