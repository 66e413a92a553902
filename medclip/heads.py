"""Projection heads from tower features into the shared embedding space.

``mlp_bn`` follows MoRE (arXiv 2410.16239): Linear (no bias) + BatchNorm -> ReLU -> Linear
(no bias) + BatchNorm. ``mlp_ln`` swaps BatchNorm for LayerNorm (no cross-row statistics, so it
behaves identically for any batch size and under DDP). ``linear`` is a single bias-free Linear.

At inference (eval mode, autograd off) an ``mlp_bn`` head folds each BatchNorm into the Linear
before it, so it runs as two matmuls with bias. The folded weights are cached and rebuilt when
any weight or running statistic changes (tracked by tensor version counters).
"""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
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
        if self.kind == "mlp_bn" and not self.training and not torch.is_grad_enabled():
            (w1, b1), (w2, b2) = self._folded()
            return F.linear(torch.relu(F.linear(x, w1, b1)), w2, b2)
        out: torch.Tensor = self.net(x)
        return out

    def _folded(self) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """``((W1, b1), (W2, b2))``: each Linear with the BatchNorm after it folded in."""
        parts, tensors = self._fold_sources()
        key = tuple(t._version for t in tensors)  # in-place updates (optimizer, EMA, copy_)
        cached = self.__dict__.get("_fold_cache")
        if cached is not None and cached[0] == key:
            folded: tuple[tuple[torch.Tensor, torch.Tensor], ...] = cached[1]
            return folded
        with torch.no_grad():
            folded = tuple(_fold(lin.weight, bn) for lin, bn in parts)
        self.__dict__["_fold_cache"] = (key, folded)
        return folded

    def _fold_sources(
        self,
    ) -> tuple[list[tuple[nn.Linear, nn.BatchNorm1d]], tuple[torch.Tensor, ...]]:
        """The (Linear, BatchNorm) pairs and every tensor the folded weights depend on.

        Looked up once (module attribute access is slow); forgotten whenever tensors may be
        replaced rather than updated in place (``train``/``eval``, ``to``, state-dict loads).
        """
        hit = self.__dict__.get("_fold_src")
        if hit is None:
            net = cast(nn.Sequential, self.net)
            parts = [(cast(nn.Linear, net[i]), cast(nn.BatchNorm1d, net[i + 1])) for i in (0, 3)]
            tensors = tuple(t for lin, bn in parts for t in (lin.weight, *_bn_tensors(bn)))
            hit = self.__dict__["_fold_src"] = (parts, tensors)
        found: tuple[list[tuple[nn.Linear, nn.BatchNorm1d]], tuple[torch.Tensor, ...]] = hit
        return found

    def _forget_fold(self) -> None:
        self.__dict__.pop("_fold_src", None)
        self.__dict__.pop("_fold_cache", None)

    def train(self, mode: bool = True) -> ProjectionHead:
        """Set training mode (see :meth:`torch.nn.Module.train`); drops the folded weights."""
        self._forget_fold()
        return super().train(mode)

    def _apply(self, fn: Any, recurse: bool = True) -> ProjectionHead:
        self._forget_fold()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._forget_fold()
        super()._load_from_state_dict(*args, **kwargs)


def _bn_tensors(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, ...]:
    return tuple(t for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var) if t is not None)


def _fold(weight: torch.Tensor, bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """``BN(x @ W.T) == x @ W'.T + b'`` with BatchNorm's running statistics."""
    mean, var = bn.running_mean, bn.running_var
    if mean is None or var is None:  # track_running_stats=False: batch statistics at eval too
        raise RuntimeError("cannot fold a BatchNorm without running statistics")
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return (weight * scale[:, None]).contiguous(), shift.contiguous()
