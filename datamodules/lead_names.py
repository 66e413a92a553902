"""The canonical 12-lead order, in a module without heavy imports (the synthetic generator and
:mod:`datamodules.types` both use it; the generator must not import torch)."""

from __future__ import annotations

#: Canonical 12-lead order used everywhere in medclip.
CANONICAL_LEADS: tuple[str, ...] = (
    "I",
    "II",
    "III",
    "aVR",
    "aVL",
    "aVF",
    "V1",
    "V2",
    "V3",
    "V4",
    "V5",
    "V6",
)
