"""ProtoECGNet configuration (defaults from ANCHORS.md §2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class ProtoConfig:
    """Prototype branches, loss weights and stage lengths.

    Defaults follow the paper: 5/18/7 prototypes per class for rhythm/morphology/global, partial
    prototypes of 3 feature steps, lambda_clst 0.004, lambda_sep 0.0004, lambda_div 250,
    lambda_cnrst 300, L1 1e-4 in the last-layer and fusion stages.

    Attributes:
        rhythm_backbone: registry name of the rhythm branch's 1D backbone.
        morphology_backbone: registry name of the morphology branch's 2D backbone.
        global_backbone: registry name of the global branch's 2D backbone.
        backbone_kwargs: config overrides passed to every backbone (e.g. a width).
        backbone_width: width passed as ``backbone_kwargs[backbone_width_key]`` unless None.
        backbone_width_key: the backbones' config field that sets the width.
        proto_dim: channels of the add-on output / prototypes (None: the backbone's channels).
        window_pool: pooling of window similarities in the forward pass (paper: mean).
        pool_topk: k of ``topk`` pooling.
        scaled_similarity_1d: also divide the rhythm branch's cosine by ``sqrt(D)`` (paper: no).
        add_on_activation: final activation of the add-on layers: ``sigmoid`` (paper) or
            ``none``. On synthetic PTB-XL the sigmoid (all features positive, all cosines
            bunched near 1) kept the joint stage near chance through the frozen classifier
            (rhythm branch test AUROC 0.65 after push); ``none`` reached 0.93 in 8 epochs.
        init_rhythm_from / init_morphology_from / init_global_from: optional local weights file
            (safetensors or state dict) of a contrastive ECG tower for that branch's backbone.
        epochs_pretrain: stage 1 BCE epochs (0 skips it).
        epochs_joint: stage 2 epochs (classifier frozen).
        epochs_last: stage 4 epochs (branch last layers + fusion on frozen similarity scores).
        lr_last: learning rate of stage 4.
        patience: early-stopping patience on validation macro AUROC (epochs).
        train_branch_last_layer: also train each branch's classifier in stage 4 (off-class L1).
        min_train_positives: drop labels with fewer training positives.
        highpass_hz: first-order Butterworth high-pass cut-off (None: off).
        standardize: ``global`` fits one mean/std on train (PTB-XL benchmark); ``none`` (paper).
        train_folds / val_folds / test_folds: PTB-XL ``strat_fold`` split.
        max_records: cap on records per split (quick runs; None = all).
        explain_top_k: prototypes shown per predicted label.
        bootstrap_samples: bootstrap resamples of the AUROC confidence interval.
        threshold_mode: ``val_f1`` tunes per-label thresholds on validation; ``fixed`` uses 0.5.
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
    backbone_width: int | None = 64
    epochs_pretrain: int = 5
    epochs_joint: int = 10
    epochs_last: int = 5
    lr: float = 1e-4
    weight_decay: float = 1.7e-4
    batch_size: int = 32
    rhythm_backbone: str = "ecg_resnet1d18"
    morphology_backbone: str = "ecg_resnet2d18_leadspan"
    global_backbone: str = "ecg_resnet2d18_leadspan"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    backbone_width_key: str = "width"
    proto_dim: int | None = None
    window_pool: Literal["mean", "topk", "max"] = "mean"
    pool_topk: int = 5
    scaled_similarity_1d: bool = False
    add_on_activation: Literal["sigmoid", "none"] = "sigmoid"
    init_rhythm_from: str | None = None
    init_morphology_from: str | None = None
    init_global_from: str | None = None
    lr_last: float = 1e-2
    patience: int = 10
    train_branch_last_layer: bool = True
    min_train_positives: int = 1
    highpass_hz: float | None = 0.5
    standardize: Literal["global", "none"] = "global"
    train_folds: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    val_folds: tuple[int, ...] = (9,)
    test_folds: tuple[int, ...] = (10,)
    max_records: int | None = None
    explain_top_k: int = 5
    bootstrap_samples: int = 100
    threshold_mode: Literal["val_f1", "fixed"] = "val_f1"

    def __post_init__(self) -> None:
        for k in ("rhythm_protos_per_class", "morphology_protos_per_class"):
            if getattr(self, k) < 1:
                raise ValueError(f"proto.{k}: must be >= 1")
        if self.global_protos_per_class < 1 or self.partial_length < 1:
            raise ValueError("proto.global_protos_per_class / partial_length: must be >= 1")
        for k in ("lambda_clst", "lambda_sep", "lambda_div", "lambda_cnrst", "lambda_l1"):
            if getattr(self, k) < 0:
                raise ValueError(f"proto.{k}: must be >= 0")
        for k in ("epochs_pretrain", "epochs_joint", "epochs_last"):
            if getattr(self, k) < 0:
                raise ValueError(f"proto.{k}: must be >= 0")
        if self.lr <= 0 or self.lr_last <= 0:
            raise ValueError("proto.lr / lr_last: must be positive")
        if self.batch_size < 1 or self.pool_topk < 1 or self.explain_top_k < 1:
            raise ValueError("proto.batch_size / pool_topk / explain_top_k: must be >= 1")
        if self.proto_dim is not None and self.proto_dim < 1:
            raise ValueError("proto.proto_dim: must be >= 1 or null")
        if self.backbone_width is not None and self.backbone_width < 1:
            raise ValueError("proto.backbone_width: must be >= 1 or null")
        if self.add_on_activation not in ("sigmoid", "none"):
            raise ValueError("proto.add_on_activation: must be sigmoid or none")
        if self.window_pool not in ("mean", "topk", "max"):
            raise ValueError("proto.window_pool: must be mean, topk or max")
        folds = (set(self.train_folds), set(self.val_folds), set(self.test_folds))
        if not all(folds) or folds[0] & folds[1] or folds[0] & folds[2] or folds[1] & folds[2]:
            raise ValueError("proto.train/val/test_folds: must be non-empty and disjoint")
        if self.max_records is not None and self.max_records < 1:
            raise ValueError("proto.max_records: must be >= 1 or null")
        if self.bootstrap_samples < 0:
            raise ValueError("proto.bootstrap_samples: must be >= 0")
        for k in ("init_rhythm_from", "init_morphology_from", "init_global_from"):
            v = getattr(self, k)
            if v and "://" in v:
                raise ValueError(f"proto.{k}: {v!r} looks like a URL; only local files load")

    def per_class(self, branch: str) -> int:
        """Prototypes per class of ``branch`` (rhythm, morphology, global)."""
        return int(getattr(self, f"{branch}_protos_per_class"))

    def backbone_name(self, branch: str) -> str:
        """Registry name of ``branch``'s backbone."""
        return str(getattr(self, f"{branch}_backbone"))

    def init_path(self, branch: str) -> str | None:
        """Optional contrastive-tower weights for ``branch``'s backbone."""
        value: str | None = getattr(self, f"init_{branch}_from")
        return value

    def encoder_kwargs(self) -> dict[str, Any]:
        """Keyword overrides for :func:`encoders.registry.create_encoder`."""
        kw = dict(self.backbone_kwargs)
        if self.backbone_width is not None:
            kw.setdefault(self.backbone_width_key, self.backbone_width)
        return kw
