"""Split names and the deterministic subject-level split used where no official split exists.

medclip's split names are ``"train"``, ``"val"`` and ``"test"``. Dataset spellings
(``validate`` in MIMIC-CXR, ``valid`` in CheXpert) are mapped with :func:`normalize_split`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

__all__ = ["SPLITS", "hash_split", "normalize_split"]

#: medclip's split names.
SPLITS: tuple[str, ...] = ("train", "val", "test")

_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "test": "test",
}


def normalize_split(name: str) -> str:
    """Map a dataset's split spelling to ``train``/``val``/``test``.

    Raises:
        ValueError: unknown split name.
    """
    key = str(name).strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
    return _ALIASES[key]


def _unit_hash(key: str) -> float:
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / float(1 << 64)


def hash_split(
    subject_ids: Iterable[object],
    *,
    val_frac: float = 0.05,
    test_frac: float = 0.05,
    salt: str = "medclip",
) -> np.ndarray:
    """Assign each subject to a split from a hash of its id (deterministic, subject-disjoint).

    The same id always lands in the same split, whatever the order or the other ids, so every
    record of a subject (ECG, X-ray, pair) shares one split. A SHA-256 of ``"<salt>:<id>"`` maps
    to ``u`` in ``[0, 1)``: ``u < test_frac`` is test, ``u < test_frac + val_frac`` is val,
    otherwise train.

    Args:
        subject_ids: ids (ints or strings; ``10000032`` and ``"10000032"`` hash alike).
        val_frac: expected fraction of subjects in val.
        test_frac: expected fraction of subjects in test.
        salt: changes the assignment when a different split is wanted.

    Returns:
        object array of split names, one per input id.
    """
    if not (0.0 <= val_frac < 1.0 and 0.0 <= test_frac < 1.0 and val_frac + test_frac < 1.0):
        raise ValueError("hash_split: need 0 <= val_frac, test_frac and val_frac + test_frac < 1")
    ids = np.asarray([str(s) for s in subject_ids], dtype=object)
    if ids.size == 0:
        return np.asarray([], dtype=object)
    uniq, inverse = np.unique(ids.astype(str), return_inverse=True)
    u = np.fromiter((_unit_hash(f"{salt}:{s}") for s in uniq), dtype=np.float64, count=len(uniq))
    names = np.where(u < test_frac, "test", np.where(u < test_frac + val_frac, "val", "train"))
    return names.astype(object)[inverse]
