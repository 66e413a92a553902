"""Similar-case retrieval over the shared embedding space (faiss, inner product on unit vectors).

A :class:`CaseIndex` holds cases of any modality (X-ray, ECG, report text), each row with a case
record (id, modality, positive labels, report snippet, preview path), so X-ray -> report,
text -> ECG and the like go through one object. Internally each modality has its own faiss
index, so a modality filter is exact even for graph indexes (an HNSW search restricted by an
id selector can return fewer than ``k`` hits).

Index kinds: ``exact`` (``IndexFlatIP``), ``hnsw`` (``IndexHNSWFlat``, inner product) and
``ivf`` (``IndexIVFFlat``, inner product, trained on the vectors present at the first search or
save). ``auto`` uses exact search while a modality has fewer than ``auto_threshold`` rows and
moves it to HNSW once it reaches that size.

``save(dir)`` writes ``index.json``, ``cases.jsonl`` and one ``<modality>.faiss`` per modality
into a temporary sibling folder, then swaps it in with ``os.replace``; a failed save leaves the
previous index as it was. Nothing is pickled.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from medclip.errors import MedclipError, OutputWriteError

logger = logging.getLogger(__name__)

FORMAT_NAME = "medclip-case-index"
FORMAT_VERSION = 1
KINDS: tuple[str, ...] = ("auto", "exact", "hnsw", "ivf")
MODALITIES: tuple[str, ...] = ("xray", "ecg", "text")


class CaseIndexError(MedclipError):
    """A case index folder is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class CaseRecord:
    """One indexed case. Holds no patient identifiers.

    Attributes:
        case_id: dataset-level id of the X-ray / ECG / report (not a patient id).
        modality: ``xray``, ``ecg`` or ``text``.
        labels: positive label names.
        report: short report snippet.
        preview_path: thumbnail (X-ray) or rendered plot (ECG) path, if any.
        study_id: study the case belongs to, if any.
    """

    case_id: str
    modality: str
    labels: tuple[str, ...] = ()
    report: str = ""
    preview_path: str | None = None
    study_id: str | None = None

    def __post_init__(self) -> None:
        if not self.case_id:
            raise ValueError("case_id must be non-empty")
        if self.modality not in MODALITIES:
            raise ValueError(f"modality {self.modality!r} is not one of {list(MODALITIES)}")
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        d = asdict(self)
        d["labels"] = list(self.labels)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseRecord:
        """Inverse of :meth:`to_dict`."""
        return cls(
            case_id=str(data["case_id"]),
            modality=str(data["modality"]),
            labels=tuple(data.get("labels") or ()),
            report=str(data.get("report") or ""),
            preview_path=data.get("preview_path"),
            study_id=data.get("study_id"),
        )


@dataclass(frozen=True)
class RetrievalHit:
    """One search result.

    Attributes:
        rank: 1-based rank within the query's results.
        score: cosine similarity in [-1, 1].
        row: row of the case in the index (insertion order).
        case: the case record.
    """

    rank: int
    score: float
    row: int
    case: CaseRecord

    @property
    def case_id(self) -> str:
        """Shortcut for ``case.case_id``."""
        return self.case.case_id

    @property
    def modality(self) -> str:
        """Shortcut for ``case.modality``."""
        return self.case.modality


