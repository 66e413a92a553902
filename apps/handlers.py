"""The demo's logic as plain functions, testable without a browser or a Gradio server.

:func:`load_resources` loads a bundle once (model, zero-shot classifier, case index, ProtoECGNet
prototypes, bundled examples). :func:`analyze_upload` / :func:`analyze_example` turn an X-ray
and/or an ECG into an :class:`AnalysisResult` (pictures, PHI-free metadata, zero-shot
probabilities, similar cases, prototype explanations); :func:`search_text` finds cases for a
free-text query. Bad input never raises: the result carries a readable ``error`` instead.

Nothing here displays patient identifiers: only allowlisted metadata is shown, uploaded files are
named by their base name only, and case rows come from the PHI-free case index.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from apps import figures
from apps.uploads import UploadError, UploadPolicy, check_xray_upload, stage_ecg_upload
from medclip.bundle import RESEARCH_NOTICE, load_bundle
from medclip.errors import MedclipError
from medclip.indexing import default_index_dir, preview_file
from medclip.inference import Predictor
from medclip.io import Cxr, Ecg, MedclipDataError, read_cxr, read_ecg
from medclip.quickstart import EXAMPLES_FILE
from medclip.retrieval import CaseIndex, RetrievalHit

log = logging.getLogger(__name__)

#: X-ray metadata keys that may be shown (``Cxr.meta`` is already PHI-free; this is a second
#: guard that also hides noise such as raw stored ranges).
XRAY_INFO_KEYS: tuple[str, ...] = (
    "format",
    "modality",
    "view_position",
    "body_part_examined",
    "photometric_interpretation",
    "bits_stored",
    "rows",
    "columns",
    "pixel_spacing",
    "imager_pixel_spacing",
    "transfer_syntax",
    "sop_class",
    "voi",
    "inverted",
    "converted_from",
    "repairs",
)
#: ECG metadata keys that may be shown (no record names: they can be study ids).
ECG_INFO_KEYS: tuple[str, ...] = ("format", "source_units", "missing_leads", "repairs")
#: Query modality choices of the free-text search -> index modalities.
QUERY_MODALITIES: dict[str, tuple[str, ...]] = {
    "ECG": ("ecg",),
    "X-ray": ("xray",),
    "Report": ("text",),
    "Any": ("xray", "ecg", "text"),
}
SIMILAR_COLUMNS: tuple[str, ...] = (
    "rank",
    "similarity",
    "modality",
    "case id",
    "labels",
    "report snippet",
)
PROBABILITY_COLUMNS: tuple[str, ...] = ("label", "probability", "X-ray only", "ECG only")
PROTO_COLUMNS: tuple[str, ...] = (
    "label",
    "probability",
    "branch",
    "prototype",
    "class",
    "similarity",
    "contribution",
    "source ECG id",
    "source window (s)",
    "input window (s)",
)


@dataclass(frozen=True)
class Example:
    """A bundled example study (synthetic in the quick-start; real data is never shipped)."""

    name: str
    title: str
    xray: Path | None
    ecg: Path | None
    labels: tuple[str, ...] = ()
    report: str = ""


@dataclass
class DemoResources:
    """Everything loaded once per app.

    Attributes:
        bundle: the loaded model bundle.
        predictor: embeddings and zero-shot classification.
        index: the bundle's case index (None without one).
        index_dir: its folder (previews are resolved against it).
        proto: the ProtoECGNet bundle (None without prototypes).
        examples: bundled examples.
        policy: upload limits.
        top_k: similar cases shown.
    """

    bundle: Any
    predictor: Predictor
    index: CaseIndex | None
    index_dir: Path | None
    proto: Any | None
    examples: tuple[Example, ...]
    policy: UploadPolicy
    top_k: int = 6

    @property
    def trained_on(self) -> str:
        """What the model was trained on (from the bundle)."""
        return self.predictor.trained_on

    @property
    def notice(self) -> str:
        """The research-use notice shown with every result (Markdown)."""
        return (
            f"**Research use only.** Not a medical device; not for clinical decisions. "
            f"Model trained on: {self.trained_on}"
        )

    def example(self, name: str) -> Example:
        """The example called ``name`` (or titled ``name``)."""
        for ex in self.examples:
            if name in (ex.name, ex.title):
                return ex
        raise UploadError(f"no example called {name!r}")


@dataclass
class CaseView:
    """One similar case: its preview picture, a caption and its table row."""

    image: np.ndarray
    caption: str
    row: list[Any]


@dataclass
class AnalysisResult:
    """What the UI shows for one analysis; ``error`` is non-empty when the input was refused."""

    error: str = ""
    notice: str = ""
    xray_image: np.ndarray | None = None
    xray_info: dict[str, Any] = field(default_factory=dict)
    ecg_image: np.ndarray | None = None
    ecg_info: dict[str, Any] = field(default_factory=dict)
    probabilities: dict[str, float] = field(default_factory=dict)
    probability_rows: list[list[Any]] = field(default_factory=list)
    similar: list[CaseView] = field(default_factory=list)
    proto_image: np.ndarray | None = None
    proto_pairs: list[tuple[np.ndarray, str]] = field(default_factory=list)
    proto_rows: list[list[Any]] = field(default_factory=list)
    proto_note: str = ""

    @property
    def ok(self) -> bool:
        """True when the input was analysed."""
        return not self.error


@dataclass
class SearchResult:
    """Cases found for a free-text query; ``error`` is non-empty on a bad query."""

    error: str = ""
    similar: list[CaseView] = field(default_factory=list)


# ----------------------------------------------------------------------------- loading
def _inside(root: Path, rel: str | None) -> Path | None:
    """``root/rel`` if it stays inside ``root`` and exists (a bundle is not trusted blindly)."""
    if not rel:
        return None
    path = (root / rel).resolve()
    base = root.resolve()
    if os.path.commonpath([base, path]) != str(base) or not path.is_file():
        log.warning("example file %r is missing or outside %s; ignored", rel, root)
        return None
    return path


def load_examples(bundle_dir: str | Path) -> tuple[Example, ...]:
    """Examples listed in ``BUNDLE/examples/examples.json`` (empty when there are none)."""
    import json

    root = Path(bundle_dir) / "examples"
    path = root / EXAMPLES_FILE
    if not path.is_file():
        return ()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable (%s); no examples", path, exc)
        return ()
    out: list[Example] = []
    for item in data.get("examples", []) if isinstance(data, dict) else []:
        xray, ecg = _inside(root, item.get("xray")), _inside(root, item.get("ecg"))
        if xray is None and ecg is None:
            continue
        name = str(item.get("name") or f"example-{len(out) + 1}")
        out.append(
            Example(
                name=name,
                title=str(item.get("title") or name),
                xray=xray,
                ecg=ecg,
                labels=tuple(str(x) for x in item.get("labels", [])),
                report=str(item.get("report") or ""),
            )
        )
    return tuple(out)


def load_resources(
    bundle_dir: str | Path,
    *,
    policy: UploadPolicy | None = None,
    top_k: int = 6,
    index_dir: str | Path | None = None,
    device: str = "cpu",
) -> DemoResources:
    """Load a bundle and what the demo needs from it.

    Args:
        bundle_dir: the model bundle folder.
        policy: upload limits (default: 50 MB).
        top_k: similar cases per query.
        index_dir: case index folder (default ``BUNDLE/index`` when present).
        device: torch device.

    Raises:
        BundleError: the bundle cannot be loaded.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    bundle = load_bundle(bundle_dir, map_location=device)
    predictor = Predictor(bundle, device=device)
    _ = predictor.classifier  # class embeddings now, not on the first request
    idx_dir = Path(index_dir) if index_dir is not None else default_index_dir(bundle.path)
    index = None
    if (idx_dir / "index.json").is_file():
        index = CaseIndex.load(idx_dir)
    else:
        log.info("%s: no case index; similar cases are off", idx_dir)
    return DemoResources(
        bundle=bundle,
        predictor=predictor,
        index=index,
        index_dir=idx_dir if index is not None else None,
        proto=bundle.prototypes,
        examples=load_examples(bundle.path),
        policy=policy or UploadPolicy(),
        top_k=top_k,
    )


