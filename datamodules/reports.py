"""Report text: MIMIC-CXR free-text reports, MIMIC-IV-ECG machine statements, PTB-XL reports.

MIMIC-CXR reports (DATASETS.md §3.3) are split into sections on lines of the form
``<UPPER-CASE HEADER>:``; the training text is FINDINGS + IMPRESSION. A report with neither
falls back to its last paragraph (as the official labeler does). De-identification marks
(``___``) are **removed** by default (then runs of spaces collapse); pass ``phi_token`` to
replace them with a neutral token instead, e.g. ``"[REDACTED]"``.

Empty text is never returned as ``""``: readers return ``None`` (the caller logs one aggregated
warning) or raise :class:`~datamodules.errors.ReportError` when the report is required.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from datamodules.errors import ReportError

logger = logging.getLogger(__name__)

__all__ = [
    "CXR_REPORT_SECTIONS",
    "clean_phi",
    "combine_reports",
    "cxr_report_text",
    "ecg_statement_columns",
    "join_ecg_statements",
    "join_ecg_statements_frame",
    "parse_cxr_sections",
    "ptbxl_report_text",
    "read_cxr_report",
]

#: Sections used for the CXR training text, in order.
CXR_REPORT_SECTIONS: tuple[str, ...] = ("findings", "impression")

#: Header line: optional leading spaces, an upper-case header (letters, spaces, ``()/,-&``), a
#: colon. Allows text on the same line after the colon.
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z /(),&\-]*[A-Z)])[ \t]*:", re.MULTILINE)

#: Normalisation of section names (misspellings and synonyms).
_SECTION_ALIASES: dict[str, str] = {
    "impresson": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "finding": "findings",
    "findings and impression": "impression",
    "impression and findings": "impression",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "history": "indication",
    "clinical history": "indication",
    "comparisons": "comparison",
    "recommendations": "recommendation",
    "recommendation(s)": "recommendation",
}

_PHI = re.compile(r"_{3,}")
_SPACES = re.compile(r"[ \t]+")
_STATEMENT_COLUMN = re.compile(r"^report_(\d+)$")


def clean_phi(text: str, phi_token: str = "") -> str:
    """Remove (or replace with ``phi_token``) ``___`` de-identification marks and tidy spaces."""
    out = _PHI.sub(phi_token, text)
    out = _SPACES.sub(" ", out)
    out = re.sub(r" +([.,;:])", r"\1", out)
    return out.strip()


def _normalise_section(name: str) -> str:
    key = " ".join(name.lower().split())
    return _SECTION_ALIASES.get(key, key)


def parse_cxr_sections(text: str) -> dict[str, str]:
    """Split a MIMIC-CXR report into sections.

    Returns:
        ``{section_name: text}`` with lower-case normalised names (``impression``,
        ``findings``, ``indication``, ...); text before the first header is ``preamble``.
        Repeated sections are concatenated. Whitespace inside each section is collapsed.
    """
    sections: dict[str, list[str]] = {}
    matches = list(_HEADER.finditer(text))
    bounds = [(m.start(), m.end(), _normalise_section(m.group(1))) for m in matches]
    first = bounds[0][0] if bounds else len(text)
    sections.setdefault("preamble", []).append(text[:first])
    for i, (_, end, name) in enumerate(bounds):
        stop = bounds[i + 1][0] if i + 1 < len(bounds) else len(text)
        sections.setdefault(name, []).append(text[end:stop])
    out: dict[str, str] = {}
    for name, chunks in sections.items():
        # skip empty chunks: a repeated, empty section left a double space (fuzz)
        joined = " ".join(w for w in (" ".join(chunk.split()) for chunk in chunks) if w)
        if joined:
            out[name] = joined
    return out


def _last_paragraph(text: str) -> str:
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", text) if p.strip()]
    if not paragraphs:
        return ""
    last = paragraphs[-1]
    if _HEADER.match(last.strip()) and ":" in last:
        last = last.split(":", 1)[1]
    return " ".join(last.split())


def cxr_report_text(
    text: str,
    sections: Sequence[str] = CXR_REPORT_SECTIONS,
    *,
    phi_token: str = "",
    fallback_last_paragraph: bool = True,
) -> str | None:
    """The training text of a MIMIC-CXR report: the chosen sections joined, PHI marks cleaned.

    Args:
        text: raw report file content.
        sections: section names to keep, in output order (default FINDINGS then IMPRESSION).
        phi_token: replacement for ``___`` (default: removed).
        fallback_last_paragraph: when none of ``sections`` exists, use the last paragraph
            (skipped if it is only a title such as ``FINAL REPORT``).

    Returns:
        the text, or ``None`` when nothing usable remains.
    """
    parsed = parse_cxr_sections(text)
    chosen = [parsed[name] for name in sections if name in parsed]
    body = " ".join(chosen)
    if not body and fallback_last_paragraph:
        candidate = _last_paragraph(text)
        if candidate and candidate.strip().upper() != "FINAL REPORT":
            body = candidate
    body = clean_phi(body, phi_token)
    return body or None


def read_cxr_report(
    path: str | Path,
    *,
    required: bool = False,
    sections: Sequence[str] = CXR_REPORT_SECTIONS,
    phi_token: str = "",
) -> str | None:
    """Read a MIMIC-CXR report ``.txt`` and return its training text.

    Returns:
        the text, or ``None`` (missing/empty file) when ``required`` is False; a per-file debug
        message is logged and callers log one aggregated warning.

    Raises:
        ReportError: the file is missing, unreadable or has no usable text and ``required``.
    """
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        if required:
            raise ReportError(path, "report file not found") from None
        logger.debug("report file not found: %s", path.name)
        return None
    except OSError as exc:
        if required:
            raise ReportError(path, f"cannot read report ({exc.strerror})") from exc
        logger.debug("cannot read report %s", path.name)
        return None
    text = cxr_report_text(raw, sections, phi_token=phi_token)
    if text is None:
        if required:
            raise ReportError(path, "report has no usable text (no FINDINGS/IMPRESSION)")
        logger.debug("empty report: %s", path.name)
    return text


def _is_filler(cell: str) -> bool:
    core = re.sub(r"[\W_]+", "", cell)
    return not core or core.lower() in {"ekg", "ecg"}


def _tidy_statement(cell: object) -> str | None:
    if cell is None or (isinstance(cell, float) and math.isnan(cell)) or cell is pd.NA:
        return None
    text = " ".join(str(cell).split())
    if _is_filler(text):
        return None
    return text.rstrip(" .")


def join_ecg_statements(cells: Iterable[object]) -> str | None:
    """Join MIMIC-IV-ECG machine statements into one report text.

    Blank/NaN cells and filler cells (``***``, a lone ``EKG``) are skipped; statements are
    joined with ``". "`` and end with a period: ``"Sinus rhythm. Normal ECG."``.

    Returns:
        the text, or ``None`` when no statement is left.
    """
    parts = [p for p in (_tidy_statement(c) for c in cells) if p]
    return ". ".join(parts) + "." if parts else None


def ecg_statement_columns(columns: Iterable[str]) -> list[str]:
    """The ``report_<k>`` columns present, sorted by ``k`` (``report_0`` ... ``report_17``)."""
    found = [(int(m.group(1)), c) for c in columns if (m := _STATEMENT_COLUMN.match(str(c)))]
    return [c for _, c in sorted(found)]


def join_ecg_statements_frame(frame: pd.DataFrame, key: str = "study_id") -> pd.DataFrame:
    """Vectorised statement extraction for a whole ``machine_measurements`` table.

    Args:
        frame: table with ``key`` and ``report_0..report_17`` (any subset) columns.
        key: record key column.

    Returns:
        long DataFrame (columns ``key``, ``position``, ``statement``) of the usable statements,
        in statement order; filler and blanks removed.
    """
    cols = ecg_statement_columns(frame.columns)
    if not cols:
        return pd.DataFrame({key: [], "position": [], "statement": []})
    pieces = []
    for position, col in enumerate(cols):  # column by column: most cells are blank
        values = frame[col]
        filled = values.notna().to_numpy(dtype=bool)
        pieces.append(
            pd.DataFrame(
                {
                    key: frame[key].to_numpy()[filled],
                    "position": position,
                    "statement": values.to_numpy()[filled],
                }
            )
        )
    long = pd.concat(pieces, ignore_index=True)
    text = long["statement"].astype("string").str.split().str.join(" ")
    core = text.str.replace(r"[\W_]+", "", regex=True).str.lower()
    usable = (core.str.len() > 0) & ~core.isin(["ekg", "ecg"])
    long = long.assign(statement=text.str.rstrip(" ."))[usable.fillna(False).astype(bool)]
    long["position"] = long["position"].astype(int)
    return long.sort_values([key, "position"], kind="stable").reset_index(drop=True)


def ptbxl_report_text(text: object) -> str | None:
    """PTB-XL ``report`` column -> stripped text or ``None`` when blank."""
    if text is None or text is pd.NA or (isinstance(text, float) and math.isnan(text)):
        return None
    out = " ".join(str(text).split())
    return out or None


def combine_reports(cxr_text: str | None, ecg_text: str | None) -> str | None:
    """Tri-modal study text: the CXR report followed by the ECG statements.

    Returns:
        ``"<cxr> <ecg>"`` when both exist, either alone, or ``None``.
    """
    parts = [t.strip() for t in (cxr_text, ecg_text) if t and t.strip()]
    return " ".join(parts) if parts else None
