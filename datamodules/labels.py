"""Label vocabularies and label derivation rules shared by the readers.

* :data:`XRAY_LABELS`: the 14 CheXpert observations in the order of CheXpert's ``train.csv``.
  Raw values are ``1.0`` positive, ``0.0`` negative, ``-1.0`` uncertain, blank = not mentioned.
  :func:`apply_uncertainty` maps them to ``1.0/0.0/NaN`` (NaN = unknown, ignored by losses and
  metrics). Policies for ``-1.0``: ``ignore`` -> NaN (default), ``zero`` -> 0, ``one`` -> 1.
  Blank ("not mentioned") -> ``0.0`` by default, the common practice (CheXpert paper, GLoRIA,
  MoRE's NaN->0); pass ``blank=float("nan")`` to keep it unknown. A study with *no label row at
  all* is always all-NaN.
* :data:`ECG_LABELS`: a fixed ECG vocabulary used for tri-modal studies. MIMIC-IV-ECG labels come
  from the machine statements (``report_0..17``) through the keyword table
  :data:`ECG_KEYWORD_RULES`; PTB-XL labels come from SCP codes through :data:`PTBXL_ECG_CODES`.

Keyword rules (one table, applied to each machine statement separately, case-insensitive):

* a label is 1.0 when any statement matches its ``include`` regex and neither its ``exclude``
  regex nor the negation regex :data:`NEGATION`; else 0.0. Hedged statements ("possible",
  "consider", "cannot rule out", "probable") count as positive: the machine flagged the finding.
* ``NORM`` is 1.0 when a statement says "normal ECG" (also "otherwise normal ECG", which may
  co-occur with e.g. SBRAD as in PTB-XL), or when the record says "sinus rhythm" and every
  statement is benign (:data:`BENIGN_STATEMENT`: sinus rhythm / normal ECG, or a negated
  statement; filler such as ``***`` or ``EKG`` is dropped first). "Abnormal ECG" and
  "Borderline ECG" never count as normal.
* A record with no usable statement gets NaN for every ECG label (unknown, not negative).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

__all__ = [
    "BENIGN_STATEMENT",
    "CHEXPERT_COMPETITION_LABELS",
    "ECG_KEYWORD_RULES",
    "ECG_LABELS",
    "NEGATION",
    "PTBXL_ECG_CODES",
    "XRAY_LABELS",
    "EcgKeywordRule",
    "UncertaintyPolicy",
    "apply_uncertainty",
    "ecg_label_frame",
    "ecg_labels_from_statements",
    "ecg_labels_from_text",
    "ptbxl_ecg_labels",
    "split_statements",
]

#: The 14 CheXpert observations, in CheXpert's CSV order (select columns by name, never position).
XRAY_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

#: The 5 CheXpert competition labels (CheXpert 5x200 zero-shot classes).
CHEXPERT_COMPETITION_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)

#: Uncertainty policy for CheXpert ``-1.0`` labels.
UncertaintyPolicy = Literal["ignore", "zero", "one"]

_POLICY_VALUE: dict[str, float] = {"ignore": math.nan, "zero": 0.0, "one": 1.0}


@dataclass(frozen=True)
class EcgKeywordRule:
    """One row of the ECG keyword table.

    Attributes:
        label: name in :data:`ECG_LABELS`.
        include: regex (case-insensitive) searched in each lower-cased statement.
        exclude: regex that vetoes a match in the same statement (e.g. "incomplete").
        meaning: human-readable description.
    """

    label: str
    include: str
    exclude: str | None
    meaning: str

    def __post_init__(self) -> None:
        re.compile(self.include)
        if self.exclude is not None:
            re.compile(self.exclude)


#: Keyword table for MIMIC-IV-ECG machine statements (``NORM`` also uses the benign rule).
ECG_KEYWORD_RULES: tuple[EcgKeywordRule, ...] = (
    EcgKeywordRule("NORM", r"\bnormal (?:ecg|ekg|electrocardiogram)\b", None, "normal ECG"),
    EcgKeywordRule("AFIB", r"\batrial fibrillation\b|\bafib\b", None, "atrial fibrillation"),
    EcgKeywordRule("AFLT", r"\batrial flutter\b", None, "atrial flutter"),
    EcgKeywordRule("SBRAD", r"\bsinus bradycardia\b", None, "sinus bradycardia"),
    EcgKeywordRule("STACH", r"\bsinus tachycardia\b", None, "sinus tachycardia"),
    EcgKeywordRule(
        "1AVB",
        r"\b(?:1st|first)[- ]degree (?:a-?v|atrio-?ventricular) block\b",
        None,
        "first-degree AV block",
    ),
    EcgKeywordRule(
        "LBBB",
        r"\bleft bundle[- ]branch block\b|\blbbb\b",
        r"\bincomplete\b",
        "complete left bundle branch block",
    ),
    EcgKeywordRule(
        "RBBB",
        r"\bright bundle[- ]branch block\b|\brbbb\b",
        r"\bincomplete\b",
        "complete right bundle branch block",
    ),
    EcgKeywordRule("MI", r"\binfarct|\bstemi\b", None, "myocardial infarction (any age)"),
    EcgKeywordRule(
        "ISCH",
        r"\bst depression\b|\bischa?emi|\bsubendocardial injury\b",
        None,
        "ischemia / ST depression",
    ),
    EcgKeywordRule(
        "LVH", r"\bleft ventricular hypertrophy\b|\blvh\b", None, "left ventricular hypertrophy"
    ),
    EcgKeywordRule("LQT", r"\b(?:prolonged|long) qtc?\b", None, "prolonged QT interval"),
    EcgKeywordRule(
        "PACE", r"\bpaced\b|\bpacing\b|\bpacemaker\b|\bpacer\b", None, "paced rhythm / pacemaker"
    ),
)

#: Fixed ECG vocabulary (order of :data:`ECG_KEYWORD_RULES`).
ECG_LABELS: tuple[str, ...] = tuple(rule.label for rule in ECG_KEYWORD_RULES)

#: A statement matching this is ignored for every label ("no longer present", "without ...").
NEGATION: str = r"^(?:no|without)\b|\bno longer\b|\bnot (?:present|seen)\b|\bresolved\b"

#: Statements allowed alongside "sinus rhythm" for the NORM rule (after lower-casing and
#: stripping punctuation at both ends; filler cells such as ``***`` or a lone ``EKG`` are dropped
#: before any rule).
BENIGN_STATEMENT: str = r"^(?:normal )?sinus rhythm$|^normal (?:ecg|ekg|electrocardiogram)$"

_SINUS_RHYTHM = r"\bsinus rhythm\b"

#: PTB-XL SCP codes (keys of ``scp_codes``, any likelihood) behind each :data:`ECG_LABELS` name.
PTBXL_ECG_CODES: dict[str, tuple[str, ...]] = {
    "NORM": ("NORM",),
    "AFIB": ("AFIB",),
    "AFLT": ("AFLT",),
    "SBRAD": ("SBRAD",),
    "STACH": ("STACH",),
    "1AVB": ("1AVB",),
    "LBBB": ("CLBBB",),
    "RBBB": ("CRBBB",),
    # every code of PTB-XL's MI diagnostic class
    "MI": (
        "AMI",
        "ALMI",
        "ASMI",
        "ILMI",
        "IMI",
        "INJAL",
        "INJAS",
        "INJIL",
        "INJIN",
        "INJLA",
        "IPLMI",
        "IPMI",
        "LMI",
        "PMI",
    ),
    "ISCH": ("ISC_", "ISCAL", "ISCAN", "ISCAS", "ISCIL", "ISCIN", "ISCLA", "STD_"),
    "LVH": ("LVH", "VCLVH"),
    "LQT": ("LNGQT",),
    "PACE": ("PACE",),
}


def apply_uncertainty(
    raw: np.ndarray | pd.DataFrame,
    policy: UncertaintyPolicy | Mapping[str, UncertaintyPolicy] = "ignore",
    *,
    blank: float = 0.0,
    names: Sequence[str] = XRAY_LABELS,
) -> np.ndarray:
    """Map raw CheXpert-style values (1/0/-1/blank) to float32 ``1.0/0.0/NaN``.

    Args:
        raw: ``(N, L)`` raw values, columns in the order of ``names``; blank = NaN.
        policy: for ``-1.0``: ``ignore`` -> NaN, ``zero`` -> 0, ``one`` -> 1; or a mapping
            label -> policy (labels absent from the mapping use ``ignore``), e.g. U-Ones for
            Atelectasis/Edema and U-Zeros for Cardiomegaly/Consolidation.
        blank: value for blank ("not mentioned"); 0.0 by default, NaN keeps it unknown.
        names: label names of the columns (used with a mapping policy).

    Returns:
        float32 ``(N, L)``.
    """
    values = np.asarray(raw, dtype=np.float64).copy()
    if values.ndim != 2 or values.shape[1] != len(names):
        raise ValueError(f"apply_uncertainty: expected (N, {len(names)}) values")
    if isinstance(policy, str):
        per_label = [policy] * len(names)
    else:
        per_label = [policy.get(name, "ignore") for name in names]
    for col, pol in enumerate(per_label):
        if pol not in _POLICY_VALUE:
            raise ValueError(f"unknown uncertainty policy {pol!r}; use ignore, zero or one")
        column = values[:, col]
        uncertain = column == -1.0
        missing = np.isnan(column)
        column[uncertain] = _POLICY_VALUE[pol]
        column[missing] = blank
    return values.astype(np.float32)


def _clean_statements(statements: pd.Series) -> pd.Series:
    text = statements.astype("string").fillna("").str.lower().str.split().str.join(" ")
    text = text.fillna("").str.replace(r"^[\W_]+|[\W_]+$", "", regex=True)
    return text.mask(text.isin(["ekg", "ecg"]), "")


def ecg_label_frame(statements: pd.Series) -> pd.DataFrame:
    """Apply the keyword table to many records at once (vectorised).

    Args:
        statements: long format, one machine statement per row; the index is the record key
            (repeated for each statement of the record).

    Returns:
        float32 DataFrame indexed by the unique record keys, columns :data:`ECG_LABELS`,
        values 1.0/0.0. Records whose statements are all empty are absent (caller fills NaN).
    """
    # machine statements repeat a lot: run the regexes on the distinct texts only
    codes, uniques = pd.factorize(statements.astype("string").fillna(""), sort=False)
    clean_u = _clean_statements(pd.Series(uniques, dtype="string"))
    keep = (clean_u.str.len() > 0).to_numpy(dtype=bool)[codes]
    codes = codes[keep]
    if codes.size == 0:
        return pd.DataFrame(columns=list(ECG_LABELS), dtype=np.float32)
    keys = statements.index[keep]

    def per_statement(pattern: str) -> np.ndarray:
        return clean_u.str.contains(pattern, regex=True).to_numpy(dtype=bool)

    def per_record(flags: np.ndarray, how: str = "any") -> pd.Series:
        grouped = pd.Series(flags[codes], index=keys).groupby(level=0, sort=False)
        return grouped.any() if how == "any" else grouped.all()

    negated = per_statement(NEGATION)
    hits: dict[str, pd.Series] = {}
    for rule in ECG_KEYWORD_RULES:
        match = per_statement(rule.include) & ~negated
        if rule.exclude is not None:
            match &= ~per_statement(rule.exclude)
        hits[rule.label] = per_record(match)
    all_benign = per_record(per_statement(BENIGN_STATEMENT) | negated, "all")
    has_sinus = per_record(per_statement(_SINUS_RHYTHM) & ~negated)
    others = pd.concat([hits[k] for k in ECG_LABELS if k != "NORM"], axis=1).any(axis=1)
    hits["NORM"] = hits["NORM"] | (has_sinus & all_benign & ~others)
    frame = pd.DataFrame({k: hits[k] for k in ECG_LABELS})
    return frame.astype(np.float32)


def ecg_labels_from_statements(statements: Iterable[str | None]) -> dict[str, float]:
    """Keyword-rule ECG labels for one record's machine statements.

    Returns:
        ``{label: 1.0/0.0}`` for every name in :data:`ECG_LABELS`; all NaN when no statement
        has text.
    """
    items = [s for s in statements if s is not None and not _is_nan(s)]
    frame = ecg_label_frame(pd.Series(items, index=np.zeros(len(items), dtype=np.int64)))
    if frame.empty:
        return dict.fromkeys(ECG_LABELS, math.nan)
    row = frame.iloc[0]
    return {k: float(row[k]) for k in ECG_LABELS}


def split_statements(text: str | None) -> list[str]:
    """Split a joined ECG report (``"Sinus rhythm. Normal ECG."``) back into statements."""
    if not text:
        return []
    parts = re.split(r"(?<!\d)\.(?!\d)|[;\n]", text)
    return [p.strip() for p in parts if p.strip()]


def ecg_labels_from_text(text: str | None) -> dict[str, float]:
    """Keyword-rule ECG labels for a joined statement text (split on ``.``, ``;``, newlines)."""
    return ecg_labels_from_statements(split_statements(text))


def ptbxl_ecg_labels(codes: Iterable[str]) -> dict[str, float]:
    """Map PTB-XL SCP codes (keys of ``scp_codes``, any likelihood) to :data:`ECG_LABELS`.

    Returns:
        ``{label: 1.0/0.0}``; PTB-XL statements are exhaustive, so absent means negative.
    """
    present = set(codes)
    return {
        label: 1.0 if present.intersection(PTBXL_ECG_CODES[label]) else 0.0 for label in ECG_LABELS
    }


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)