# ----------------------------------------------------------------------------- messages
def user_message(exc: BaseException, what: str = "") -> str:
    """A readable, PHI-free message for a refused input (file base names only)."""
    prefix = f"{what}: " if what else ""
    if isinstance(exc, UploadError):
        return str(exc)
    if isinstance(exc, MedclipDataError):
        name = Path(exc.path).name if exc.path else "input"
        return f"{prefix}{name}: {exc.problem}"
    if isinstance(exc, (MedclipError, ValueError)):
        return f"{prefix}{exc}"
    log.exception("unexpected error in the demo")
    return f"{prefix}unexpected error ({type(exc).__name__}); see the server log"


def error_markdown(message: str) -> str:
    """The error panel's text."""
    return f"**Could not analyse the input.** {message}" if message else ""


# ----------------------------------------------------------------------------- pieces
def xray_info(cxr: Cxr) -> dict[str, Any]:
    """Allowlisted, PHI-free X-ray metadata for display."""
    meta = cxr.meta or {}
    info = {k: meta[k] for k in XRAY_INFO_KEYS if k in meta and meta[k] not in (None, "", [])}
    info["displayed_size"] = list(np.asarray(cxr.pixels).shape)
    return info


def ecg_info(ecg: Ecg) -> dict[str, Any]:
    """Allowlisted, PHI-free ECG metadata for display."""
    meta = ecg.meta or {}
    mask = np.asarray(ecg.lead_mask, dtype=bool)
    info: dict[str, Any] = {
        "sampling_rate_hz": float(ecg.fs),
        "duration_s": round(float(ecg.duration_s), 2),
        "samples": int(ecg.n_samples),
        "leads_present": [lead for lead, m in zip(ecg.leads, mask) if m],
    }
    info.update({k: meta[k] for k in ECG_INFO_KEYS if k in meta and meta[k] not in (None, "", [])})
    return info


