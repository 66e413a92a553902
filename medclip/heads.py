"""Projection heads from tower features into the shared embedding space.

``mlp_bn`` follows MoRE (arXiv 2410.16239): Linear (no bias) + BatchNorm -> ReLU -> Linear
(no bias) + BatchNorm. ``mlp_ln`` swaps BatchNorm for LayerNorm (no cross-row statistics, so it
behaves identically for any batch size and under DDP). ``linear`` is a single bias-free Linear.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

HeadKind = Literal["mlp_bn", "mlp_ln", "linear"]
HEAD_KINDS: tuple[str, ...] = ("mlp_bn", "mlp_ln", "linear")


class ProjectionHead(nn.Module):
    """Maps ``(B, in_dim)`` features to ``(B, out_dim)`` un-normalised embeddings.

    Args:
        in_dim: tower feature size.
        out_dim: shared-space size (default 128 in the presets).
        kind: ``mlp_bn``, ``mlp_ln`` or ``linear``.
        hidden_dim: MLP hidden size; defaults to ``in_dim`` (MoRE: 768 -> 768 -> 128).
    """

    def __init__(
        self, in_dim: int, out_dim: int, kind: HeadKind = "mlp_bn", hidden_dim: int | None = None
    ) -> None:
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"head: choose one of {list(HEAD_KINDS)}, got {kind!r}")
        if in_dim <= 0 or out_dim <= 0:
            raise ValueError(f"head: dimensions must be positive, got {in_dim} -> {out_dim}")
        self.kind = kind
        self.in_dim = in_dim
        self.out_dim = out_dim
        hidden = hidden_dim or in_dim
        self.net: nn.Module
        if kind == "linear":
            self.net = nn.Linear(in_dim, out_dim, bias=False)
        else:
            norm: type[nn.Module] = nn.BatchNorm1d if kind == "mlp_bn" else nn.LayerNorm
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden, bias=False),
                norm(hidden),
                nn.ReLU(inplace=True),
                nn.Linear(hidden, out_dim, bias=False),
                norm(out_dim),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim) -> (B, out_dim)``."""
        out: torch.Tensor = self.net(x)
        return out
