"""Prototype layers for interpretable ECG classification (ProtoECGNet, arXiv 2504.08713).

Building blocks only (pure torch): add-on layers, a prototype layer holding global or
time-localised ("partial") prototypes scored by cosine similarity, pooling over time windows, and
the ``+1 / -0.5`` initialisation of the class-connection (last) layer.

Conventions:
    * Features are ``(B, D, T)``: channels by feature steps. A 2D backbone's ``(B, D, 1, T)`` output
      is squeezed to that shape; a globally pooled 1D feature vector is ``(B, D, 1)``.
    * A prototype is ``(D, L)``: ``L`` feature steps. ``L == T`` is a global prototype (one
      window); ``L < T`` is a partial prototype compared with every window of ``L`` steps.
    * The similarity of a window ``w`` (flattened to ``D*L`` values) and a prototype ``p`` is
      ``cos(w, p)``, divided by ``sqrt(D*L)`` when ``scaled`` (the paper's 2D branches), so
      scores lie in ``[-1/sqrt(D*L), 1/sqrt(D*L)]``.

Deviation from the reference code: the window pooling (mean / top-k mean / max) is a parameter of
the layer instead of being hard-wired differently in the forward pass and the distance helper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

WindowPool = Literal["mean", "topk", "max"]
WINDOW_POOLS: tuple[str, ...] = ("mean", "topk", "max")


@dataclass
class PrototypeScores:
    """Output of :class:`PrototypeLayer`.

    Attributes:
        similarity: ``(B, P)`` window-pooled similarity of each input to each prototype.
        windows: ``(B, W, P)`` similarity of every window (``W = T - L + 1``) to each prototype.
    """

    similarity: torch.Tensor
    windows: torch.Tensor


AddOnActivation = Literal["sigmoid", "none"]


class AddOnLayers(nn.Module):
    """Two position-wise linear layers with a ReLU between and (paper) a Sigmoid at the end.

    A 1x1 convolution over ``(B, C, T)`` equals a Linear on each feature step, so the same module
    serves the paper's 1D (Linear) and 2D (1x1 conv) add-ons. Output ``(B, D, T)``, in ``(0, 1)``
    with the sigmoid.

    Args:
        in_channels: backbone channels C.
        out_channels: prototype channels D.
        final_activation: ``sigmoid`` (paper) or ``none``. With the sigmoid every feature is
            positive, so all cosines are positive and bunch up near 1; without it prototypes can
            be dissimilar (cosine <= 0), which trains much faster through the frozen classifier.
    """

    def __init__(
        self, in_channels: int, out_channels: int, final_activation: AddOnActivation = "sigmoid"
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError("AddOnLayers: channel counts must be >= 1")
        if final_activation not in ("sigmoid", "none"):
            raise ValueError(f"AddOnLayers: unknown final_activation {final_activation!r}")
        self.final_activation = final_activation
        self.net = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv1d(out_channels, out_channels, kernel_size=1),
            nn.Sigmoid() if final_activation == "sigmoid" else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C, T)`` features to ``(B, D, T)``."""
        out: torch.Tensor = self.net(x)
        return out


def class_identity(n_classes: int, per_class: int) -> torch.Tensor:
    """One-hot prototype-to-class map ``(P, C)``; each class owns ``per_class`` consecutive rows."""
    if n_classes < 1 or per_class < 1:
        raise ValueError("class_identity: n_classes and per_class must be >= 1")
    eye = torch.eye(n_classes)
    return eye.repeat_interleave(per_class, dim=0)


def init_last_layer(
    layer: nn.Linear, identity: torch.Tensor, pos: float = 1.0, neg: float = -0.5
) -> None:
    """Set ``layer.weight`` ``(C, P)`` to ``pos`` for a prototype's own class, ``neg`` elsewhere.

    Args:
        layer: ``Linear(P -> C)``; a bias, if any, is zeroed.
        identity: ``(P, C)`` one-hot prototype-to-class map.
    """
    P, C = identity.shape
    if tuple(layer.weight.shape) != (C, P):
        raise ValueError(
            f"init_last_layer: weight is {tuple(layer.weight.shape)}, expected {(C, P)}"
        )
    ident_t = identity.t().to(layer.weight)
    with torch.no_grad():
        layer.weight.copy_(pos * ident_t + neg * (1.0 - ident_t))
        if layer.bias is not None:
            layer.bias.zero_()


