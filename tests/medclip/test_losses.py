"""Masked tri-modal InfoNCE and label-aware soft targets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medclip.config import LossConfig
from medclip.losses import ContrastiveLoss, label_soft_targets


def _emb(b: int, e: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: F.normalize(torch.randn(b, e, generator=g), dim=1) for k in ("xray", "ecg", "text")}


def _masks(present: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"xray": present[:, 0], "ecg": present[:, 1], "text": present[:, 2]}


def _clip_reference(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    logits = scale * a @ b.T
    target = torch.arange(a.shape[0])
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def test_full_batch_matches_textbook_clip_loss() -> None:
    emb = _emb(6)
    present = torch.ones(6, 3, dtype=torch.bool)
    ls = torch.tensor(math.log(10.0))
    out = ContrastiveLoss(LossConfig(xray_text=1.0, ecg_text=0.0, xray_ecg=0.0))(
        emb, _masks(present), ls
    )
    ref = _clip_reference(emb["xray"], emb["text"], 10.0)
    assert torch.allclose(out.loss, ref, atol=1e-6)
    assert set(out.terms) == {"xray_text"}


def test_weighted_mean_over_active_terms() -> None:
    emb = _emb(5)
    present = torch.ones(5, 3, dtype=torch.bool)
    ls = torch.tensor(math.log(5.0))
    out = ContrastiveLoss(LossConfig(xray_text=1.0, ecg_text=2.0, xray_ecg=1.0))(
        emb, _masks(present), ls
    )
    xt = _clip_reference(emb["xray"], emb["text"], 5.0)
    et = _clip_reference(emb["ecg"], emb["text"], 5.0)
    xe = _clip_reference(emb["xray"], emb["ecg"], 5.0)
    assert torch.allclose(out.loss, (xt + 2 * et + xe) / 4, atol=1e-6)


def test_missing_rows_are_masked_not_zero_negatives() -> None:
    emb = _emb(6)
    present = torch.ones(6, 3, dtype=torch.bool)
    present[4:, 0] = False  # two studies without X-ray
    ls = torch.tensor(math.log(10.0))
    cfg = LossConfig(xray_text=1.0, ecg_text=0.0, xray_ecg=0.0)
    emb["xray"] = emb["xray"].clone()
    emb["xray"][4:] = 0.0  # what a naive zero-fill would give
    out = ContrastiveLoss(cfg)(emb, _masks(present), ls)
    ref = _clip_reference(emb["xray"][:4], emb["text"][:4], 10.0)
    assert torch.allclose(out.loss, ref, atol=1e-6)
    assert out.rows["xray_text"] == 4


def test_pair_with_fewer_than_two_rows_contributes_nothing() -> None:
    emb = _emb(4)
    present = torch.ones(4, 3, dtype=torch.bool)
    present[1:, 1] = False  # ECG only in row 0 -> ecg_text and xray_ecg inactive
    ls = torch.tensor(math.log(10.0), requires_grad=True)
    out = ContrastiveLoss(LossConfig())(emb, _masks(present), ls)
    assert set(out.terms) == {"xray_text"}
    assert torch.allclose(out.loss, _clip_reference(emb["xray"], emb["text"], 10.0), atol=1e-6)


def test_no_active_pair_is_zero_not_nan_and_backpropagates() -> None:
    emb = _emb(3)
    present = torch.zeros(3, 3, dtype=torch.bool)
    present[0] = True
    ls = torch.tensor(math.log(10.0), requires_grad=True)
    out = ContrastiveLoss(LossConfig())(emb, _masks(present), ls)
    assert out.loss.item() == 0.0 and not torch.isnan(out.loss)
    out.loss.backward()
    assert ls.grad is not None and torch.isfinite(ls.grad).all()


def test_gradient_reaches_logit_scale() -> None:
    emb = _emb(4)
    ls = torch.tensor(math.log(10.0), requires_grad=True)
    out = ContrastiveLoss(LossConfig())(emb, _masks(torch.ones(4, 3, dtype=torch.bool)), ls)
    out.loss.backward()
    assert ls.grad is not None and ls.grad.abs().item() > 0


def test_separate_text_embeddings_per_pair() -> None:
    emb = _emb(4)
    g = torch.Generator().manual_seed(3)
    emb["text_ecg"] = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    masks = _masks(torch.ones(4, 3, dtype=torch.bool))
    masks["text_ecg"] = torch.ones(4, dtype=torch.bool)
    ls = torch.tensor(0.0)
    out = ContrastiveLoss(LossConfig(xray_text=0.0, ecg_text=1.0, xray_ecg=0.0))(emb, masks, ls)
    assert torch.allclose(out.loss, _clip_reference(emb["ecg"], emb["text_ecg"], 1.0), atol=1e-6)


def test_soft_targets_rows_sum_to_one_and_label_free_rows_are_identity() -> None:
    labels = torch.tensor(
        [[1.0, 0.0, float("nan")], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [float("nan")] * 3]
    )
    t = label_soft_targets(labels, labels, torch.arange(4), temperature=0.1, identity_mix=0.5)
    assert torch.allclose(t.sum(dim=1), torch.ones(4))
    assert torch.equal(t[3], F.one_hot(torch.tensor(3), 4).float())  # label-free row
    assert t[0, 1] > 0.2  # shares a finding with row 1 -> not a pure negative
    assert t[0, 2] < 1e-3 and t[0, 3] == 0.0  # unrelated / label-free column
    assert torch.isfinite(t).all()


def test_soft_targets_stop_pushing_apart_studies_that_share_findings() -> None:
    # rows 0 and 1 share a label. Hard targets prefer them far apart (B); label-aware targets
    # prefer them close (A), since they are not true negatives.
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    close = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.99, 0.1, 0.0], [0.0, 0.0, 1.0]]), dim=1)
    far = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    masks = {k: torch.ones(3, dtype=torch.bool) for k in ("xray", "text")}
    ls = torch.tensor(math.log(20.0))
    hard_fn = ContrastiveLoss(LossConfig(ecg_text=0, xray_ecg=0))
    soft_cfg = LossConfig(ecg_text=0, xray_ecg=0, soft_targets=True, soft_target_temperature=0.1)
    soft_fn = ContrastiveLoss(soft_cfg)

    def run(fn: ContrastiveLoss, e: torch.Tensor) -> float:
        return float(fn({"xray": e, "text": e.clone()}, masks, ls, labels).loss)

    assert run(hard_fn, far) < run(hard_fn, close)
    assert run(soft_fn, close) < run(soft_fn, far)


@pytest.mark.parametrize("mix", [0.0, 0.3, 1.0])
def test_soft_targets_with_identical_labels_everywhere_stay_finite(mix: float) -> None:
    emb = _emb(4)
    masks = _masks(torch.ones(4, 3, dtype=torch.bool))
    labels = torch.ones(4, 2)
    ls = torch.tensor(math.log(10.0), requires_grad=True)
    out = ContrastiveLoss(LossConfig(soft_targets=True, soft_target_identity_mix=mix))(
        emb, masks, ls, labels
    )
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(ls.grad).all()  # type: ignore[arg-type]
