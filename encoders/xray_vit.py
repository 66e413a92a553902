"""Chest X-ray tower: a timm Vision Transformer with DropKey attention (MoRE, arXiv 2410.16239).

MoRE uses ViT-B/16 defaults (224 px, width 768, 12 blocks, 12 heads), CLS output, no head,
``qkv_bias=False``, random init. Deviations (ANCHORS.md §1.1/§1.7): DropKey is set per attention
module with a ``constant`` or ``linear`` depth schedule; the attention modules are swapped after
``timm.create_model`` so any timm ViT width/head count works; ``pretrained`` never touches the
hub: weights come only from a local ``pretrained_path``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from encoders.dropkey import SCHEDULES, apply_dropkey, dropkey_ratios
from encoders.registry import InputSpec, register_encoder
from encoders.weights import LoadReport, StateDict, load_pretrained

logger = logging.getLogger(__name__)

_GLOBAL_POOLS: tuple[str, ...] = ("token", "avg")


@dataclass(frozen=True)
class XrayViTConfig:
    """Config of :class:`XrayViT`.

    Attributes:
        model_name: any timm ViT name (``vit_tiny_patch16_224``, ``vit_base_patch16_224``, ...).
        img_size: input side in pixels (square).
        patch_size, embed_dim, depth, num_heads, mlp_ratio: override the timm defaults when set.
        qkv_bias: bias in the qkv projection (MoRE: False).
        in_chans: image channels (1 for grayscale CXR).
        global_pool: ``"token"`` (CLS, as MoRE) or ``"avg"``.
        dropkey_ratio: DropKey base ratio in ``[0, 1)`` (MoRE pre-training: 0.3).
        dropkey_schedule: ``"constant"`` or ``"linear"`` (decreasing with depth, as the paper).
        drop_rate, attn_drop_rate, drop_path_rate: timm regularisation.
        mean, std: input normalisation on the ``[0, 1]`` scale (written to ``input_spec``).
        pretrained_path: local weights (tower or timm-native state dict); never downloaded.
        pretrained_strict: fail on any key mismatch when loading ``pretrained_path``.
        grad_checkpointing: recompute activations in backward to save memory.
    """

    model_name: str = "vit_base_patch16_224"
    img_size: int = 224
    patch_size: int | None = None
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None
    qkv_bias: bool = False
    in_chans: int = 1
    global_pool: str = "token"
    dropkey_ratio: float = 0.3
    dropkey_schedule: str = "constant"
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    mean: float = 0.5
    std: float = 0.25
    pretrained_path: str | None = None
    pretrained_strict: bool = True
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if not self.model_name.startswith("vit_"):
            raise ValueError(f"model_name: expected a timm ViT name, got {self.model_name!r}")
        if self.img_size < 1:
            raise ValueError(f"img_size: must be positive, got {self.img_size}")
        for key in ("patch_size", "embed_dim", "depth", "num_heads"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key}: must be positive, got {value}")
        if self.patch_size is not None and self.img_size % self.patch_size:
            raise ValueError(
                f"img_size: {self.img_size} is not a multiple of patch_size {self.patch_size}"
            )
        if (
            self.embed_dim is not None
            and self.num_heads is not None
            and self.embed_dim % self.num_heads
        ):
            raise ValueError(
                f"embed_dim: {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        if self.in_chans < 1:
            raise ValueError(f"in_chans: must be positive, got {self.in_chans}")
        if self.global_pool not in _GLOBAL_POOLS:
            raise ValueError(
                f"global_pool: choose one of {_GLOBAL_POOLS}, got {self.global_pool!r}"
            )
        if not 0.0 <= self.dropkey_ratio < 1.0:
            raise ValueError(f"dropkey_ratio: must be in [0, 1), got {self.dropkey_ratio}")
        if self.dropkey_schedule not in SCHEDULES:
            raise ValueError(
                f"dropkey_schedule: choose one of {SCHEDULES}, got {self.dropkey_schedule!r}"
            )
        for key in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
            value = getattr(self, key)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{key}: must be in [0, 1), got {value}")
        if self.std <= 0:
            raise ValueError(f"std: must be positive, got {self.std}")

    def timm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``timm.create_model`` (``pretrained`` is always False)."""
        kwargs: dict[str, Any] = {
            "pretrained": False,
            "num_classes": 0,
            "in_chans": self.in_chans,
            "img_size": self.img_size,
            "qkv_bias": self.qkv_bias,
            "global_pool": self.global_pool,
            "drop_rate": self.drop_rate,
            "attn_drop_rate": self.attn_drop_rate,
            "drop_path_rate": self.drop_path_rate,
        }
        for key in ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio"):
            value = getattr(self, key)
            if value is not None:
                kwargs[key] = value
        return kwargs


