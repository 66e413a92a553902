"""ECG lead names and physical units: map whatever a file says onto the canonical 12 leads.

Lead names are matched case-insensitively after removing decoration, so ``AVR``, ``aVR``,
``"V1 "``, ``"Lead II"``, ``"Lead I (Einthoven)"``, ``"DII"`` and ``"MDC_ECG_LEAD_AVF"`` all map to
a canonical lead. An inverted lead such as ``"-aVR"`` (Cabrera display) maps to ``aVR`` with sign
-1, so the reader can flip it back. DICOM waveform codes (SCPECG ``5.6.3-9-N`` and MDC ``2:N``)
are understood too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from datamodules.types import CANONICAL_LEADS

#: Lower-case, decoration-free spelling -> canonical lead name.
_ALIASES: dict[str, str] = {lead.lower(): lead for lead in CANONICAL_LEADS}
_ALIASES.update({"di": "I", "dii": "II", "diii": "III"})

#: Lead number used by both the SCPECG (``5.6.3-9-N``) and MDC (``2:N``) code systems.
_CODE_NUMBERS: dict[int, str] = {
    1: "I",
    2: "II",
    3: "V1",
    4: "V2",
    5: "V3",
    6: "V4",
    7: "V5",
    8: "V6",
    61: "III",
    62: "aVR",
    63: "aVL",
    64: "aVF",
}

_PAREN = re.compile(r"\(.*?\)")
_PREFIX = re.compile(r"^(?:mdc_ecg_lead_|ecg_lead_|lead)[\s_:-]*")
_CODE = re.compile(r"^(?:5\.6\.3-9-|2:)(\d+)$")

#: Physical unit spelling (lower case) -> factor that converts it to millivolts.
_UNIT_TO_MV: dict[str, float] = {
    "mv": 1.0,
    "millivolt": 1.0,
    "millivolts": 1.0,
    "uv": 1e-3,
    "µv": 1e-3,  # micro sign U+00B5
    "μv": 1e-3,  # greek mu U+03BC
    "microvolt": 1e-3,
    "microvolts": 1e-3,
    "nv": 1e-6,
    "v": 1e3,
    "volt": 1e3,
    "volts": 1e3,
}

#: Spellings that mean "units not stated"; the readers assume mV and record the repair.
UNSTATED_UNITS: frozenset[str] = frozenset({"", "nu", "none", "unknown"})


@lru_cache(maxsize=4096)
def canonical_lead(name: str) -> tuple[str, float] | None:
    """Canonical name and sign of one source lead name, or None when it is not a 12-lead lead.

    Examples: ``"AVR" -> ("aVR", 1.0)``, ``"Lead II" -> ("II", 1.0)``, ``"-aVR" -> ("aVR", -1.0)``,
    ``"5.6.3-9-62" -> ("aVR", 1.0)``, ``"X" -> None``.
    """
    text = _PAREN.sub("", str(name)).strip().lower()
    code = _CODE.match(text.replace(" ", ""))
    if code:
        lead = _CODE_NUMBERS.get(int(code.group(1)))
        return (lead, 1.0) if lead else None
    text = _PREFIX.sub("", text).strip()
    sign = 1.0
    if text and text[0] in "+-":
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:].strip()
    text = text.replace(" ", "").replace("_", "")
    lead = _ALIASES.get(text)
    return (lead, sign) if lead else None


def unit_to_mv(unit: str | None) -> float | None:
    """Factor converting ``unit`` to mV (``"uV" -> 1e-3``), or None when the unit is unknown.

    Unstated units (``None``, ``""``, ``"NU"``) also give None; callers decide whether to assume
    mV (see :data:`UNSTATED_UNITS`).
    """
    if unit is None:
        return None
    return _UNIT_TO_MV.get(unit.strip().lower())


@dataclass(frozen=True)
class LeadMap:
    """How source channels map onto :data:`CANONICAL_LEADS`.

    Attributes:
        source: for each canonical lead, the index of the source channel, or -1 when missing.
        sign: for each canonical lead, +1.0 or -1.0 (-1 for inverted sources such as ``-aVR``).
        unknown: source names that are not one of the 12 leads (ignored).
        duplicates: source names of a lead already taken by an earlier channel (ignored).
    """

    source: tuple[int, ...]
    sign: tuple[float, ...]
    unknown: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()

    @property
    def mask(self) -> np.ndarray:
        """bool ``(12,)``: True where the canonical lead has a source channel."""
        return np.array([s >= 0 for s in self.source], dtype=bool)

    @property
    def n_present(self) -> int:
        """Number of canonical leads found in the source."""
        return sum(s >= 0 for s in self.source)

    @property
    def missing(self) -> tuple[str, ...]:
        """Canonical names of the leads the source lacks."""
        return tuple(lead for lead, s in zip(CANONICAL_LEADS, self.source) if s < 0)

    @property
    def inverted(self) -> tuple[str, ...]:
        """Canonical names of the leads stored inverted in the source."""
        return tuple(
            lead for lead, s, g in zip(CANONICAL_LEADS, self.source, self.sign) if s >= 0 and g < 0
        )


def map_leads(names: Sequence[str]) -> LeadMap:
    """Match source channel names to the canonical leads (the first channel of a lead wins)."""
    return _map_leads(tuple(str(n) for n in names))


@lru_cache(maxsize=1024)
def _map_leads(names: tuple[str, ...]) -> LeadMap:
    index = {lead: i for i, lead in enumerate(CANONICAL_LEADS)}
    source = [-1] * len(CANONICAL_LEADS)
    sign = [1.0] * len(CANONICAL_LEADS)
    unknown: list[str] = []
    duplicates: list[str] = []
    for channel, name in enumerate(names):
        found = canonical_lead(name)
        if found is None:
            unknown.append(str(name))
            continue
        k = index[found[0]]
        if source[k] >= 0:
            duplicates.append(str(name))
            continue
        source[k] = channel
        sign[k] = found[1]
    return LeadMap(tuple(source), tuple(sign), tuple(unknown), tuple(duplicates))


def reorder_leads(
    signal: np.ndarray, names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, LeadMap]:
    """Reorder ``(C, T)`` channels named ``names`` into canonical order.

    Returns:
        float32 ``(12, T)`` signal with all-NaN rows for missing leads (inverted sources flipped
        back), the bool ``(12,)`` lead mask, and the :class:`LeadMap` used.
    """
    if signal.ndim != 2 or signal.shape[0] != len(names):
        raise ValueError(f"signal shape {signal.shape} does not match {len(names)} lead names")
    lead_map = map_leads(names)
    out = np.full((len(CANONICAL_LEADS), signal.shape[1]), np.nan, dtype=np.float32)
    for k, (src, sgn) in enumerate(zip(lead_map.source, lead_map.sign)):
        if src >= 0:
            np.multiply(signal[src], sgn, out=out[k], casting="unsafe")
    return out, lead_map.mask, lead_map