def _fmt(p: float | None) -> str:
    return "" if p is None or np.isnan(p) else f"{p:.3f}"


def zeroshot_outputs(result: Any) -> tuple[dict[str, float], list[list[Any]]]:
    """``({label: probability}`` sorted, high first; table rows``)`` from a ZeroShotResult."""
    probs = np.asarray(result.probabilities, dtype=np.float64)
    order = np.argsort(-np.nan_to_num(probs, nan=-1.0), kind="stable")
    mapping: dict[str, float] = {}
    rows: list[list[Any]] = []
    for i in order:
        if np.isnan(probs[i]):
            continue
        label = str(result.labels[i])
        mapping[label] = float(probs[i])
        per = result.per_modality
        rows.append(
            [
                label,
                _fmt(float(probs[i])),
                _fmt(float(per["xray"][i])) if "xray" in per else "",
                _fmt(float(per["ecg"][i])) if "ecg" in per else "",
            ]
        )
    return mapping, rows


def _case_picture(res: DemoResources, hit: RetrievalHit) -> np.ndarray:
    path = preview_file(res.index_dir, hit.case) if res.index_dir else None
    if path is not None:
        try:
            return figures.load_image_array(path)
        except OSError:
            log.warning("unreadable preview %s", path.name)
    if hit.modality == "text":
        return figures.placeholder_array(f"report: {hit.case.report[:150]}")
    return figures.placeholder_array(f"{hit.modality} case: no preview")


