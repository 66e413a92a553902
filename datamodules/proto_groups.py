"""ProtoECGNet label groups (rhythm / morphology / global) derived from PTB-XL's scp_statements.csv.

ProtoECGNet (arXiv 2504.08713) regroups the 71 PTB-XL SCP statements into three branches. Instead
of shipping a regrouped CSV we derive the groups from the official ``scp_statements.csv`` with the
regrouping written down here:

* **rhythm**: every statement with ``rhythm == 1`` (12 in PTB-XL) plus the conduction statements
  :data:`RHYTHM_EXTRA` (1AVB 2AVB 3AVB IVCD) -> 16;
* **global**: :data:`GLOBAL_CODES` (NORM DIG EL) -> 3;
* **morphology**: all remaining statements -> 52.

Labelling rule (as in the paper and the PTB-XL benchmark): a code listed in ``scp_codes`` is
positive whatever its likelihood value (0.0 means "unknown likelihood", not absent).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from datamodules.errors import MetadataError

#: Conduction statements that the paper moves to the rhythm branch.
RHYTHM_EXTRA: tuple[str, ...] = ("1AVB", "2AVB", "3AVB", "IVCD")
#: Statements that describe the whole record (global branch).
GLOBAL_CODES: tuple[str, ...] = ("NORM", "DIG", "EL")
#: Branch names in fusion order.
GROUP_NAMES: tuple[str, ...] = ("rhythm", "morphology", "global")

_REQUIRED_COLUMNS = ("rhythm",)


@dataclass(frozen=True)
class ProtoGroups:
    """The three label groups, each in ``scp_statements.csv`` row order.

    A group may be empty after :meth:`restrict` (e.g. a small dataset without global labels); the
    model then has no branch for it.

    Attributes:
        rhythm: rhythm-branch codes.
        morphology: morphology-branch codes.
        global_: global-branch codes (``global`` is a keyword).
    """

    rhythm: tuple[str, ...]
    morphology: tuple[str, ...]
    global_: tuple[str, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for name in GROUP_NAMES:
            codes = self[name]
            dup = seen.intersection(codes)
            if dup or len(set(codes)) != len(codes):
                raise ValueError(f"ProtoGroups: codes in more than one place: {sorted(dup)}")
            seen.update(codes)

    def __getitem__(self, name: str) -> tuple[str, ...]:
        if name == "global":
            return self.global_
        if name in ("rhythm", "morphology"):
            codes: tuple[str, ...] = getattr(self, name)
            return codes
        raise KeyError(f"unknown group {name!r}; choose one of {list(GROUP_NAMES)}")

    @property
    def active(self) -> tuple[str, ...]:
        """Names of the non-empty groups, in fusion order."""
        return tuple(n for n in GROUP_NAMES if self[n])

    @property
    def all_labels(self) -> tuple[str, ...]:
        """All codes in fusion order: rhythm, then morphology, then global."""
        return self.rhythm + self.morphology + self.global_

    def as_dict(self) -> dict[str, list[str]]:
        """JSON-serialisable ``{group: [codes]}``."""
        return {name: list(self[name]) for name in GROUP_NAMES}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[str]]) -> ProtoGroups:
        """Inverse of :meth:`as_dict`."""
        return cls(tuple(data["rhythm"]), tuple(data["morphology"]), tuple(data["global"]))

    def restrict(self, keep: Iterable[str]) -> ProtoGroups:
        """Groups with only the codes in ``keep`` (order preserved)."""
        k = set(keep)
        return ProtoGroups(
            tuple(c for c in self.rhythm if c in k),
            tuple(c for c in self.morphology if c in k),
            tuple(c for c in self.global_ if c in k),
        )


def derive_proto_groups(statements: pd.DataFrame, source: str | Path | None = None) -> ProtoGroups:
    """Regroup a ``scp_statements`` table (index = SCP code) into the three branches.

    Raises:
        MetadataError: the table lacks the ``rhythm`` column or a group ends up empty.
    """
    missing = [c for c in _REQUIRED_COLUMNS if c not in statements.columns]
    if missing:
        raise MetadataError(source, f"scp_statements lacks column(s) {missing}")
    codes = [str(c).strip() for c in statements.index]
    is_rhythm = pd.to_numeric(statements["rhythm"], errors="coerce").fillna(0).to_numpy() == 1
    rhythm_flag = dict(zip(codes, is_rhythm))
    rhythm = tuple(c for c in codes if rhythm_flag[c] or c in RHYTHM_EXTRA)
    global_ = tuple(c for c in codes if c in GLOBAL_CODES and c not in rhythm)
    morphology = tuple(c for c in codes if c not in rhythm and c not in global_)
    empty = [n for n, g in zip(GROUP_NAMES, (rhythm, morphology, global_)) if not g]
    if empty:
        raise MetadataError(source, f"no SCP statement falls in group(s) {empty}")
    try:
        return ProtoGroups(rhythm, morphology, global_)
    except ValueError as exc:
        raise MetadataError(source, str(exc)) from exc


def load_proto_groups(scp_statements_csv: str | Path) -> ProtoGroups:
    """Read ``scp_statements.csv`` (unnamed first column = code) and derive the groups.

    Raises:
        MetadataError: the file is missing or unreadable, or lacks the needed columns.
    """
    path = Path(scp_statements_csv)
    if not path.is_file():
        raise MetadataError(path, "scp_statements.csv not found")
    try:
        table = pd.read_csv(path, index_col=0, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise MetadataError(path, f"not a readable CSV ({exc})") from exc
    return derive_proto_groups(table, source=path)


def parse_scp_codes(text: str, source: str | Path | None = None) -> dict[str, float]:
    """Parse a PTB-XL ``scp_codes`` cell (a Python dict literal) without ``eval``.

    Raises:
        MetadataError: the cell is not a dict literal of code -> number.
    """
    try:
        value = ast.literal_eval(text) if isinstance(text, str) and text.strip() else {}
    except (ValueError, SyntaxError) as exc:
        raise MetadataError(source, f"scp_codes {text!r} is not a dict literal") from exc
    if not isinstance(value, dict):
        raise MetadataError(source, f"scp_codes {text!r} is not a dict literal")
    return {str(k).strip(): float(v) for k, v in value.items()}


def multi_hot(records: Sequence[Iterable[str]], codes: Sequence[str]) -> np.ndarray:
    """``(N, len(codes))`` float32 multi-hot matrix; any listed code counts as positive."""
    index = {c: i for i, c in enumerate(codes)}
    out = np.zeros((len(records), len(codes)), dtype=np.float32)
    for row, rec in enumerate(records):
        for code in rec:
            j = index.get(code)
            if j is not None:
                out[row, j] = 1.0
    return out