def create_timm_vit(cfg: XrayViTConfig) -> nn.Module:
    """The plain timm ViT described by ``cfg`` (no DropKey), e.g. as a reference model."""
    import timm

    try:
        return timm.create_model(cfg.model_name, **cfg.timm_kwargs())
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise ValueError(f"model_name: {exc}") from exc


class XrayViT(nn.Module):
    """CXR encoder: ``forward(x: (B, 1, H, W)) -> (B, D)`` pooled (CLS) features, pre-projection.

    Attributes:
        vit: the timm ``VisionTransformer`` whose attention modules are :class:`DropKeyAttention`.
        output_dim: feature size ``D`` (the ViT width).
        input_spec: image size and normalisation the tower expects.
    """

    def __init__(self, cfg: XrayViTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.vit: Any = create_timm_vit(cfg)
        blocks = getattr(self.vit, "blocks", None)
        if not isinstance(blocks, nn.Sequential | nn.ModuleList):
            raise ValueError(f"model_name: {cfg.model_name!r} has no transformer 'blocks'")
        apply_dropkey(blocks, cfg.dropkey_ratio, cfg.dropkey_schedule)
        self.output_dim: int = int(cast(Any, self.vit).num_features)
        self.input_spec = InputSpec(
            modality="xray", image_size=cfg.img_size, mean=cfg.mean, std=cfg.std
        )
        if cfg.grad_checkpointing:
            self.set_grad_checkpointing(True)
        if cfg.pretrained_path:
            self.load_weights(cfg.pretrained_path, strict=cfg.pretrained_strict)

    def _check(self, x: torch.Tensor) -> None:
        c, s = self.config.in_chans, self.config.img_size
        if x.ndim != 4 or x.shape[1] != c or tuple(x.shape[-2:]) != (s, s):
            raise ValueError(f"XrayViT expects (B, {c}, {s}, {s}) images, got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            x: ``(B, in_chans, img_size, img_size)`` normalised pixels.

        Returns:
            ``(B, output_dim)`` pooled features.
        """
        self._check(x)
        out: torch.Tensor = self.vit(x)
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the final norm: ``(B, 1 + num_patches, output_dim)``."""
        self._check(x)
        out: torch.Tensor = self.vit.forward_features(x)
        return out

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward (DropKey masks are replayed exactly)."""
        self.vit.set_grad_checkpointing(enable)

    def set_dropkey(self, ratio: float, schedule: str = "constant") -> list[float]:
        """Change the DropKey ratio / schedule; returns the per-layer ratios."""
        return apply_dropkey(self.vit.blocks, ratio, schedule)

    def dropkey_ratios(self) -> list[float]:
        """Current per-layer DropKey ratios, first block first."""
        return dropkey_ratios(self.vit)

    def load_weights(self, path: str, strict: bool = True) -> LoadReport:
        """Load local weights saved from this tower or a timm ViT checkpoint.

        timm-native files (keys without the ``vit.`` prefix) are adapted: RGB patch embeddings are
        summed to ``in_chans``, position embeddings and patch kernels are resampled to this
        geometry, classifier ``head.*`` tensors are dropped.
        """
        return load_pretrained(self, path, strict=strict, transform=self._adapt_state)

    def _adapt_state(self, state: StateDict) -> StateDict:
        if any(k.startswith("vit.") for k in state):
            return state
        from timm.models._manipulate import adapt_input_conv
        from timm.models.vision_transformer import checkpoint_filter_fn

        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        key = "patch_embed.proj.weight"
        if key in state and state[key].ndim == 4 and state[key].shape[1] != self.config.in_chans:
            state[key] = adapt_input_conv(self.config.in_chans, state[key], state[key].shape[1])
        state = checkpoint_filter_fn(state, self.vit)
        return {f"vit.{k}": v for k, v in state.items()}


def _build(cfg: XrayViTConfig) -> nn.Module:
    return XrayViT(cfg)


register_encoder(
    "xray_vit_tiny_dropkey",
    XrayViTConfig,
    model_name="vit_tiny_patch16_224",
    img_size=64,
    patch_size=8,
    embed_dim=64,
    depth=2,
    num_heads=2,
)(_build)
register_encoder("xray_vit_small_dropkey", XrayViTConfig, model_name="vit_small_patch16_224")(
    _build
)
register_encoder("xray_vit_b16_dropkey", XrayViTConfig, model_name="vit_base_patch16_224")(_build)