def window_cosine(
    z: torch.Tensor, prototypes: torch.Tensor, scaled: bool, eps: float = 1e-8
) -> torch.Tensor:
    """Cosine similarity of every window of ``z`` with every prototype.

    Args:
        z: ``(B, D, T)`` features.
        prototypes: ``(P, D, L)`` with ``L <= T``.
        scaled: divide by ``sqrt(D*L)``.

    Returns:
        ``(B, W, P)`` with ``W = T - L + 1``.
    """
    B, D, T = z.shape
    P, Dp, L = prototypes.shape
    if Dp != D:
        raise ValueError(f"window_cosine: features have {D} channels, prototypes {Dp}")
    if L > T:
        raise ValueError(f"window_cosine: prototype length {L} exceeds feature length {T}")
    windows = z.unfold(2, L, 1)  # (B, D, W, L)
    windows = windows.permute(0, 2, 1, 3).reshape(B, T - L + 1, D * L)
    w_hat = F.normalize(windows, dim=-1, eps=eps)
    p_hat = F.normalize(prototypes.reshape(P, D * L), dim=-1, eps=eps)
    sims = w_hat @ p_hat.t()
    if scaled:
        sims = sims / math.sqrt(D * L)
    return sims


def pool_windows(windows: torch.Tensor, pool: str, topk: int = 5) -> torch.Tensor:
    """Pool ``(B, W, P)`` window similarities to ``(B, P)`` by mean, top-k mean or max."""
    if pool == "mean":
        return windows.mean(dim=1)
    if pool == "max":
        return windows.max(dim=1).values
    if pool == "topk":
        k = max(1, min(topk, windows.shape[1]))
        return windows.topk(k, dim=1).values.mean(dim=1)
    raise ValueError(f"pool_windows: unknown pool {pool!r}; choose one of {list(WINDOW_POOLS)}")


class PrototypeLayer(nn.Module):
    """Learnable prototypes, ``per_class`` for each of ``n_classes`` classes.

    Args:
        n_classes: number of classes C.
        per_class: prototypes per class; ``P = C * per_class``.
        dim: channels D of the (add-on) features.
        length: prototype length L in feature steps (``1`` for pooled 1D features).
        scaled: divide cosine by ``sqrt(D*L)`` (paper: 2D branches).
        pool: window pooling in the forward pass: ``mean`` (paper), ``topk`` or ``max``.
        topk: k for ``topk`` pooling.
    """

    def __init__(
        self,
        n_classes: int,
        per_class: int,
        dim: int,
        length: int = 1,
        *,
        scaled: bool = True,
        pool: WindowPool = "mean",
        topk: int = 5,
    ) -> None:
        super().__init__()
        if dim < 1 or length < 1:
            raise ValueError("PrototypeLayer: dim and length must be >= 1")
        if pool not in WINDOW_POOLS:
            raise ValueError(f"PrototypeLayer: unknown pool {pool!r}")
        if topk < 1:
            raise ValueError("PrototypeLayer: topk must be >= 1")
        identity = class_identity(n_classes, per_class)
        self.n_classes = n_classes
        self.per_class = per_class
        self.dim = dim
        self.length = length
        self.scaled = scaled
        self.pool = pool
        self.topk = topk
        # Uniform [0, 1) like ProtoPNet: the add-on output is a sigmoid, so features are positive.
        self.prototypes = nn.Parameter(torch.rand(identity.shape[0], dim, length))
        self.register_buffer("class_identity", identity)

    @property
    def n_prototypes(self) -> int:
        """Number of prototypes P."""
        return int(self.prototypes.shape[0])

    @property
    def prototype_class(self) -> torch.Tensor:
        """``(P,)`` class index of each prototype."""
        identity: torch.Tensor = self.class_identity  # type: ignore[assignment]
        return identity.argmax(dim=1)

    def forward(self, z: torch.Tensor) -> PrototypeScores:
        """Score ``(B, D, T)`` features against every prototype."""
        windows = window_cosine(z, self.prototypes, self.scaled)
        return PrototypeScores(pool_windows(windows, self.pool, self.topk), windows)

    def extra_repr(self) -> str:
        return (
            f"P={self.n_prototypes}, classes={self.n_classes}, dim={self.dim}, "
            f"length={self.length}, scaled={self.scaled}, pool={self.pool}"
        )
