"""Typed containers that flow from the readers to the encoders (DESIGN.md §3).

These are the contracts between ``datamodules`` and the rest of medclip:

* :class:`Ecg`: float32 ``(12, T)`` in mV, canonical lead order, NaN + mask for missing leads.
* :class:`Cxr`: float32 ``(H, W)`` in ``[0, 1]``, bright = dense, PHI-free metadata only.
* :class:`Study`: one subject's X-ray / ECG / report, any of which may be missing.
* :class:`Batch`: collated tensors plus the ``present`` mask that the loss uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.lead_names import CANONICAL_LEADS


class Modality(str, Enum):
    """The three modalities of the shared space."""

    XRAY = "xray"
    ECG = "ecg"
    TEXT = "text"


#: Column order of :attr:`Batch.present`.
MODALITY_ORDER: tuple[Modality, ...] = (Modality.XRAY, Modality.ECG, Modality.TEXT)


@dataclass
class Ecg:
    """A 12-lead ECG in canonical lead order.

    Attributes:
        signal: float32 ``(12, T)`` in mV. Missing leads are all-NaN rows.
        fs: sampling rate in Hz.
        leads: lead names, always :data:`CANONICAL_LEADS` after reading.
        lead_mask: bool ``(12,)``; True where the lead was present in the source.
        source: file the record came from (never shown with patient identifiers).
        meta: PHI-free metadata (units as read, original lead names, record name, ...).
    """

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...] = CANONICAL_LEADS
    lead_mask: np.ndarray = field(default_factory=lambda: np.ones(12, dtype=bool))
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        """Number of samples per lead."""
        return int(self.signal.shape[-1])

    @property
    def duration_s(self) -> float:
        """Length of the record in seconds."""
        return self.n_samples / float(self.fs)


@dataclass
class Cxr:
    """A chest radiograph.

    Attributes:
        pixels: float32 ``(H, W)`` in ``[0, 1]``, bright = dense (MONOCHROME2 convention).
        source: file the image came from.
        meta: PHI-free metadata from an allowlist (modality, view, photometric interpretation,
            bits stored, original size, ...). Never patient identifiers.
    """

    pixels: np.ndarray
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Study:
    """One subject's study: any of X-ray, ECG and report may be missing.

    ``subject_id`` is the dataset's pseudonymous id; it is used for pairing and splitting only and
    is never logged or displayed.
    """

    study_id: str
    subject_id: str
    xray_path: Path | None = None
    ecg_path: Path | None = None
    report: str | None = None
    labels: dict[str, float] = field(default_factory=dict)
    split: str = "train"
    dataset: str = ""
    xray_time: np.datetime64 | None = None
    ecg_time: np.datetime64 | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def present(self) -> tuple[bool, bool, bool]:
        """Which of (xray, ecg, text) the study has."""
        return (
            self.xray_path is not None,
            self.ecg_path is not None,
            bool(self.report and self.report.strip()),
        )


@dataclass
class Batch:
    """A collated batch.

    Attributes:
        xray: ``(B, 1, H, W)`` float32; rows whose X-ray is missing are zeros and masked out.
        ecg: ``(B, 12, T)`` float32; rows whose ECG is missing are zeros and masked out.
        text: list of B report strings ("" where missing).
        present: ``(B, 3)`` bool, columns in :data:`MODALITY_ORDER` (xray, ecg, text).
        labels: ``(B, L)`` float32 with NaN for unknown/ignored labels.
        study_ids: B study ids.
        text_tokens: optional tokenizer output (``input_ids``, ``attention_mask``), ``(B, S)``.
        text_by_modality: optional per-modality report parts, ``{"xray": [...], "ecg": [...]}``
            (the CXR report and the ECG statements), for ``text_mode=per_modality``.
    """

    xray: torch.Tensor
    ecg: torch.Tensor
    text: list[str]
    present: torch.Tensor
    labels: torch.Tensor
    study_ids: list[str]
    text_tokens: dict[str, torch.Tensor] | None = None
    text_by_modality: dict[str, list[str]] | None = None

    def __len__(self) -> int:
        return len(self.study_ids)

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor to ``device`` (non-blocking where possible)."""
        tokens = (
            {k: v.to(device, non_blocking=True) for k, v in self.text_tokens.items()}
            if self.text_tokens is not None
            else None
        )
        return Batch(
            xray=self.xray.to(device, non_blocking=True),
            ecg=self.ecg.to(device, non_blocking=True),
            text=self.text,
            present=self.present.to(device, non_blocking=True),
            labels=self.labels.to(device, non_blocking=True),
            study_ids=self.study_ids,
            text_tokens=tokens,
            text_by_modality=self.text_by_modality,
        )
