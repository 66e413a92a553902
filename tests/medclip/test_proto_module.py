"""ProtoECGNet LightningModules: per-step total loss, epoch-mean loss terms, whole-set val AUROC."""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from medclip.config import load_config
from medclip.metrics import auroc
from medclip.proto.losses import (
    ProtoLossWeights,
    jaccard_matrix,
    joint_loss,
    pos_weight_from_labels,
)
from medclip.proto.model import build_branch
from medclip.proto.module import BranchJointModule


def test_joint_module_logs_epoch_means_of_the_terms() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    classes = ("SR", "AFIB", "STACH")
    branch = build_branch("rhythm", load_config("tiny").proto, classes, 1000)
    rng = np.random.default_rng(0)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 12)]
    x = torch.randn(12, 12, 1000)
    weights = ProtoLossWeights()
    module = BranchJointModule(
        branch, pos_weight_from_labels(y), jaccard_matrix(y), weights, lr=0.0
    )
    # the terms the epoch mean must reproduce (lr 0: the weights do not move; eval-mode BN
    # would differ, so record them in train mode like the trainer does)
    branch.train()
    expected: dict[str, list[float]] = {}
    for i in range(0, 12, 4):
        out = branch(x[i : i + 4])
        terms = joint_loss(
            out.logits,
            out.similarity,
            torch.from_numpy(y[i : i + 4]),
            branch.prototype_layer.prototypes,
            branch.identity,
            weights,
            pos_weight=module.pos_weight,  # type: ignore[arg-type]
            jaccard=module.jaccard,  # type: ignore[arg-type]
        )
        for k, v in terms.as_floats().items():
            expected.setdefault(k, []).append(v)
    data = TensorDataset(x, torch.from_numpy(y))
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, DataLoader(data, batch_size=4), DataLoader(data, batch_size=6))
    m = trainer.callback_metrics
    for k in ("bce", "clst", "sep", "div", "cnrst"):
        assert float(m[f"train_{k}"]) == pytest.approx(np.mean(expected[k]), rel=1e-4, abs=1e-6)
    assert "train_total" not in m
    assert float(m["train_loss"]) == pytest.approx(expected["total"][-1], rel=1e-4)  # last step
    # validation: one AUROC over all 12 records (2 batches), not a mean of batch AUROCs
    branch.eval()
    with torch.no_grad():
        logits = branch(x).logits.numpy()
    assert float(m["val_auroc"]) == pytest.approx(auroc(y, logits).macro, rel=1e-5)