def case_views(res: DemoResources, hits: Sequence[RetrievalHit]) -> list[CaseView]:
    """Gallery pictures, captions and table rows for retrieval hits (ranked 1..k)."""
    out = []
    for rank, hit in enumerate(hits, start=1):
        labels = ", ".join(hit.case.labels) or "no positive label"
        caption = f"#{rank} {hit.modality} (similarity {hit.score:.2f}): {labels}"
        row = [rank, round(hit.score, 3), hit.modality, hit.case.case_id, labels, hit.case.report]
        out.append(CaseView(_case_picture(res, hit), caption, row))
    return out


def similar_cases(
    res: DemoResources, embeddings: dict[str, np.ndarray], k: int | None = None
) -> list[CaseView]:
    """Cases like the input: each given modality searches its own kind of case (X-ray -> X-ray
    cases, ECG -> ECG cases); hits are merged by similarity, one per study."""
    if res.index is None or not embeddings:
        return []
    k = k or res.top_k
    hits: list[RetrievalHit] = []
    for modality, emb in embeddings.items():
        if modality in res.index.modalities:
            hits.extend(res.index.search_batch(emb[None], k=k, modality=modality)[0])
    hits.sort(key=lambda h: -h.score)
    seen: set[str] = set()
    unique = []
    for h in hits:
        key = h.case.study_id or f"{h.modality}:{h.case.case_id}"
        if key in seen:
            continue
        seen.add(key)
        unique.append(h)
    return case_views(res, unique[:k])


def explain(
    res: DemoResources, ecg: Ecg, k: int = 3
) -> tuple[np.ndarray | None, list[tuple[np.ndarray, str]], list[list[Any]], str]:
    """ProtoECGNet explanation of one ECG: (overlay figure, prototype pairs, table rows, note)."""
    if res.proto is None:
        return None, [], [], "This bundle has no ProtoECGNet prototypes."
    from medclip.proto.explain import explain_ecg

    result = explain_ecg(res.proto, ecg, k=k)
    image = figures.explanation_array(result, max_prototypes=5)
    pairs: list[tuple[np.ndarray, str]] = []
    rows: list[list[Any]] = []
    for lab in result.labels:
        for e in lab.prototypes:
            src = "unprojected" if e.source_ecg_id is None else str(e.source_ecg_id)
            rows.append(
                [
                    lab.label,
                    round(lab.probability, 3),
                    e.branch,
                    e.prototype_id,
                    e.prototype_class,
                    round(e.similarity, 3),
                    round(e.contribution, 3),
                    src,
                    f"{e.source_window_s[0]:.2f}-{e.source_window_s[1]:.2f}",
                    f"{e.input_window_s[0]:.2f}-{e.input_window_s[1]:.2f}",
                ]
            )
            if len(pairs) < 3:
                caption = (
                    f"{lab.label} (p={lab.probability:.2f}): {e.branch} prototype "
                    f"{e.prototype_id} ({e.prototype_class}), similarity {e.similarity:.2f}; "
                    f"source ECG {src}"
                )
                pairs.append(
                    (
                        figures.prototype_pair_array(
                            result.signal_mv,
                            result.fs_hz,
                            e.input_window_s,
                            e.source_segment,
                            e.source_window_s,
                            caption,
                        ),
                        caption,
                    )
                )
    note = f"{result.note} ProtoECGNet trained on: {result.training_data}"
    return image, pairs, rows, note


# ----------------------------------------------------------------------------- analysis
def analyze_paths(
    res: DemoResources, xray: str | Path | None, ecg: str | Path | None
) -> AnalysisResult:
    """Analyse an X-ray file and/or an ECG record already on disk."""
    out = AnalysisResult(notice=res.notice)
    if xray is None and ecg is None:
        out.error = error_markdown(
            "Upload a chest X-ray and/or an ECG, or choose one of the examples."
        )
        return out
    cxr = record = None
    try:
        if xray is not None:
            cxr = read_cxr(xray)
    except Exception as exc:
        out.error = error_markdown(user_message(exc, "X-ray"))
        return out
    try:
        if ecg is not None:
            record = read_ecg(ecg)
    except Exception as exc:
        out.error = error_markdown(user_message(exc, "ECG"))
        return out
    try:
        _fill(res, out, cxr, record)
    except Exception as exc:
        out = AnalysisResult(notice=res.notice, error=error_markdown(user_message(exc)))
    return out


