"""collate_studies / StudyCollator: the present mask, zero rows, tokens."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch

from datamodules.collate import PinnableBatch, StudyCollator, collate_studies
from datamodules.types import Batch


def sample(i: int, xray: bool, ecg: bool, text: str, labels: list[float]) -> dict[str, Any]:
    g = torch.Generator().manual_seed(i)
    return {
        "xray": torch.rand((1, 8, 8), generator=g) + 1.0 if xray else None,
        "ecg": torch.rand((12, 20), generator=g) + 1.0 if ecg else None,
        "text": text,
        "present": torch.tensor([xray, ecg, bool(text.strip())]),
        "labels": torch.tensor(labels, dtype=torch.float32),
        "study_id": f"s{i}",
    }


def test_mixed_batch_zero_rows_and_mask() -> None:
    nan = float("nan")
    samples = [
        sample(0, True, True, "report a", [1.0, nan]),
        sample(1, False, True, "", [0.0, 1.0]),
        sample(2, True, False, "report c", [nan, nan]),
    ]
    b = collate_studies(samples)
    assert isinstance(b, Batch) and len(b) == 3
    assert b.xray.shape == (3, 1, 8, 8) and b.ecg.shape == (3, 12, 20)
    assert b.present.dtype == torch.bool
    assert b.present.tolist() == [[True, True, True], [False, True, False], [True, False, True]]
    assert torch.equal(b.xray[1], torch.zeros(1, 8, 8))
    assert torch.equal(b.ecg[2], torch.zeros(12, 20))
    assert torch.equal(b.xray[0], samples[0]["xray"])
    # every present row holds real data (the fixture offsets values by +1), never zeros
    assert (b.xray[b.present[:, 0]] >= 1.0).all() and (b.ecg[b.present[:, 1]] >= 1.0).all()
    assert b.text == ["report a", "", "report c"]
    assert b.study_ids == ["s0", "s1", "s2"]
    assert b.labels.shape == (3, 2) and torch.isnan(b.labels[2]).all()
    assert b.labels[1].tolist() == [0.0, 1.0]
    assert b.text_tokens is None


def test_present_mask_cannot_point_at_a_missing_tensor() -> None:
    s = sample(0, False, True, "x", [])
    s["present"] = torch.tensor([True, True, True])  # inconsistent input
    b = collate_studies([s, sample(1, True, True, "y", [])])
    assert b.present[0].tolist() == [False, True, True]


def test_tokenizer_fills_text_tokens() -> None:
    seen: list[list[str]] = []

    def tok(texts: list[str]) -> dict[str, torch.Tensor]:
        seen.append(list(texts))
        ids = torch.tensor([[len(t), 1] for t in texts])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    b = collate_studies([sample(0, True, True, "abc", []), sample(1, True, True, "", [])], tok)
    assert seen == [["abc", ""]]
    assert b.text_tokens is not None
    assert b.text_tokens["input_ids"][:, 0].tolist() == [3, 0]
    assert b.labels.shape == (2, 0)


def test_all_missing_uses_given_shape_or_empty() -> None:
    samples = [sample(0, False, True, "a", []), sample(1, False, True, "b", [])]
    b = collate_studies(samples, xray_shape=(1, 16, 16))
    assert b.xray.shape == (2, 1, 16, 16) and not b.xray.any()
    assert not b.present[:, 0].any()
    assert collate_studies(samples).xray.shape == (2, 1, 0, 0)
    collator = StudyCollator(image_size=16, ecg_length=20)
    assert collator(samples).xray.shape == (2, 1, 16, 16)
    only_xray = [sample(0, True, False, "a", [])]
    assert collator(only_xray).ecg.shape == (1, 12, 20)


def test_shape_mismatch_and_empty_batch_raise() -> None:
    a, b = sample(0, True, True, "a", []), sample(1, True, True, "b", [])
    b["ecg"] = torch.zeros(12, 21)
    with pytest.raises(ValueError, match="ecg shapes differ"):
        collate_studies([a, b])
    with pytest.raises(ValueError, match="empty"):
        collate_studies([])


def test_collator_pickles_and_batch_moves() -> None:
    collator = pickle.loads(pickle.dumps(StudyCollator(image_size=8, ecg_length=20)))
    b = collator([sample(0, True, True, "a", [1.0])])
    assert isinstance(b, PinnableBatch)
    moved = b.to("cpu")
    assert torch.equal(moved.ecg, b.ecg)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinning needs CUDA")
def test_pin_memory() -> None:
    b = collate_studies([sample(0, True, False, "a", [1.0])])
    pinned = b.pin_memory()
    assert pinned.xray.is_pinned() and pinned.present.is_pinned()
    assert torch.equal(pinned.xray, b.xray)


def test_per_modality_report_parts_reach_the_batch() -> None:
    import torch

    from datamodules.collate import collate_studies

    def sample(i: int, **extra: str) -> dict:
        return {
            "xray": None,
            "ecg": torch.zeros(12, 4),
            "text": f"combined {i}",
            "present": torch.tensor([False, True, True]),
            "labels": torch.zeros(2),
            "study_id": f"s{i}",
            **extra,
        }

    batch = collate_studies(
        [sample(0, text_xray="cardiomegaly", text_ecg="atrial fibrillation"), sample(1)],
        xray_shape=(1, 8, 8),
    )
    assert batch.text_by_modality == {
        "xray": ["cardiomegaly", ""],
        "ecg": ["atrial fibrillation", ""],
    }
    assert batch.to("cpu").text_by_modality == batch.text_by_modality
