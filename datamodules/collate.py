"""Collate :class:`~datamodules.dataset.StudyDataset` samples into a :class:`Batch`.

Missing modalities become zero rows *and* a False entry in ``Batch.present``; the loss must use the
mask and never treat those zero rows as negatives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from datamodules.types import Batch

Tokenizer = Callable[[list[str]], dict[str, torch.Tensor]]


@dataclass
class PinnableBatch(Batch):
    """A :class:`Batch` that ``DataLoader(pin_memory=True)`` knows how to pin."""

    def pin_memory(self) -> PinnableBatch:
        """Copy every tensor into page-locked memory (faster host-to-GPU copies)."""
        tokens = (
            {k: v.pin_memory() for k, v in self.text_tokens.items()}
            if self.text_tokens is not None
            else None
        )
        return PinnableBatch(
            xray=self.xray.pin_memory(),
            ecg=self.ecg.pin_memory(),
            text=self.text,
            present=self.present.pin_memory(),
            labels=self.labels.pin_memory(),
            study_ids=self.study_ids,
            text_tokens=tokens,
            text_by_modality=self.text_by_modality,
        )


def _zeros(shape: tuple[int, ...]) -> torch.Tensor:
    # numpy's calloc-backed zeros: torch.zeros runs a parallel fill that stalls on busy CPUs
    return torch.from_numpy(np.zeros(shape, dtype=np.float32))


def _stack(
    items: Sequence[torch.Tensor | None], shape: tuple[int, ...] | None, name: str
) -> torch.Tensor:
    """Stack tensors, zero-filling the None entries; ``shape`` is used when all are None."""
    found = next((t for t in items if t is not None), None)
    if found is None:
        if shape is None:
            raise ValueError(f"collate: no sample has {name} and no {name} shape was given")
        return _zeros((len(items), *shape))
    shape = tuple(found.shape)
    for t in items:
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(
                f"collate: {name} shapes differ in a batch: {tuple(t.shape)} vs {shape}"
            )
    zero = _zeros(shape).to(found.dtype) if any(t is None for t in items) else found
    return torch.stack([t if t is not None else zero for t in items])


def collate_studies(
    samples: Sequence[dict[str, Any]],
    tokenizer: Tokenizer | None = None,
    *,
    xray_shape: tuple[int, int, int] | None = None,
    ecg_shape: tuple[int, int] | None = None,
) -> Batch:
    """Collate samples into a :class:`Batch`.

    Args:
        samples: dicts from :class:`~datamodules.dataset.StudyDataset`.
        tokenizer: optional ``tokenizer(list[str]) -> {"input_ids", "attention_mask", ...}``;
            fills ``Batch.text_tokens`` (``(B, S)`` each). Missing reports are tokenised as "".
        xray_shape: ``(1, S, S)`` used when no sample in the batch has an X-ray; defaults to
            ``(1, 0, 0)`` (an empty image tensor) when not given.
        ecg_shape: ``(12, L)`` used when no sample has an ECG; defaults to ``(12, 0)``.

    Returns:
        Batch with ``xray (B, 1, S, S)``, ``ecg (B, 12, L)``, ``present (B, 3)`` bool,
        ``labels (B, n_labels)`` float32 (NaN = unknown).
    """
    if not samples:
        raise ValueError("collate: empty batch")
    xray = _stack([s["xray"] for s in samples], xray_shape or (1, 0, 0), "xray")
    ecg = _stack([s["ecg"] for s in samples], ecg_shape or (12, 0), "ecg")
    present = torch.stack([torch.as_tensor(s["present"], dtype=torch.bool) for s in samples])
    # A modality is present only if its tensor is there (the mask can never point at zeros).
    present[:, 0] &= torch.tensor([s["xray"] is not None for s in samples])
    present[:, 1] &= torch.tensor([s["ecg"] is not None for s in samples])
    labels = torch.stack([torch.as_tensor(s["labels"], dtype=torch.float32) for s in samples])
    text = [str(s["text"] or "") for s in samples]
    tokens = dict(tokenizer(text)) if tokenizer is not None else None
    by_modality = {
        key: [str(s.get(f"text_{key}") or "") for s in samples] for key in ("xray", "ecg")
    }
    return PinnableBatch(
        xray=xray,
        ecg=ecg,
        text=text,
        present=present,
        labels=labels,
        study_ids=[str(s["study_id"]) for s in samples],
        text_tokens=tokens,
        text_by_modality=by_modality,
    )


class StudyCollator:
    """Picklable ``collate_fn`` (works with spawned workers) that fixes the empty-modality shapes.

    Args:
        tokenizer: optional text tokenizer, see :func:`collate_studies`.
        image_size: X-ray side ``S``; gives ``(1, S, S)`` zero images when a batch has none.
        ecg_length: ECG samples ``L``; gives ``(12, L)`` zero signals when a batch has none.
    """

    def __init__(
        self,
        tokenizer: Tokenizer | None = None,
        image_size: int | None = None,
        ecg_length: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.xray_shape = (1, image_size, image_size) if image_size else None
        self.ecg_shape = (12, ecg_length) if ecg_length else None

    def __call__(self, samples: Sequence[dict[str, Any]]) -> Batch:
        return collate_studies(
            samples, self.tokenizer, xray_shape=self.xray_shape, ecg_shape=self.ecg_shape
        )
