"""DropKey self-attention (Li et al., "DropKey for Vision Transformer", CVPR 2023, 2208.02646).

In training, each query in each head ignores a random subset of keys: a Bernoulli(``ratio``) mask
of shape ``(B, H, N, N)`` pushes the chosen attention logits to the dtype's minimum *before* the
softmax, which then renormalises over the kept keys (no ``1/(1-r)`` rescaling). Evaluation applies
no mask, so an eval-mode forward is identical to plain attention.

Deviations from MoRE (ANCHORS.md §1.1/§1.7):
  * the ratio lives on the attention module itself (MoRE set its schedule on the Block, a no-op);
  * the mask is an additive float mask filled with ``torch.finfo(dtype).min`` and the diagonal is
    never dropped, so no row is fully masked and fp16/bf16 stay NaN-free (MoRE used ``-1e12``);
  * any head count / width works (the module reuses timm's ``qkv``/``proj``/norms).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

DropKeySchedule = Literal["constant", "linear"]
SCHEDULES: tuple[str, ...] = ("constant", "linear")


def dropkey_schedule(ratio: float, depth: int, schedule: str = "constant") -> list[float]:
    """Per-layer DropKey ratios.

    Args:
        ratio: base ratio in ``[0, 1)``.
        depth: number of attention layers.
        schedule: ``"constant"`` (every layer ``ratio``) or ``"linear"`` (the paper's decreasing
            schedule: ``ratio * (1 - i / (depth - 1))``, from ``ratio`` at the first layer to 0 at
            the last; a single layer keeps ``ratio``).

    Returns:
        ``depth`` ratios, first layer first.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"dropkey ratio must be in [0, 1), got {ratio}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if schedule == "constant":
        return [float(ratio)] * depth
    if schedule == "linear":
        if depth == 1:
            return [float(ratio)]
        return [float(ratio) * (1.0 - i / (depth - 1)) for i in range(depth)]
    raise ValueError(f"unknown dropkey schedule {schedule!r}; choose one of {SCHEDULES}")


