"""LightningModules for the ProtoECGNet training stages.

* :class:`BranchPretrainModule` (stage 1): backbone + a temporary linear head, weighted BCE.
* :class:`BranchJointModule` (stage 2): backbone, add-on layers and prototypes with the
  classifier frozen at its ``+1/-0.5`` init; BCE + clustering + separation + diversity +
  contrastive prototype loss.
* :class:`FusionModule` (stage 4): on frozen similarity scores, the fusion layer (BCE + L1 on all
  weights) and optionally each branch classifier (BCE + L1 on off-class weights).

Validation computes macro AUROC once over the whole validation set (never a mean of batch AUROCs)
and logs it as ``val_auroc`` for early stopping and checkpoint selection.

Logging cost: each ``self.log`` call costs Lightning about 1.5 ms on a CPU, which was 7 % of a
``small`` fit when the five joint-loss terms were logged every step. So only the total loss
is logged per step (progress bar); the individual terms are summed as detached tensors (no
``.item()`` device sync per step) and logged once per epoch as epoch means (``train_<term>``).
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from medclip.metrics import auroc
from medclip.proto.losses import (
    ProtoLossWeights,
    joint_loss,
    l1_last_layer,
    weighted_bce,
)
from medclip.proto.model import ProtoBranch, ProtoECGNet


class _ValAurocMixin(L.LightningModule):
    """Collects validation logits/targets and logs their macro AUROC at epoch end."""

    def __init__(self) -> None:
        super().__init__()
        self._val_logits: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []
        self._term_sums: dict[str, torch.Tensor] = {}
        self._term_steps = 0

    def _accumulate(self, terms: dict[str, torch.Tensor]) -> None:
        """Add detached scalar loss terms to this epoch's sums (logged as means at epoch end)."""
        for k, v in terms.items():
            v = v.detach()
            self._term_sums[k] = self._term_sums[k] + v if k in self._term_sums else v
        self._term_steps += 1

    def on_train_epoch_start(self) -> None:
        self._term_sums = {}
        self._term_steps = 0

    def on_train_epoch_end(self) -> None:
        if self._term_steps:
            n = self._term_steps
            self.log_dict({f"train_{k}": v / n for k, v in self._term_sums.items()})
        self._term_sums = {}
        self._term_steps = 0

    def _collect(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self._val_logits.append(logits.detach().float().cpu())
        self._val_targets.append(targets.detach().float().cpu())

    def on_validation_epoch_start(self) -> None:
        self._val_logits.clear()
        self._val_targets.clear()

    def on_validation_epoch_end(self) -> None:
        if not self._val_logits:
            return
        y = torch.cat(self._val_targets).numpy()
        s = torch.cat(self._val_logits).numpy()
        pos = y.sum(axis=0)
        both = (pos > 0) & (pos < y.shape[0])  # single-class labels have no AUROC
        score = float(auroc(y[:, both], s[:, both]).macro) if both.any() else 0.5
        self.log("val_auroc", score, prog_bar=True)
        self._val_logits.clear()
        self._val_targets.clear()


class BranchPretrainModule(_ValAurocMixin):
    """Stage 1: BCE pre-training of a branch's backbone through a temporary linear head.

    Batches are ``(x (B, 12, T), y (B, C))``.
    """

    def __init__(
        self,
        branch: ProtoBranch,
        pos_weight: torch.Tensor,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.branch = branch
        self.head = nn.Linear(branch.backbone_channels, len(branch.classes))
        self.register_buffer("pos_weight", pos_weight.float())
        self.lr = lr
        self.weight_decay = weight_decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 12, T)`` -> ``(B, C)`` logits."""
        out: torch.Tensor = self.head(self.branch.backbone_features(x).mean(dim=-1))
        return out

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        loss = weighted_bce(self(x), y, self.pos_weight)  # type: ignore[arg-type]
        self.log("train_bce", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self._collect(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = list(self.branch.backbone.parameters()) + list(self.head.parameters())
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)


class BranchJointModule(_ValAurocMixin):
    """Stage 2: joint training of backbone, add-on and prototypes; classifier frozen.

    Args:
        branch: the branch (its classifier keeps the ``+1/-0.5`` init).
        pos_weight: ``(C,)`` BCE positive weights.
        jaccard: ``(C, C)`` train-set Jaccard co-occurrence (None skips the contrastive term).
        weights: loss weights.
    """

    def __init__(
        self,
        branch: ProtoBranch,
        pos_weight: torch.Tensor,
        jaccard: torch.Tensor | None,
        weights: ProtoLossWeights,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.branch = branch
        for p in branch.classifier.parameters():
            p.requires_grad_(False)
        self.register_buffer("pos_weight", pos_weight.float())
        self.register_buffer("jaccard", jaccard.float() if jaccard is not None else torch.zeros(0))
        self.weights = weights
        self.lr = lr
        self.weight_decay = weight_decay

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        out = self.branch(x)
        jac: torch.Tensor = self.jaccard  # type: ignore[assignment]
        terms = joint_loss(
            out.logits,
            out.similarity,
            y,
            self.branch.prototype_layer.prototypes,
            self.branch.identity,
            self.weights,
            pos_weight=self.pos_weight,  # type: ignore[arg-type]
            jaccard=jac if jac.numel() else None,
        )
        self.log("train_loss", terms.total, prog_bar=True)
        self._accumulate({k: v for k, v in vars(terms).items() if k != "total"})
        return terms.total

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self._collect(self.branch(x).logits, y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        b = self.branch
        params = (
            list(b.backbone.parameters())
            + list(b.add_on.parameters())
            + list(b.prototype_layer.parameters())
        )
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)


class FusionModule(_ValAurocMixin):
    """Stage 4: fusion layer (and optionally branch classifiers) on frozen similarities.

    Batches are ``(sim (B, sum P), y (B, sum C))`` with raw similarities and ``y`` in the model's
    label order. The model's similarity statistics are set from ``sim_mean`` / ``sim_std`` (train
    split) before training, so the fusion layer sees standardised similarities.

    Args:
        model: the network; only ``model.fusion`` (and the branch classifiers when
            ``train_branch_classifiers``) are trained.
        pos_weight: ``(sum C,)`` BCE positive weights of the fused labels.
        sim_mean / sim_std: ``(sum P,)`` train statistics of the similarities.
        lambda_l1: L1 weight (all fusion weights; off-class branch-classifier weights).
    """

    def __init__(
        self,
        model: ProtoECGNet,
        pos_weight: torch.Tensor,
        sim_mean: torch.Tensor,
        sim_std: torch.Tensor,
        lambda_l1: float = 1e-4,
        lr: float = 1e-3,
        train_branch_classifiers: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        model.set_similarity_stats(sim_mean.float(), sim_std.float())
        self.register_buffer("pos_weight", pos_weight.float())
        self.lambda_l1 = lambda_l1
        self.lr = lr
        self.train_branch_classifiers = train_branch_classifiers
        for p in model.parameters():
            p.requires_grad_(False)
        for p in self._trainable():
            p.requires_grad_(True)
        self._pslices = model.prototype_slices()
        self._lslices = model.label_slices()

    def _trainable(self) -> list[nn.Parameter]:
        params = list(self.model.fusion.parameters())
        if self.train_branch_classifiers:
            for n in self.model.branch_names:
                params += list(self.model.branch(n).classifier.parameters())
        return params

    def forward(self, sim: torch.Tensor) -> torch.Tensor:
        """``(B, sum P)`` raw similarities -> ``(B, sum C)`` fused logits."""
        return self.model.fuse(sim)

    def _branch_terms(self, sim: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = sim.new_zeros(())
        for n in self.model.branch_names:
            b = self.model.branch(n)
            yb = y[:, self._lslices[n]]
            rows = yb.sum(dim=1) > 0  # records without a label in the branch are left out
            if rows.any():
                logits = b.classifier(sim[rows][:, self._pslices[n]])
                pw = self.pos_weight[self._lslices[n]]  # type: ignore[index]
                total = total + weighted_bce(logits, yb[rows], pw)
            total = total + self.lambda_l1 * l1_last_layer(b.classifier.weight, b.identity)
        return total

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        sim, y = batch
        bce = weighted_bce(self(sim), y, self.pos_weight)  # type: ignore[arg-type]
        loss = bce + self.lambda_l1 * l1_last_layer(self.model.fusion.weight)
        if self.train_branch_classifiers:
            loss = loss + self._branch_terms(sim, y)
        self.log("train_loss", loss, prog_bar=True)
        self._accumulate({"fused_bce": bce})
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        sim, y = batch
        self._collect(self(sim), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self._trainable(), lr=self.lr)