def _fill(res: DemoResources, out: AnalysisResult, cxr: Cxr | None, ecg: Ecg | None) -> None:
    pred = res.predictor
    emb: dict[str, np.ndarray] = {}
    if cxr is not None:
        emb["xray"] = pred.embed_xray(cxr)
        out.xray_image = figures.xray_array(cxr)
        out.xray_info = xray_info(cxr)
    if ecg is not None:
        emb["ecg"] = pred.embed_ecg(ecg)
        out.ecg_image = figures.ecg_array(ecg)
        out.ecg_info = ecg_info(ecg)
    zs = pred.classifier.classify(xray=emb.get("xray"), ecg=emb.get("ecg"))[0]
    out.probabilities, out.probability_rows = zeroshot_outputs(zs)
    out.similar = similar_cases(res, emb)
    if ecg is not None:
        out.proto_image, out.proto_pairs, out.proto_rows, out.proto_note = explain(res, ecg)
    else:
        out.proto_note = "Upload an ECG to see ProtoECGNet prototype explanations."


def analyze_upload(
    res: DemoResources,
    xray: str | Path | None,
    ecg_files: Sequence[str | Path] | str | Path | None,
) -> AnalysisResult:
    """Check and analyse uploaded files (the X-ray box and the ECG box of the UI)."""
    with tempfile.TemporaryDirectory(prefix="medclip-upload-") as tmp:
        try:
            xray_path = check_xray_upload(xray, res.policy)
            ecg_path = stage_ecg_upload(ecg_files, res.policy, tmp)
        except UploadError as exc:
            return AnalysisResult(notice=res.notice, error=error_markdown(str(exc)))
        return analyze_paths(res, xray_path, ecg_path)


def analyze_example(res: DemoResources, name: str | None) -> AnalysisResult:
    """Analyse a bundled example by name or title."""
    if not name:
        return AnalysisResult(
            notice=res.notice, error=error_markdown("Choose an example from the list first.")
        )
    try:
        ex = res.example(name)
    except UploadError as exc:
        return AnalysisResult(notice=res.notice, error=error_markdown(str(exc)))
    return analyze_paths(res, ex.xray, ex.ecg)


def search_text(
    res: DemoResources, query: str | None, modality: str = "Any", k: int | None = None
) -> SearchResult:
    """Cases matching a free-text query (e.g. "ECGs with atrial fibrillation")."""
    text = (query or "").strip()
    if not text:
        return SearchResult(error=error_markdown("Type a query first."))
    if len(text) > 1000:
        return SearchResult(error=error_markdown("The query is too long (1000 characters max)."))
    if res.index is None:
        return SearchResult(error=error_markdown("This bundle has no case index to search."))
    wanted = QUERY_MODALITIES.get(modality)
    if wanted is None:
        return SearchResult(error=error_markdown(f"Unknown case type {modality!r}."))
    present = [m for m in wanted if m in res.index.modalities]
    if not present:
        return SearchResult(error=error_markdown(f"The index holds no {modality} cases."))
    try:
        target = "ecg" if present == ["ecg"] else "xray"
        q = res.predictor.embed_text(text, target=target)
        hits = res.index.search_batch(q[None], k=k or res.top_k, modality=present)[0]
    except Exception as exc:
        return SearchResult(error=error_markdown(user_message(exc)))
    return SearchResult(similar=case_views(res, hits))


__all__ = [
    "PROBABILITY_COLUMNS",
    "PROTO_COLUMNS",
    "RESEARCH_NOTICE",
    "SIMILAR_COLUMNS",
    "AnalysisResult",
    "CaseView",
    "DemoResources",
    "Example",
    "SearchResult",
    "analyze_example",
    "analyze_paths",
    "analyze_upload",
    "load_examples",
    "load_resources",
    "search_text",
]
