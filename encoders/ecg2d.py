"""Lead-spanning 2D ResNet over an ECG drawn as a ``1 x leads x T`` image.

ProtoECGNet's morphology/global backbone (arXiv 2504.08713, §2.1): a ResNet-18 whose first conv
``Conv2d(1, 64, (12, 7), stride (1, 2), padding (0, 3))`` spans all 12 leads, so every later
feature map has height 1: ``(B, 1, 12, 1000) -> (B, 512, 1, 32)`` (one step ~0.31 s at 100 Hz).
:meth:`Ecg2D.forward_features` keeps that map (no average pool) for time-local prototypes;
:meth:`Ecg2D.forward` pools it to ``(B, 512)``. Deviation: the width and blocks per stage are
configurable, and weights are initialised from scratch (ProtoECGNet's "pretrained" conv1 is
random anyway).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from encoders.ecg1d import EcgInputConfig
from encoders.registry import register_encoder
from encoders.weights import LoadReport, load_pretrained

logger = logging.getLogger(__name__)

_POOLS: tuple[str, ...] = ("avg", "max")


@dataclass(frozen=True)
class LeadSpanResNet2dConfig(EcgInputConfig):
    """Config of :class:`Ecg2D`.

    Attributes:
        layers: BasicBlocks per stage (ResNet-18: ``(2, 2, 2, 2)``); stage ``i`` has
            ``width * 2**i`` channels.
        width: channels of the lead-spanning stem conv and the first stage (64).
        stem_kernel_t: time extent of the stem conv (7); its lead extent is ``in_leads``.
        pool: pooling of :meth:`Ecg2D.forward`, ``"avg"`` or ``"max"`` over time.
    """

    layers: tuple[int, ...] = (2, 2, 2, 2)
    width: int = 64
    stem_kernel_t: int = 7
    pool: str = "avg"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "layers", tuple(self.layers))  # YAML gives lists
        if len(self.layers) < 1 or any(n < 1 for n in self.layers):
            raise ValueError(f"layers: need >= 1 stage of >= 1 block each, got {self.layers}")
        if self.width < 1:
            raise ValueError(f"width: must be positive, got {self.width}")
        if self.stem_kernel_t < 1 or self.stem_kernel_t % 2 == 0:
            raise ValueError(f"stem_kernel_t: must be positive and odd, got {self.stem_kernel_t}")
        if self.pool not in _POOLS:
            raise ValueError(f"pool: choose one of {_POOLS}, got {self.pool!r}")


class BasicBlock2d(nn.Module):
    """Two 3x3 convs with BN; 1x1 projection shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, c_in, 1, T) -> (B, c_out, 1, ceil(T / stride))``."""
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class Ecg2D(nn.Module):
    """Lead-spanning ResNet: ``forward(x: (B, 12, T) or (B, 1, 12, T)) -> (B, output_dim)``.

    Attributes:
        output_dim: channels of the last stage (``width * 2**(S-1)``, 512 for ResNet-18).
        input_spec: fs (100 Hz), length (1000) and canonical lead order.
    """

    def __init__(self, cfg: LeadSpanResNet2dConfig) -> None:
        super().__init__()
        self.config = cfg
        w, k = cfg.width, cfg.stem_kernel_t
        self.conv1 = nn.Conv2d(
            1, w, (cfg.in_leads, k), stride=(1, 2), padding=(0, k // 2), bias=False
        )
        self.bn1 = nn.BatchNorm2d(w)
        self.act = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages: list[nn.Module] = []
        c_in = w
        for i, n in enumerate(cfg.layers):
            c_out = w * 2**i
            stages.append(
                nn.Sequential(
                    *[
                        BasicBlock2d(c_in if j == 0 else c_out, c_out, 2 if i > 0 and j == 0 else 1)
                        for j in range(n)
                    ]
                )
            )
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.output_dim: int = c_in
        self.input_spec = cfg.input_spec()
        self.grad_checkpointing = cfg.grad_checkpointing
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if cfg.pretrained_path:
            self.load_weights(cfg.pretrained_path, strict=cfg.pretrained_strict)

    def _as_image(self, x: torch.Tensor) -> torch.Tensor:
        leads = self.config.in_leads
        if x.ndim == 3 and x.shape[1] == leads:
            return x.unsqueeze(1)
        if x.ndim == 4 and x.shape[1] == 1 and x.shape[2] == leads:
            return x
        raise ValueError(
            f"Ecg2D expects (B, {leads}, T) or (B, 1, {leads}, T) signals, got {tuple(x.shape)}"
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 12, T)`` or ``(B, 1, 12, T)`` -> ``(B, output_dim, 1, T')`` (T' = 32 for 1000)."""
        x = self.maxpool(self.act(self.bn1(self.conv1(self._as_image(x)))))
        for stage in self.stages:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 12, T)`` or ``(B, 1, 12, T)`` -> ``(B, output_dim)`` pooled over time."""
        feats = self.forward_features(x).flatten(2)
        return feats.amax(dim=-1) if self.config.pool == "max" else feats.mean(dim=-1)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute stage activations in backward (BN running stats are updated twice)."""
        self.grad_checkpointing = enable

    def load_weights(self, path: str, strict: bool = True) -> LoadReport:
        """Load a local state dict saved from this tower."""
        return load_pretrained(self, path, strict=strict)


def _build(cfg: LeadSpanResNet2dConfig) -> nn.Module:
    return Ecg2D(cfg)


register_encoder("ecg_resnet2d18_leadspan", LeadSpanResNet2dConfig)(_build)
