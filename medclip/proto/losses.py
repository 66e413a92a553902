"""ProtoECGNet losses (arXiv 2504.08713, ANCHORS.md §2.3).

Notation: ``S`` is the ``(B, P)`` similarity matrix, ``Y`` the ``(B, C)`` multi-hot targets and
``A`` the ``(P, C)`` one-hot prototype-to-class map. Larger similarity = closer.

Deliberate choices:
    * ``pos_weight`` is ``(N - c) / c`` per class (the reference code divides by the sum of label
      counts instead).
    * The contrastive term keeps the official sign: minimising it pulls prototypes of co-occurring
      classes together and pushes the others apart (one reimplementation flips it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ProtoLossWeights:
    """Weights of the prototype terms (paper defaults)."""

    clst: float = 0.004
    sep: float = 0.0004
    div: float = 250.0
    cnrst: float = 300.0


def pos_weight_from_labels(
    labels: np.ndarray | torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """``(C,)`` BCE ``pos_weight = (N - c) / c`` from ``(N, C)`` training labels.

    Classes without positives get ``max_weight`` (they contribute no positive term anyway).
    """
    y = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    n = float(y.shape[0])
    c = y.sum(dim=0)
    w = (n - c) / c.clamp(min=1.0)
    return w.clamp(max=max_weight)


def weighted_bce(
    logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean BCE-with-logits over ``(B, C)``, positive terms weighted by ``pos_weight`` ``(C,)``."""
    return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)


def _positive_mask(targets: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """``(B, P)`` True where prototype p's class is positive for sample b."""
    return (targets @ identity.t().to(targets)) > 0


def clustering_loss(
    sim: torch.Tensor, targets: torch.Tensor, identity: torch.Tensor
) -> torch.Tensor:
    """``-mean_b max_{p in pos(b)} S_bp`` over samples with at least one positive class.

    Minimising it pulls each sample towards (one of) its classes' prototypes.
    """
    pos = _positive_mask(targets, identity)
    has = pos.any(dim=1)
    if not bool(has.any()):
        return sim.sum() * 0.0
    masked = sim.masked_fill(~pos, float("-inf"))
    return -masked.max(dim=1).values[has].mean()


def separation_loss(
    sim: torch.Tensor, targets: torch.Tensor, identity: torch.Tensor
) -> torch.Tensor:
    """``mean_b max_{p in neg(b)} S_bp`` over samples with at least one negative prototype.

    Minimising it pushes each sample away from the closest prototype of a class it lacks.
    """
    neg = ~_positive_mask(targets, identity)
    has = neg.any(dim=1)
    if not bool(has.any()):
        return sim.sum() * 0.0
    masked = sim.masked_fill(~neg, float("-inf"))
    return masked.max(dim=1).values[has].mean()


def _normalised_flat(prototypes: torch.Tensor) -> torch.Tensor:
    return F.normalize(prototypes.reshape(prototypes.shape[0], -1), dim=1, eps=1e-8)


def diversity_loss(prototypes: torch.Tensor) -> torch.Tensor:
    """``||P_hat P_hat^T - I||_F^2 / P^2`` over L2-normalised flattened prototypes ``(P, ...)``.

    Zero when prototypes are mutually orthogonal; penalises redundant prototypes.
    """
    p_hat = _normalised_flat(prototypes)
    P = p_hat.shape[0]
    gram = p_hat @ p_hat.t()
    eye = torch.eye(P, device=gram.device, dtype=gram.dtype)
    return ((gram - eye) ** 2).sum() / float(P * P)


def jaccard_matrix(labels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(C, C)`` Jaccard co-occurrence ``|A and B| / |A or B|`` of ``(N, C)`` binary labels.

    The diagonal is 1; pairs that never occur (empty union) are 0.
    """
    y = torch.as_tensor(np.asarray(labels), dtype=torch.float64)
    y = (y > 0).to(torch.float64)
    inter = y.t() @ y
    count = y.sum(dim=0)
    union = count[:, None] + count[None, :] - inter
    jac = torch.where(union > 0, inter / union.clamp(min=1.0), torch.zeros_like(inter))
    jac.fill_diagonal_(1.0)
    return jac.to(torch.float32)


def contrastive_prototype_loss(
    prototypes: torch.Tensor, identity: torch.Tensor, jaccard: torch.Tensor
) -> torch.Tensor:
    """Label-co-occurrence contrastive term.

    ``Sim = P_hat P_hat^T``, ``M+ = A J A^T``, ``M- = 1 - M+``;
    ``L = -(sum(Sim * M+) / sum(M+) - sum(Sim * M-) / sum(M-)) / sqrt(P)``.

    Args:
        prototypes: ``(P, ...)``.
        identity: ``(P, C)`` one-hot prototype-to-class map.
        jaccard: ``(C, C)`` co-occurrence with unit diagonal.
    """
    p_hat = _normalised_flat(prototypes)
    P = p_hat.shape[0]
    sim = p_hat @ p_hat.t()
    A = identity.to(sim)
    m_pos = A @ jaccard.to(sim) @ A.t()
    m_neg = 1.0 - m_pos
    pos_term = (sim * m_pos).sum() / m_pos.sum().clamp(min=1e-8)
    neg_term = (sim * m_neg).sum() / m_neg.sum().clamp(min=1e-8)
    return -(pos_term - neg_term) / math.sqrt(P)


def l1_last_layer(weight: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
    """L1 norm of a ``(C, P)`` class-connection weight.

    With ``identity`` ``(P, C)`` only off-class connections count (branch classifier); without it,
    all weights count (fusion layer).
    """
    if identity is None:
        return weight.abs().sum()
    mask = 1.0 - identity.t().to(weight)
    return (weight * mask).abs().sum()


@dataclass
class ProtoLossTerms:
    """The terms of one joint-stage loss evaluation (each a scalar tensor)."""

    total: torch.Tensor
    bce: torch.Tensor
    clst: torch.Tensor
    sep: torch.Tensor
    div: torch.Tensor
    cnrst: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        """Detached floats for logging."""
        return {k: float(v.detach()) for k, v in self.__dict__.items()}


def joint_loss(
    logits: torch.Tensor,
    sim: torch.Tensor,
    targets: torch.Tensor,
    prototypes: torch.Tensor,
    identity: torch.Tensor,
    weights: ProtoLossWeights,
    pos_weight: torch.Tensor | None = None,
    jaccard: torch.Tensor | None = None,
) -> ProtoLossTerms:
    """``BCE + l_clst*L_clst + l_sep*L_sep + l_div*L_div + l_cnrst*L_cnrst`` for one branch.

    Args:
        logits: ``(B, C)``; sim: ``(B, P)``; targets: ``(B, C)``; prototypes: ``(P, D, L)``;
        identity: ``(P, C)``; jaccard: ``(C, C)`` or None (term skipped).
    """
    bce = weighted_bce(logits, targets, pos_weight)
    clst = clustering_loss(sim, targets, identity)
    sep = separation_loss(sim, targets, identity)
    div = diversity_loss(prototypes)
    cnrst = (
        contrastive_prototype_loss(prototypes, identity, jaccard)
        if jaccard is not None
        else prototypes.sum() * 0.0
    )
    total = (
        bce + weights.clst * clst + weights.sep * sep + weights.div * div + weights.cnrst * cnrst
    )
    return ProtoLossTerms(total, bce, clst, sep, div, cnrst)
