"""ProtoECGNet configuration (defaults from ANCHORS.md §2)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProtoConfig:
    """Prototype branches, loss weights and stage lengths.

    Defaults follow the paper: 5/18/7 prototypes per class for rhythm/morphology/global, partial
    prototypes of 3 feature steps, lambda_clst 0.004, lambda_sep 0.0004, lambda_div 250,
    lambda_cnrst 300, L1 1e-4 in the last-layer and fusion stages.
    """

    rhythm_protos_per_class: int = 5
    morphology_protos_per_class: int = 18
    global_protos_per_class: int = 7
    partial_length: int = 3
    lambda_clst: float = 0.004
    lambda_sep: float = 0.0004
    lambda_div: float = 250.0
    lambda_cnrst: float = 300.0
    lambda_l1: float = 1e-4
    backbone_width: int = 64
    epochs_pretrain: int = 5
    epochs_joint: int = 10
    epochs_last: int = 5
    lr: float = 1e-4
    weight_decay: float = 1.7e-4
    batch_size: int = 32
