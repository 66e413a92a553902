"""1D ECG towers over ``(B, leads, T)`` signals: ResNet1d, XResNet1d and a conv-patch ViT.

* ``resnet1d``: BasicBlock ResNet, ``[2, 2, 2, 2]`` = resnet1d18, the rhythm backbone of
  ProtoECGNet (arXiv 2504.08713, §2.1); width configurable.
* ``xresnet1d``: bag-of-tricks ResNet (deep stem, ResNet-D average-pool shortcuts, zero-init last
  BN) with bottlenecks, ``[3, 4, 6, 3]`` = xresnet1d50 / ``[3, 4, 23, 3]`` = xresnet1d101, the best
  PTB-XL benchmark model (Strodthoff et al., JBHI 2021).
* ``vit_conv1d``: MoRE's ECG tower (arXiv 2410.16239): Conv1d(leads->c, k5, s5)+ReLU+BN ->
  Conv1d(c->width, k5, s1)+ReLU+BN gives 196 tokens for 1000 samples, then timm transformer blocks
  with DropKey. Deviation: width/depth/heads configurable; position embeddings are linearly
  interpolated when the input length differs from ``length``.

Every tower has ``forward(x) -> (B, output_dim)`` and ``forward_features(x) -> (B, C, T')`` (for
prototype heads); ``output_dim == C``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from encoders.dropkey import SCHEDULES, apply_dropkey, dropkey_ratios
from encoders.registry import InputSpec, register_encoder
from encoders.weights import LoadReport, load_pretrained

logger = logging.getLogger(__name__)

#: Canonical 12-lead order (kept in sync with ``datamodules.types.CANONICAL_LEADS``; encoders do
#: not import datamodules).
CANONICAL_LEADS: tuple[str, ...] = (
    "I",
    "II",
    "III",
    "aVR",
    "aVL",
    "aVF",
    "V1",
    "V2",
    "V3",
    "V4",
    "V5",
    "V6",
)

_POOLS_CNN: tuple[str, ...] = ("avg", "max")
_POOLS_VIT: tuple[str, ...] = ("cls", "mean")


@dataclass(frozen=True)
class EcgInputConfig:
    """Fields shared by every ECG tower config.

    Attributes:
        in_leads: number of leads (rows of the input), canonical order when 12.
        fs_hz: sampling rate the tower expects.
        length: samples per lead the tower expects (10 s at 100 Hz = 1000).
        pretrained_path: local weights file (never downloaded).
        pretrained_strict: fail on any key mismatch when loading ``pretrained_path``.
        grad_checkpointing: recompute stage/block activations in backward to save memory.
    """

    in_leads: int = 12
    fs_hz: float = 100.0
    length: int = 1000
    pretrained_path: str | None = None
    pretrained_strict: bool = True
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.in_leads < 1:
            raise ValueError(f"in_leads: must be positive, got {self.in_leads}")
        if self.fs_hz <= 0:
            raise ValueError(f"fs_hz: must be positive, got {self.fs_hz}")
        if self.length < 1:
            raise ValueError(f"length: must be positive, got {self.length}")

    def input_spec(self) -> InputSpec:
        """The :class:`InputSpec` a tower built from this config advertises."""
        leads = CANONICAL_LEADS if self.in_leads == 12 else None
        return InputSpec(modality="ecg", fs_hz=self.fs_hz, length=self.length, leads=leads)


def _check_stages(layers: Sequence[int], width: int, kernel_size: int) -> None:
    if len(layers) < 1 or any(n < 1 for n in layers):
        raise ValueError(f"layers: need >= 1 stage of >= 1 block each, got {tuple(layers)}")
    if width < 1:
        raise ValueError(f"width: must be positive, got {width}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size: must be a positive odd number, got {kernel_size}")


@dataclass(frozen=True)
class ResNet1dConfig(EcgInputConfig):
    """ResNet1d with BasicBlocks (resnet1d18 = ``layers=(2, 2, 2, 2)``).

    Attributes:
        layers: blocks per stage; stage ``i`` has ``width * 2**i`` channels.
        width: channels of the stem and the first stage (64 as ProtoECGNet).
        kernel_size: odd kernel of the block convs.
        stem_kernel_size: odd kernel of the stride-2 stem conv.
        pool: global pooling of :meth:`forward`, ``"avg"`` or ``"max"``.
    """

    layers: tuple[int, ...] = (2, 2, 2, 2)
    width: int = 64
    kernel_size: int = 3
    stem_kernel_size: int = 7
    pool: str = "avg"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "layers", tuple(self.layers))  # YAML gives lists
        _check_stages(self.layers, self.width, self.kernel_size)
        if self.stem_kernel_size < 1 or self.stem_kernel_size % 2 == 0:
            raise ValueError(
                f"stem_kernel_size: must be positive and odd, got {self.stem_kernel_size}"
            )
        if self.pool not in _POOLS_CNN:
            raise ValueError(f"pool: choose one of {_POOLS_CNN}, got {self.pool!r}")


@dataclass(frozen=True)
class XResNet1dConfig(EcgInputConfig):
    """Bottleneck XResNet1d: xresnet1d50 = ``(3, 4, 6, 3)``, xresnet1d101 = ``(3, 4, 23, 3)``.

    Attributes:
        layers: blocks per stage; stage ``i`` outputs ``width * 2**i * expansion`` channels.
        width: bottleneck width of the first stage (64).
        expansion: bottleneck expansion (4; 1 gives BasicBlock-sized outputs).
        kernel_size: odd kernel of the stem and the middle bottleneck conv (5 as the benchmark).
        stem_widths: channels of the three stem convs.
        pool: global pooling of :meth:`forward`, ``"avg"`` or ``"max"``.
    """

    layers: tuple[int, ...] = (3, 4, 6, 3)
    width: int = 64
    expansion: int = 4
    kernel_size: int = 5
    stem_widths: tuple[int, int, int] = (32, 32, 64)
    pool: str = "avg"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "layers", tuple(self.layers))  # YAML gives lists
        object.__setattr__(self, "stem_widths", tuple(self.stem_widths))
        _check_stages(self.layers, self.width, self.kernel_size)
        if self.expansion < 1:
            raise ValueError(f"expansion: must be positive, got {self.expansion}")
        if len(self.stem_widths) != 3 or any(w < 1 for w in self.stem_widths):
            raise ValueError(f"stem_widths: need 3 positive widths, got {self.stem_widths}")
        if self.pool not in _POOLS_CNN:
            raise ValueError(f"pool: choose one of {_POOLS_CNN}, got {self.pool!r}")


@dataclass(frozen=True)
class EcgViTConfig(EcgInputConfig):
    """Conv-patch ViT (MoRE's ECG tower; defaults = ViT-B with 196 tokens for 1000 samples).

    Attributes:
        patch_channels: channels of the first patch conv (256).
        patch_kernel, patch_stride: first conv kernel/stride (5, 5); the second conv has the same
            kernel and stride 1, no padding.
        width, depth, num_heads, mlp_ratio, qkv_bias: transformer shape (768, 12, 12, 4, False).
        dropkey_ratio, dropkey_schedule: DropKey (see :mod:`encoders.dropkey`).
        drop_rate, attn_drop_rate, drop_path_rate: regularisation.
        pool: ``"cls"`` (MoRE) or ``"mean"`` of the patch tokens for :meth:`forward`.
    """

    patch_channels: int = 256
    patch_kernel: int = 5
    patch_stride: int = 5
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    dropkey_ratio: float = 0.3
    dropkey_schedule: str = "constant"
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    pool: str = "cls"

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in (
            "patch_channels",
            "patch_kernel",
            "patch_stride",
            "width",
            "depth",
            "num_heads",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be positive, got {getattr(self, key)}")
        if self.width % self.num_heads:
            raise ValueError(f"width: {self.width} is not divisible by num_heads {self.num_heads}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio: must be positive, got {self.mlp_ratio}")
        if not 0.0 <= self.dropkey_ratio < 1.0:
            raise ValueError(f"dropkey_ratio: must be in [0, 1), got {self.dropkey_ratio}")
        if self.dropkey_schedule not in SCHEDULES:
            raise ValueError(
                f"dropkey_schedule: choose one of {SCHEDULES}, got {self.dropkey_schedule!r}"
            )
        for key in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"{key}: must be in [0, 1), got {getattr(self, key)}")
        if self.pool not in _POOLS_VIT:
            raise ValueError(f"pool: choose one of {_POOLS_VIT}, got {self.pool!r}")
        if self.num_tokens < 1:
            raise ValueError(
                f"length: {self.length} samples are too short for the patch convs "
                f"(kernel {self.patch_kernel}, stride {self.patch_stride})"
            )

    @property
    def num_tokens(self) -> int:
        """Patch tokens for ``length`` samples."""
        return _patch_tokens(self.length, self.patch_kernel, self.patch_stride)


def _patch_tokens(length: int, kernel: int, stride: int) -> int:
    first = (length - kernel) // stride + 1
    return first - kernel + 1


# --------------------------------------------------------------------------- CNN building blocks


def _conv_bn(
    c_in: int, c_out: int, kernel: int, stride: int = 1, relu: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm1d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock1d(nn.Module):
    """Two ``kernel`` convs with BN and a projection shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, kernel, stride)
        self.conv2 = _conv_bn(c_out, c_out, kernel, relu=False)
        self.shortcut: nn.Module = (
            _conv_bn(c_in, c_out, 1, stride, relu=False)
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, c_in, T) -> (B, c_out, ceil(T / stride))``."""
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck1d(nn.Module):
    """ResNet-D bottleneck: 1x1 -> k (strided) -> 1x1 (zero-init BN); avg-pool shortcut."""

    def __init__(self, c_in: int, width: int, c_out: int, stride: int, kernel: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(c_in, width, 1),
            _conv_bn(width, width, kernel, stride),
            nn.Conv1d(width, c_out, 1, bias=False),
        )
        self.bn_out = nn.BatchNorm1d(c_out)
        nn.init.zeros_(self.bn_out.weight)  # zero-init last BN: each block starts as identity
        short: list[nn.Module] = []
        if stride != 1:
            short.append(nn.AvgPool1d(stride, stride, ceil_mode=True))
        if c_in != c_out:
            short.append(_conv_bn(c_in, c_out, 1, relu=False))
        self.shortcut = nn.Sequential(*short)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, c_in, T) -> (B, c_out, ceil(T / stride))``."""
        return self.act(self.bn_out(self.body(x)) + self.shortcut(x))


