"""Tri-modal contrastive loss: masked, weighted, symmetric InfoNCE over modality pairs.

Improves on MoRE (arXiv 2410.16239, ANCHORS.md §1.2):

* three weighted pair terms, X-ray<->text, ECG<->text and X-ray<->ECG (weight 0 reproduces MoRE);
* each term uses only the rows where both modalities are present; a term with fewer than two
  such rows (over all ranks) is skipped, and the total is the weighted mean of the active terms,
  so a missing modality never becomes a zero-vector negative and never yields NaN;
* optional label-aware soft targets after MedCLIP: a row-softmax of label-vector similarity,
  mixed with the identity; rows without positive labels keep the identity target;
* under DDP every rank scores its local rows against the columns gathered from all ranks with
  gradients (:mod:`medclip.distributed`). Each rank returns ``world * sum(local row losses) / N``
  so the mean over ranks (what DDP does to gradients, and what ``sync_dist`` logs) equals the
  single-process loss on the concatenated batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from medclip.config import LossConfig
from medclip.distributed import gather_no_grad, gather_sizes, gather_with_grad, rank_and_world

#: ``(name, left key, right key)``; ``name`` is the :class:`LossConfig` weight field.
PAIRS: tuple[tuple[str, str, str], ...] = (
    ("xray_text", "xray", "text"),
    ("ecg_text", "ecg", "text"),
    ("xray_ecg", "xray", "ecg"),
)


@dataclass
class LossOutput:
    """Result of :class:`ContrastiveLoss`.

    Attributes:
        loss: scalar to back-propagate (this rank's share; its mean over ranks is the loss).
        terms: per active pair, this rank's share of the (unweighted) pair loss, detached.
        rows: per pair, the number of rows (over all ranks) where both modalities are present.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)


def label_soft_targets(
    row_labels: torch.Tensor,
    col_labels: torch.Tensor,
    diag: torch.Tensor,
    temperature: float = 1.0,
    identity_mix: float = 0.5,
) -> torch.Tensor:
    """MedCLIP-style soft targets from label vectors.

    Unknown labels (NaN) and negatives count as 0; similarity is the cosine of the resulting
    multi-hot vectors. Columns without any positive label get no soft mass, and rows without any
    positive label fall back to the identity.

    Args:
        row_labels: ``(n, L)`` labels of the query rows (1/0/NaN).
        col_labels: ``(N, L)`` labels of the candidate columns.
        diag: ``(n,)`` column index of each row's own pair.
        temperature: divides the cosine similarities before the row softmax.
        identity_mix: weight of the identity in ``mix * I + (1 - mix) * softmax``.

    Returns:
        ``(n, N)`` float32 targets, each row summing to 1.
    """
    r = torch.nan_to_num(row_labels.float(), nan=0.0).clamp(min=0.0)
    c = torch.nan_to_num(col_labels.float(), nan=0.0).clamp(min=0.0)
    r_has = r.sum(dim=1) > 0
    c_has = c.sum(dim=1) > 0
    sim = F.normalize(r, dim=1) @ F.normalize(c, dim=1).T / temperature
    sim = sim.masked_fill(~c_has[None, :], float("-inf"))
    sim = torch.where(r_has[:, None], sim, torch.zeros_like(sim))  # avoid all -inf rows
    soft = sim.softmax(dim=1)
    identity = F.one_hot(diag, num_classes=col_labels.shape[0]).float()
    mixed = identity_mix * identity + (1.0 - identity_mix) * soft
    return torch.where(r_has[:, None], mixed, identity)


def _cross_entropy_rows(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy ``(n,)`` for index targets ``(n,)`` or soft targets ``(n, N)``."""
    if targets.dim() == 1:
        return F.cross_entropy(logits, targets, reduction="none")
    return -(targets * logits.log_softmax(dim=1)).sum(dim=1)


class ContrastiveLoss(nn.Module):
    """Weighted symmetric InfoNCE over the modality pairs present in a batch.

    Args:
        cfg: pair weights, soft-target options and whether to gather across ranks.
    """

    def __init__(self, cfg: LossConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or LossConfig()

    def forward(
        self,
        embeddings: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        logit_scale: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> LossOutput:
        """Compute the loss.

        Args:
            embeddings: ``"xray"``, ``"ecg"``, ``"text"`` -> ``(B, E)`` L2-normalised rows.
                ``"text_xray"`` / ``"text_ecg"`` (if given) replace ``"text"`` in the X-ray/ECG
                pair (separate text towers or per-modality reports). Missing keys skip pairs.
            masks: same keys -> ``(B,)`` bool, True where that modality is present.
            logit_scale: scalar log of the inverse temperature (already clamped).
            labels: ``(B, L)`` labels (1/0/NaN) for soft targets; ignored when they are off.

        Returns:
            :class:`LossOutput`; ``loss`` is 0 (attached to ``logit_scale``) if no pair is active.
        """
        cfg = self.cfg
        gather = cfg.gather_with_grad
        rank, world = rank_and_world() if gather else (0, 1)
        scale = logit_scale.float().exp()
        use_soft = cfg.soft_targets and labels is not None and cfg.soft_target_identity_mix < 1.0
        # keep every gathered tensor attached to the graph so all ranks run the same backward
        anchor = logit_scale.float() * 0.0
        total = anchor
        weight_sum = 0.0
        out = LossOutput(loss=total)
        sizes: list[int] | None = None
        lab_all: torch.Tensor | None = None
        for name, left, right in PAIRS:
            weight = float(getattr(cfg, name))
            key_r = f"text_{left}" if right == "text" and f"text_{left}" in embeddings else right
            if weight == 0.0 or left not in embeddings or key_r not in embeddings:
                continue
            a = embeddings[left].float()
            b = embeddings[key_r].float()
            m = masks[left].bool() & masks[key_r].bool()
            if world > 1:
                if sizes is None:
                    sizes = gather_sizes(a.shape[0], a.device)
                a = a + anchor
                b = b + anchor
                a_all = gather_with_grad(a, sizes)
                b_all = gather_with_grad(b, sizes)
                m_all = gather_no_grad(m, sizes)
                offset = int(m_all[: sum(sizes[:rank])].sum().item())
            else:
                a_all, b_all, m_all, offset = a, b, m, 0
            n_global = int(m_all.sum().item())
            out.rows[name] = n_global
            if n_global < 2:
                continue
            a_rows, b_rows = a[m], b[m]
            a_cols, b_cols = a_all[m_all], b_all[m_all]
            n_local = a_rows.shape[0]
            diag = torch.arange(offset, offset + n_local, device=a.device)
            targets: torch.Tensor = diag
            if use_soft:
                assert labels is not None
                if lab_all is None:
                    lab_all = gather_no_grad(labels.float(), sizes) if world > 1 else labels.float()
                targets = label_soft_targets(
                    labels[m],
                    lab_all[m_all],
                    diag,
                    temperature=cfg.soft_target_temperature,
                    identity_mix=cfg.soft_target_identity_mix,
                )
            loss_ab = _cross_entropy_rows(scale * a_rows @ b_cols.T, targets)
            loss_ba = _cross_entropy_rows(scale * b_rows @ a_cols.T, targets)
            term = (loss_ab + loss_ba).sum() * (0.5 * world / n_global)
            total = total + weight * term
            weight_sum += weight
            out.terms[name] = term.detach()
        out.loss = total / weight_sum if weight_sum > 0 else total
        return out