def dropkey_mask(
    batch: int,
    heads: int,
    tokens: int,
    ratio: float,
    *,
    dtype: torch.dtype,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Additive DropKey mask for ``scaled_dot_product_attention``.

    Args:
        batch, heads, tokens: mask shape ``(batch, heads, tokens, tokens)``.
        ratio: probability in ``[0, 1]`` that a (query, key) logit is dropped.
        dtype: floating dtype of the attention logits (the fill value is its minimum).
        device: device of the mask.
        generator: optional RNG.

    Returns:
        Float ``(B, H, N, N)`` tensor: ``0`` where kept, ``torch.finfo(dtype).min`` where dropped.
        The diagonal (each token's own key) is always kept, so no row is fully masked.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"dropkey ratio must be in [0, 1], got {ratio}")
    shape = (batch, heads, tokens, tokens)
    drop = torch.rand(shape, device=device, generator=generator) < ratio
    eye = torch.eye(tokens, dtype=torch.bool, device=drop.device)
    drop &= ~eye
    mask = torch.zeros(shape, dtype=dtype, device=drop.device)
    return mask.masked_fill_(drop, torch.finfo(dtype).min)


def _sub(source: Any, name: str, default: nn.Module) -> nn.Module:
    """``source.<name>`` when it is a module, else ``default``."""
    value = getattr(source, name, None)
    return value if isinstance(value, nn.Module) else default


def _as_additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Turn a boolean keep-mask (True = attend) or a float bias into a float bias of ``dtype``."""
    if mask.dtype == torch.bool:
        bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return bias.masked_fill_(~mask, torch.finfo(dtype).min)
    return mask.to(dtype)


class DropKeyAttention(nn.Module):
    """Multi-head self-attention with DropKey, built around a timm ``Attention``'s layers.

    The submodules (``qkv``, ``q_norm``, ``k_norm``, ``attn_drop``, ``norm``, ``gate``, ``proj``,
    ``proj_drop``) are the *same objects* as in the source module, so state-dict keys and weights
    are unchanged and timm checkpoints load as before.

    Attributes:
        dropkey_ratio: this layer's drop probability; used only in training mode.
    """

    def __init__(self, source: nn.Module, dropkey_ratio: float = 0.0) -> None:
        super().__init__()
        for name in ("qkv", "proj", "num_heads", "head_dim"):
            if not hasattr(source, name):
                raise TypeError(
                    f"cannot wrap {type(source).__name__} with DropKey: no attribute {name!r} "
                    "(expected a timm.layers.Attention-like module with a fused qkv projection)"
                )
        src: Any = source
        self.num_heads: int = int(src.num_heads)
        self.head_dim: int = int(src.head_dim)
        self.attn_dim: int = int(getattr(src, "attn_dim", self.num_heads * self.head_dim))
        self.scale: float = float(getattr(src, "scale", self.head_dim**-0.5))
        self.qkv: nn.Module = src.qkv
        self.q_norm: nn.Module = _sub(src, "q_norm", nn.Identity())
        self.k_norm: nn.Module = _sub(src, "k_norm", nn.Identity())
        self.attn_drop: nn.Module = _sub(src, "attn_drop", nn.Dropout(0.0))
        self.norm: nn.Module = _sub(src, "norm", nn.Identity())
        self.gate: nn.Module | None = getattr(src, "gate", None)
        self.proj: nn.Module = src.proj
        self.proj_drop: nn.Module = _sub(src, "proj_drop", nn.Dropout(0.0))
        self.dropkey_ratio = dropkey_ratio

    @property
    def dropkey_ratio(self) -> float:
        """Drop probability of this layer, in ``[0, 1)``."""
        return self._dropkey_ratio

    @dropkey_ratio.setter
    def dropkey_ratio(self, value: float) -> None:
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"dropkey ratio must be in [0, 1), got {value}")
        self._dropkey_ratio = float(value)

    def extra_repr(self) -> str:
        return (
            f"heads={self.num_heads}, head_dim={self.head_dim}, dropkey_ratio={self._dropkey_ratio}"
        )

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """Attend over tokens.

        Args:
            x: ``(B, N, C)`` tokens.
            attn_mask: optional bool keep-mask or additive float bias broadcastable to
                ``(B, H, N, N)``.
            is_causal: causal attention (combined with ``attn_mask`` and DropKey when present).

        Returns:
            ``(B, N, C_out)`` tokens.
        """
        B, N, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)

        if self.training and self._dropkey_ratio > 0.0:
            drop = dropkey_mask(
                B, self.num_heads, N, self._dropkey_ratio, dtype=q.dtype, device=q.device
            )
            if is_causal:
                causal = torch.ones(N, N, dtype=torch.bool, device=q.device).tril_()
                if attn_mask is None:
                    attn_mask = causal
                else:
                    attn_mask = _as_additive(attn_mask, q.dtype).masked_fill(
                        ~causal, torch.finfo(q.dtype).min
                    )
                is_causal = False
            if attn_mask is not None:
                # keep the caller's masked entries masked; never add two minima (-> -inf)
                bias = _as_additive(attn_mask, q.dtype).expand(B, self.num_heads, N, N)
                attn_mask = bias.masked_fill(drop < 0, torch.finfo(q.dtype).min)
            else:
                attn_mask = drop
        elif attn_mask is not None and attn_mask.dtype != torch.bool:
            attn_mask = attn_mask.to(q.dtype)

        x = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=float(getattr(self.attn_drop, "p", 0.0)) if self.training else 0.0,
            is_causal=is_causal,
        )
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        x = self.proj(x)
        return self.proj_drop(x)


def apply_dropkey(
    blocks: nn.Sequential | nn.ModuleList,
    ratio: float,
    schedule: str = "constant",
) -> list[float]:
    """Swap every block's ``attn`` for a :class:`DropKeyAttention` with the scheduled ratio.

    Blocks whose ``attn`` already is a :class:`DropKeyAttention` only get their ratio updated.

    Args:
        blocks: transformer blocks, each with an ``attn`` attribute (timm ``Block``).
        ratio: base ratio in ``[0, 1)``.
        schedule: ``"constant"`` or ``"linear"`` (see :func:`dropkey_schedule`).

    Returns:
        The per-layer ratios that were set.
    """
    ratios = dropkey_schedule(ratio, len(blocks), schedule)
    for block, r in zip(blocks, ratios):
        attn = getattr(block, "attn", None)
        if attn is None:
            raise TypeError(f"block {type(block).__name__} has no 'attn' attribute")
        if isinstance(attn, DropKeyAttention):
            attn.dropkey_ratio = r
        else:
            block.attn = DropKeyAttention(attn, r)
    logger.debug("DropKey ratios per layer: %s", ratios)
    return ratios


def dropkey_ratios(module: nn.Module) -> list[float]:
    """Ratios of all :class:`DropKeyAttention` layers in ``module``, in registration order."""
    return [m.dropkey_ratio for m in module.modules() if isinstance(m, DropKeyAttention)]