class _CnnBackbone(nn.Module):
    """Stem + stages; optional per-stage gradient checkpointing."""

    stem: nn.Module
    stages: nn.Sequential
    grad_checkpointing: bool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
        return x


class ResNet1d(_CnnBackbone):
    """BasicBlock ResNet over ``(B, leads, T)``; output ``(B, width * 2**(S-1), T / 32)``."""

    def __init__(self, cfg: ResNet1dConfig) -> None:
        super().__init__()
        w = cfg.width
        self.stem = nn.Sequential(
            _conv_bn(cfg.in_leads, w, cfg.stem_kernel_size, stride=2),
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        stages: list[nn.Module] = []
        c_in = w
        for i, n in enumerate(cfg.layers):
            c_out = w * 2**i
            blocks = [
                BasicBlock1d(
                    c_in if j == 0 else c_out,
                    c_out,
                    2 if (i > 0 and j == 0) else 1,
                    cfg.kernel_size,
                )
                for j in range(n)
            ]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.out_channels = c_in
        self.grad_checkpointing = cfg.grad_checkpointing
        _init_cnn(self)


class XResNet1d(_CnnBackbone):
    """XResNet1d over ``(B, leads, T)``; output ``(B, width * 2**(S-1) * expansion, T / 32)``."""

    def __init__(self, cfg: XResNet1dConfig) -> None:
        super().__init__()
        s0, s1, s2 = cfg.stem_widths
        k = cfg.kernel_size
        self.stem = nn.Sequential(
            _conv_bn(cfg.in_leads, s0, k, stride=2),
            _conv_bn(s0, s1, k),
            _conv_bn(s1, s2, k),
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        stages: list[nn.Module] = []
        c_in = s2
        for i, n in enumerate(cfg.layers):
            width = cfg.width * 2**i
            c_out = width * cfg.expansion
            blocks = [
                Bottleneck1d(
                    c_in if j == 0 else c_out, width, c_out, 2 if (i > 0 and j == 0) else 1, k
                )
                for j in range(n)
            ]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.out_channels = c_in
        self.grad_checkpointing = cfg.grad_checkpointing
        _init_cnn(self, zero_init_residual=True)


def _init_cnn(module: nn.Module, zero_init_residual: bool = False) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in module.modules():
            if isinstance(m, Bottleneck1d):
                nn.init.zeros_(m.bn_out.weight)


# --------------------------------------------------------------------------- conv-patch ViT


class ConvPatchEmbed1d(nn.Module):
    """MoRE's ECG patch embedding: two Conv1d+ReLU+BN layers -> ``(B, N, width)`` tokens."""

    def __init__(self, cfg: EcgViTConfig) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv1d(cfg.in_leads, cfg.patch_channels, cfg.patch_kernel, stride=cfg.patch_stride),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(cfg.patch_channels),
            nn.Conv1d(cfg.patch_channels, cfg.width, cfg.patch_kernel, stride=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(cfg.width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, leads, T) -> (B, N, width)``."""
        out: torch.Tensor = self.proj(x).transpose(1, 2)
        return out


class EcgConvViT(nn.Module):
    """Transformer over conv-patch tokens with a CLS token and learned position embeddings."""

    grad_checkpointing: bool

    def __init__(self, cfg: EcgViTConfig) -> None:
        super().__init__()
        from timm.layers import trunc_normal_
        from timm.models.vision_transformer import Block

        self.cfg = cfg
        self.patch_embed = ConvPatchEmbed1d(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.num_tokens, cfg.width))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.blocks = nn.Sequential(
            *[
                Block(
                    dim=cfg.width,
                    num_heads=cfg.num_heads,
                    mlp_ratio=cfg.mlp_ratio,
                    qkv_bias=cfg.qkv_bias,
                    proj_drop=cfg.drop_rate,
                    attn_drop=cfg.attn_drop_rate,
                    drop_path=dpr[i],
                    norm_layer=cast(type[nn.Module], partial(nn.LayerNorm, eps=1e-6)),
                )
                for i in range(cfg.depth)
            ]
        )
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
        self.out_channels = cfg.width
        self.grad_checkpointing = cfg.grad_checkpointing
        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(_init_vit_weights)
        apply_dropkey(self.blocks, cfg.dropkey_ratio, cfg.dropkey_schedule)

    def _pos_embed(self, n: int) -> torch.Tensor:
        pos = self.pos_embed
        if n == pos.shape[1] - 1:
            return pos
        patch = F.interpolate(
            pos[:, 1:].transpose(1, 2), size=n, mode="linear", align_corners=False
        )
        return torch.cat([pos[:, :1], patch.transpose(1, 2)], dim=1)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, leads, T) -> (B, 1 + N, width)`` normalised tokens (CLS first)."""
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self._pos_embed(x.shape[1])
        x = self.pos_drop(x)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        out: torch.Tensor = self.norm(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, leads, T) -> (B, width, N)`` patch tokens as a channels-first sequence."""
        return self.tokens(x)[:, 1:].transpose(1, 2)


def _init_vit_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- the tower

Ecg1DConfig = ResNet1dConfig | XResNet1dConfig | EcgViTConfig


class Ecg1D(nn.Module):
    """1D ECG encoder: ``forward(x: (B, leads, T)) -> (B, output_dim)`` pooled features.

    The backbone is chosen by the config type: :class:`ResNet1dConfig`, :class:`XResNet1dConfig`
    or :class:`EcgViTConfig`.

    Attributes:
        backbone: module mapping ``(B, leads, T)`` to ``(B, C, T')``.
        output_dim: ``C``.
        input_spec: fs (100 Hz), length (1000) and canonical lead order.
    """

    def __init__(self, cfg: Ecg1DConfig) -> None:
        super().__init__()
        self.config = cfg
        self.backbone: _CnnBackbone | EcgConvViT
        if isinstance(cfg, ResNet1dConfig):
            self.backbone = ResNet1d(cfg)
        elif isinstance(cfg, XResNet1dConfig):
            self.backbone = XResNet1d(cfg)
        elif isinstance(cfg, EcgViTConfig):
            self.backbone = EcgConvViT(cfg)
        else:
            raise TypeError(f"unsupported ECG config {type(cfg).__name__}")
        self.output_dim: int = int(self.backbone.out_channels)
        self.input_spec = cfg.input_spec()
        if cfg.pretrained_path:
            self.load_weights(cfg.pretrained_path, strict=cfg.pretrained_strict)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[1] != self.config.in_leads:
            raise ValueError(
                f"Ecg1D expects (B, {self.config.in_leads}, T) signals, got {tuple(x.shape)}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, leads, T) -> (B, output_dim, T')`` feature sequence (T' = 32 for T = 1000 CNNs)."""
        self._check(x)
        out: torch.Tensor = self.backbone(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, leads, T) -> (B, output_dim)``: global pooling (CNN) or the CLS token (ViT)."""
        self._check(x)
        if isinstance(self.backbone, EcgConvViT):
            tokens = self.backbone.tokens(x)
            return tokens[:, 0] if self.backbone.cfg.pool == "cls" else tokens[:, 1:].mean(dim=1)
        feats = self.backbone(x)
        pool = getattr(self.config, "pool", "avg")
        return feats.amax(dim=-1) if pool == "max" else feats.mean(dim=-1)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute stage (CNN) or block (ViT) activations in backward.

        With BatchNorm in training, recomputation updates running statistics a second time.
        """
        self.backbone.grad_checkpointing = enable

    def dropkey_ratios(self) -> list[float]:
        """Per-layer DropKey ratios (empty for CNN backbones)."""
        return dropkey_ratios(self)

    def load_weights(self, path: str, strict: bool = True) -> LoadReport:
        """Load a local state dict saved from this tower (or its bare ``backbone``)."""

        def adapt(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            if any(k.startswith("backbone.") for k in state):
                return state
            return {f"backbone.{k}": v for k, v in state.items()}

        return load_pretrained(self, path, strict=strict, transform=adapt)


def _build(cfg: Ecg1DConfig) -> nn.Module:
    return Ecg1D(cfg)


register_encoder("ecg_resnet1d18", ResNet1dConfig)(_build)
register_encoder("ecg_xresnet1d50", XResNet1dConfig)(_build)
register_encoder("ecg_xresnet1d101", XResNet1dConfig, layers=(3, 4, 23, 3))(_build)
register_encoder("ecg_vit_conv1d", EcgViTConfig)(_build)