@dataclass(frozen=True)
class IndexParams:
    """Tuning of the faiss indexes.

    Attributes:
        auto_threshold: rows per modality from which ``auto`` switches from exact to HNSW.
        hnsw_m: HNSW graph degree.
        hnsw_ef_construction: HNSW build beam width.
        hnsw_ef_search: HNSW search beam width (raised to ``k`` when smaller).
        ivf_nlist: IVF lists; None picks ``4 * sqrt(n)`` (at most ``n / 39``).
        ivf_nprobe: IVF lists visited per query.
    """

    auto_threshold: int = 100_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 64
    ivf_nlist: int | None = None
    ivf_nprobe: int = 16

    def __post_init__(self) -> None:
        for name in ("auto_threshold", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.ivf_nprobe < 1 or (self.ivf_nlist is not None and self.ivf_nlist < 1):
            raise ValueError("ivf_nlist and ivf_nprobe must be >= 1")


def resolve_kind(kind: str, n: int, params: IndexParams) -> str:
    """The concrete kind (``exact``/``hnsw``/``ivf``) for ``n`` rows."""
    if kind not in KINDS:
        raise ValueError(f"index kind {kind!r} is not one of {list(KINDS)}")
    if kind == "auto":
        return "hnsw" if n >= params.auto_threshold else "exact"
    return kind


def ivf_nlist_for(n: int, params: IndexParams) -> int:
    """Number of IVF lists for ``n`` training vectors (faiss wants >= 39 points per list)."""
    want = params.ivf_nlist or int(4 * math.sqrt(max(n, 1)))
    return max(1, min(want, n // 39 if n >= 39 else 1))


def create_faiss_index(kind: str, dim: int, params: IndexParams, n_train: int = 0) -> Any:
    """An empty inner-product faiss index of a concrete kind.

    Args:
        kind: ``exact``, ``hnsw`` or ``ivf``.
        dim: embedding size.
        params: tuning.
        n_train: for ``ivf``, the number of training vectors (sets ``nlist``).

    Returns:
        ``faiss.IndexFlatIP``, ``faiss.IndexHNSWFlat`` or (untrained) ``faiss.IndexIVFFlat``.
    """
    if kind == "exact":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = params.hnsw_ef_construction
        hnsw.hnsw.efSearch = params.hnsw_ef_search
        return hnsw
    if kind == "ivf":
        nlist = ivf_nlist_for(n_train, params)
        # the factory owns the coarse quantizer (no dangling Python reference)
        ivf: Any = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        ivf.nprobe = min(params.ivf_nprobe, nlist)
        return ivf
    raise ValueError(f"index kind {kind!r} is not one of exact/hnsw/ivf")


def normalize_rows(x: Any, dim: int | None = None) -> np.ndarray:
    """``(N, E)`` float32 C-contiguous unit rows (accepts numpy or torch, ``(E,)`` too).

    Raises:
        ValueError: on a wrong width, non-finite values or an all-zero row.
    """
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or (dim is not None and a.shape[1] != dim):
        raise ValueError(f"embeddings must be (N, {dim or 'E'}), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("embeddings contain NaN or inf")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("embeddings contain an all-zero row")
    return np.ascontiguousarray(a / norms, dtype=np.float32)


@dataclass
class _Shard:
    """One modality's faiss index; local id i is the i-th row of that modality."""

    kind: str
    index: Any
    rows: list[int] = field(default_factory=list)
    staged: list[np.ndarray] = field(default_factory=list)  # IVF vectors awaiting training

    @property
    def n(self) -> int:
        return len(self.rows)


class CaseIndex:
    """Nearest-case search over L2-normalised embeddings of several modalities.

    Args:
        dim: embedding size ``E``.
        kind: ``auto`` (exact below ``params.auto_threshold`` rows per modality, HNSW above),
            ``exact``, ``hnsw`` or ``ivf``.
        params: faiss tuning.
    """

    def __init__(self, dim: int, kind: str = "auto", params: IndexParams | None = None) -> None:
        if dim < 1:
            raise ValueError("dim must be >= 1")
        resolve_kind(kind, 0, params or IndexParams())  # validates kind
        self.dim = int(dim)
        self.kind = kind
        self.params = params or IndexParams()
        self._cases: list[CaseRecord] = []
        self._shards: dict[str, _Shard] = {}

    @classmethod
    def from_embeddings(
        cls,
        embeddings: Any,
        cases: Sequence[CaseRecord],
        kind: str = "auto",
        params: IndexParams | None = None,
    ) -> CaseIndex:
        """Build an index from ``(N, E)`` embeddings and their ``N`` case records."""
        emb = normalize_rows(embeddings)
        index = cls(emb.shape[1], kind=kind, params=params)
        index.add(emb, cases)
        return index

    def __len__(self) -> int:
        return len(self._cases)

    @property
    def cases(self) -> tuple[CaseRecord, ...]:
        """All case records, in row order."""
        return tuple(self._cases)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities present in the index."""
        return tuple(self._shards)

    def kind_of(self, modality: str) -> str:
        """Concrete faiss kind currently used for ``modality``."""
        return self._shards[modality].kind

    def add(self, embeddings: Any, cases: Sequence[CaseRecord]) -> None:
        """Append cases.

        Args:
            embeddings: ``(N, E)`` (numpy or torch); normalised here.
            cases: ``N`` records; ``case.modality`` selects the modality's faiss index.
        """
        emb = normalize_rows(embeddings, self.dim)
        if len(cases) != emb.shape[0]:
            raise ValueError(f"{emb.shape[0]} embeddings but {len(cases)} case records")
        modality_of = np.array([c.modality for c in cases])
        start = len(self._cases)
        self._cases.extend(cases)
        for modality in dict.fromkeys(modality_of.tolist()):
            sel = np.flatnonzero(modality_of == modality)
            self._add_to_shard(modality, emb[sel], [start + int(i) for i in sel])

    def _add_to_shard(self, modality: str, vecs: np.ndarray, rows: list[int]) -> None:
        shard = self._shards.get(modality)
        if shard is None:
            kind = resolve_kind(self.kind, 0, self.params)
            index = None if kind == "ivf" else create_faiss_index(kind, self.dim, self.params)
            shard = self._shards[modality] = _Shard(kind, index)
        shard.rows.extend(rows)
        if shard.kind == "ivf" and shard.index is None:
            shard.staged.append(vecs)
        else:
            shard.index.add(vecs)
        if self.kind == "auto" and shard.kind == "exact" and shard.n >= self.params.auto_threshold:
            self._migrate(shard, "hnsw")

    def _migrate(self, shard: _Shard, kind: str) -> None:
        logger.info("moving %d vectors from %s to %s search", shard.n, shard.kind, kind)
        vecs = shard.index.reconstruct_n(0, shard.index.ntotal)
        new = create_faiss_index(kind, self.dim, self.params)
        new.add(np.ascontiguousarray(vecs, dtype=np.float32))
        shard.kind, shard.index = kind, new

    def _build(self, shard: _Shard) -> None:
        """Train a staged IVF shard on its vectors."""
        if shard.index is not None:
            if shard.staged:  # pragma: no cover - staged only exists before training
                raise RuntimeError("inconsistent IVF shard")
            return
        vecs = np.concatenate(shard.staged)
        index = create_faiss_index("ivf", self.dim, self.params, n_train=len(vecs))
        index.train(vecs)
        index.add(vecs)
        shard.index, shard.staged = index, []

    def search_ids(
        self, queries: Any, k: int = 10, modality: str | Iterable[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw top-k scores and rows.

        Args:
            queries: ``(Q, E)`` or ``(E,)`` embeddings (normalised here).
            k: results per query.
            modality: only search these modalities (None: all).

        Returns:
            ``(scores, rows)``, each ``(Q, k)``; missing results have row ``-1`` and score
            ``-inf``.
        """
        if k < 1:
            raise ValueError("k must be >= 1")
        q = normalize_rows(queries, self.dim)
        wanted = self._wanted(modality)
        all_s = [np.full((len(q), k), -np.inf, dtype=np.float32)]
        all_r = [np.full((len(q), k), -1, dtype=np.int64)]
        for m in wanted:
            shard = self._shards[m]
            self._build(shard)
            kk = min(k, shard.n)
            if shard.kind == "hnsw":
                shard.index.hnsw.efSearch = max(self.params.hnsw_ef_search, kk)
            scores, local = shard.index.search(q, kk)
            rows_map = np.asarray(shard.rows, dtype=np.int64)
            rows = np.where(local >= 0, rows_map[np.clip(local, 0, None)], -1)
            all_s.append(np.where(local >= 0, scores, -np.inf).astype(np.float32))
            all_r.append(rows)
        scores = np.concatenate(all_s, axis=1)
        rows = np.concatenate(all_r, axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)

    def _wanted(self, modality: str | Iterable[str] | None) -> list[str]:
        if modality is None:
            return list(self._shards)
        wanted = [modality] if isinstance(modality, str) else list(modality)
        bad = [m for m in wanted if m not in MODALITIES]
        if bad:
            raise ValueError(f"unknown modality {bad}; choose from {list(MODALITIES)}")
        return [m for m in wanted if m in self._shards]

    def search_batch(
        self, queries: Any, k: int = 10, modality: str | Iterable[str] | None = None
    ) -> list[list[RetrievalHit]]:
        """Top-k hits for each of ``(Q, E)`` queries, best first."""
        scores, rows = self.search_ids(queries, k, modality)
        return [
            [
                RetrievalHit(rank=j + 1, score=float(s), row=int(r), case=self._cases[int(r)])
                for j, (s, r) in enumerate(zip(srow, rrow))
                if r >= 0
            ]
            for srow, rrow in zip(scores, rows)
        ]

    def search(
        self, query: Any, k: int = 10, modality: str | Iterable[str] | None = None
    ) -> list[RetrievalHit]:
        """Top-k hits for one ``(E,)`` query embedding, best first."""
        q = normalize_rows(query, self.dim)
        if q.shape[0] != 1:
            raise ValueError("search takes one query; use search_batch for several")
        return self.search_batch(q, k, modality)[0]

    # ---------------------------------------------------------------- persistence

    def save(self, directory: str | Path) -> Path:
        """Write the index to ``directory`` atomically (temp folder, then ``os.replace``).

        Returns:
            The folder written.

        Raises:
            OutputWriteError: the disk is full (or read-only, ...); an existing index there is
                unchanged and the temporary folder is removed.
        """
        target = Path(directory).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        for shard in self._shards.values():
            self._build(shard)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        backup = target.parent / f".{target.name}.previous"
        try:
            shards: dict[str, dict[str, Any]] = {}
            meta = {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "dim": self.dim,
                "kind": self.kind,
                "params": asdict(self.params),
                "n_cases": len(self._cases),
                "normalized": True,
                "metric": "inner_product",
                "shards": shards,
            }
            for m, shard in self._shards.items():
                fname = f"{m}.faiss"
                faiss.write_index(shard.index, str(tmp / fname))
                shards[m] = {"file": fname, "kind": shard.kind, "n": shard.n}
            with open(tmp / "cases.jsonl", "w", encoding="utf-8") as fh:
                for case in self._cases:
                    fh.write(json.dumps(case.to_dict(), ensure_ascii=False) + "\n")
            with open(tmp / "index.json", "w", encoding="utf-8") as fh:
                json.dump(meta, fh, indent=2)
            _fsync_dir_files(tmp)
            if backup.exists():
                shutil.rmtree(backup)
            if target.exists():
                os.replace(target, backup)
            try:
                os.replace(tmp, target)
            except BaseException:
                if backup.exists() and not target.exists():
                    os.replace(backup, target)
                raise
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            # faiss reports a failed write as a RuntimeError
            error = OutputWriteError.from_exception(target, exc)
            if error is not None:
                raise error from exc
            raise
        shutil.rmtree(backup, ignore_errors=True)
        logger.info("saved case index with %d cases to %s", len(self._cases), target)
        return target

    @classmethod
    def load(cls, directory: str | Path) -> CaseIndex:
        """Read an index written by :meth:`save` (faiss files + JSON, no pickle).

        Raises:
            CaseIndexError: naming the file and the problem.
        """
        root = Path(directory)
        backup = root.parent / f".{root.name}.previous"
        if not root.exists() and backup.exists():
            logger.warning("%s missing; loading the previous version from %s", root, backup)
            root = backup
        meta_path = root / "index.json"
        if not meta_path.is_file():
            raise CaseIndexError(f"{meta_path}: not found (not a medclip case index folder)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CaseIndexError(f"{meta_path}: unreadable ({exc})") from exc
        if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
            raise CaseIndexError(
                f"{meta_path}: format {meta.get('format')!r} v{meta.get('version')!r} is not "
                f"{FORMAT_NAME} v{FORMAT_VERSION}"
            )
        try:
            params = IndexParams(**meta["params"])
            index = cls(int(meta["dim"]), kind=str(meta["kind"]), params=params)
            cases_path = root / "cases.jsonl"
            with open(cases_path, encoding="utf-8") as fh:
                cases = [CaseRecord.from_dict(json.loads(line)) for line in fh if line.strip()]
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise CaseIndexError(f"{root}: malformed case index ({exc})") from exc
        if len(cases) != meta["n_cases"]:
            raise CaseIndexError(
                f"{cases_path}: {len(cases)} cases but index.json says {meta['n_cases']}"
            )
        index._cases = cases
        for m, info in meta["shards"].items():
            path = root / info["file"]
            try:
                fidx: Any = faiss.read_index(str(path))
            except RuntimeError as exc:
                raise CaseIndexError(f"{path}: not a readable faiss index ({exc})") from exc
            rows = [i for i, c in enumerate(cases) if c.modality == m]
            if fidx.ntotal != len(rows) or fidx.d != index.dim:
                raise CaseIndexError(
                    f"{path}: {fidx.ntotal} vectors of dim {fidx.d}, expected {len(rows)} of "
                    f"dim {index.dim}"
                )
            kind = str(info["kind"])
            if kind == "hnsw":
                fidx.hnsw.efSearch = params.hnsw_ef_search
            elif kind == "ivf":
                faiss.extract_index_ivf(fidx).nprobe = params.ivf_nprobe
            index._shards[m] = _Shard(kind, fidx, rows)
        return index


def _fsync_dir_files(folder: Path) -> None:
    """Flush the files of ``folder`` to disk before the rename makes them visible."""
    for p in folder.iterdir():
        with open(p, "rb") as fh:
            os.fsync(fh.fileno())
