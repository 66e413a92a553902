"""ProtoECGNet loss terms against small hand-computed cases, and their signs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medclip.proto.losses import (
    ProtoLossWeights,
    clustering_loss,
    contrastive_prototype_loss,
    diversity_loss,
    jaccard_matrix,
    joint_loss,
    l1_last_layer,
    pos_weight_from_labels,
    separation_loss,
    weighted_bce,
)

# 4 prototypes: 0, 1 -> class 0; 2, 3 -> class 1
IDENT = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
SIM = torch.tensor([[0.1, 0.5, 0.2, 0.9], [0.3, 0.2, 0.8, 0.1]])
TARGETS = torch.tensor([[1.0, 0.0], [1.0, 1.0]])


def test_pos_weight_is_negatives_over_positives() -> None:
    y = np.array([[1, 0], [1, 1], [0, 0], [1, 0]])
    assert pos_weight_from_labels(y).tolist() == pytest.approx([1 / 3, 3.0])


def test_weighted_bce_matches_formula() -> None:
    logits = torch.tensor([[0.2, -1.0]])
    y = torch.tensor([[1.0, 0.0]])
    pw = torch.tensor([3.0, 2.0])
    sig = torch.sigmoid(logits)
    manual = -(3.0 * torch.log(sig[0, 0]) + torch.log(1 - sig[0, 1])) / 2
    assert float(weighted_bce(logits, y, pw)) == pytest.approx(float(manual), rel=1e-6)


def test_clustering_takes_the_closest_positive_prototype() -> None:
    # sample 0: positives {0, 1} -> 0.5; sample 1: all positive -> 0.8
    assert float(clustering_loss(SIM, TARGETS, IDENT)) == pytest.approx(-(0.5 + 0.8) / 2)
    closer = SIM.clone()
    closer[0, 1] = 0.7  # more similar to an own-class prototype -> lower loss
    assert float(clustering_loss(closer, TARGETS, IDENT)) < float(
        clustering_loss(SIM, TARGETS, IDENT)
    )


def test_separation_takes_the_closest_negative_prototype() -> None:
    # sample 0: negatives {2, 3} -> 0.9; sample 1 has no negative prototype and is skipped
    assert float(separation_loss(SIM, TARGETS, IDENT)) == pytest.approx(0.9)
    closer = SIM.clone()
    closer[0, 3] = 0.95  # more similar to a wrong-class prototype -> higher loss
    assert float(separation_loss(closer, TARGETS, IDENT)) > 0.9


def test_diversity_penalises_duplicate_prototypes() -> None:
    ortho = torch.eye(3).reshape(3, 3, 1)
    assert float(diversity_loss(ortho)) == pytest.approx(0.0, abs=1e-7)
    dup = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 5.0]]).reshape(3, 2, 1)
    # normalised rows e1, e1, e2: off-diagonal ones at (0,1), (1,0) -> 2 / 3^2
    assert float(diversity_loss(dup)) == pytest.approx(2 / 9, rel=1e-6)


def test_jaccard_co_occurrence() -> None:
    y = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    jac = jaccard_matrix(y)
    expected = torch.tensor(
        [
            [1.0, 1 / 3, 0.0, 0.0],
            [1 / 3, 1.0, 0.5, 0.0],
            [0.0, 0.5, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],  # a class never seen: only its diagonal
        ]
    )
    assert torch.allclose(jac, expected, atol=1e-6)


def test_contrastive_loss_hand_case() -> None:
    # 2 classes, 1 orthogonal prototype each: Sim = I, M+ = J, M- = 1 - J
    protos = torch.eye(2).reshape(2, 2, 1)
    j = 0.5
    jac = torch.tensor([[1.0, j], [j, 1.0]])
    expected = -(2.0 / (2 + 2 * j) - 0.0) / math.sqrt(2)
    got = contrastive_prototype_loss(protos, torch.eye(2), jac)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_contrastive_loss_pulls_co_occurring_prototypes_together() -> None:
    ident = torch.eye(3)
    jac = torch.tensor([[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0.0, 0.0, 1.0]])
    base = torch.eye(3).reshape(3, 3, 1)
    loss0 = float(contrastive_prototype_loss(base, ident, jac))
    # move p1 (class 1, co-occurs with class 0) towards p0: loss goes down
    pulled = base.clone()
    pulled[1, 0, 0] = 0.5
    assert float(contrastive_prototype_loss(pulled, ident, jac)) < loss0
    # move p2 (class 2, never with class 0) towards p0: loss goes up
    pushed = base.clone()
    pushed[2, 0, 0] = 0.5
    assert float(contrastive_prototype_loss(pushed, ident, jac)) > loss0
    # gradient descent on the loss raises the cosine of the co-occurring pair
    p = base.clone().requires_grad_(True)
    contrastive_prototype_loss(p, ident, jac).backward()
    assert p.grad is not None
    stepped = (base - 0.1 * p.grad).reshape(3, 3)
    stepped = torch.nn.functional.normalize(stepped, dim=1)
    assert float(stepped[0] @ stepped[1]) > float(stepped[0] @ stepped[2])


def test_l1_off_class_for_branch_all_weights_for_fusion() -> None:
    w = torch.tensor([[1.0, 1.0, -0.5, -0.5], [-0.5, -0.5, 1.0, 1.0]])
    assert float(l1_last_layer(w, IDENT)) == pytest.approx(2.0)
    assert float(l1_last_layer(w)) == pytest.approx(6.0)


def test_joint_loss_is_the_weighted_sum() -> None:
    torch.manual_seed(0)
    protos = torch.rand(4, 3, 2)
    logits = torch.randn(2, 2)
    jac = torch.tensor([[1.0, 0.3], [0.3, 1.0]])
    w = ProtoLossWeights()
    assert (w.clst, w.sep, w.div, w.cnrst) == (0.004, 0.0004, 250.0, 300.0)
    terms = joint_loss(logits, SIM, TARGETS, protos, IDENT, w, torch.ones(2), jac)
    manual = (
        weighted_bce(logits, TARGETS, torch.ones(2))
        + 0.004 * clustering_loss(SIM, TARGETS, IDENT)
        + 0.0004 * separation_loss(SIM, TARGETS, IDENT)
        + 250.0 * diversity_loss(protos)
        + 300.0 * contrastive_prototype_loss(protos, IDENT, jac)
    )
    assert float(terms.total) == pytest.approx(float(manual), rel=1e-6)
    assert set(terms.as_floats()) == {"total", "bce", "clst", "sep", "div", "cnrst"}
    no_jac = joint_loss(logits, SIM, TARGETS, protos, IDENT, w, None, None)
    assert float(no_jac.cnrst) == 0.0
