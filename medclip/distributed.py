"""Cross-rank gathers for the contrastive loss (DDP negatives).

Every rank scores its own rows against the columns of *all* ranks. The gathered columns keep their
autograd graph: :func:`gather_with_grad` is an ``all_gather`` whose backward sums the incoming
gradients over ranks (``all_reduce``) and returns this rank's slice, so gradients reach the rank
that produced each embedding. Ranks may hold different row counts (a short last batch); tensors
are padded to the largest count before the collective and unpadded afterwards.

Works with any backend that implements ``all_gather`` and ``all_reduce`` (gloo, nccl). Outside an
initialised process group every function is the identity.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def gather_sizes(n: int, device: torch.device) -> list[int]:
    """Row count of every rank, in rank order."""
    if not is_distributed():
        return [n]
    local = torch.tensor([n], dtype=torch.long, device=device)
    out = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(out, local)
    return [int(t.item()) for t in out]


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    if x.shape[0] == rows:
        return x
    pad = x.new_zeros((rows - x.shape[0], *x.shape[1:]))
    return torch.cat([x, pad], dim=0)


def _gather_padded(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """All-gather ``x`` (rows = this rank's size) into ``(sum(sizes), ...)`` without autograd."""
    biggest = max(sizes)
    padded = _pad_rows(x.contiguous(), biggest)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)], dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` forward; backward = sum of the gradients over ranks, own slice returned."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
        ctx.sizes = sizes
        ctx.rank = rank
        return _gather_padded(x, sizes)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        grad = grad.contiguous().clone()
        # every rank holds d(own loss)/d(all rows); the producer of a row needs the sum over ranks
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


def gather_with_grad(x: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Concatenate ``x`` ``(n_r, ...)`` of every rank in rank order, keeping gradients.

    Args:
        x: this rank's rows.
        sizes: row counts per rank if already known (saves one collective).

    Returns:
        ``(sum_r n_r, ...)``; ``x`` itself outside a process group.
    """
    if not is_distributed():
        return x
    sizes = sizes if sizes is not None else gather_sizes(x.shape[0], x.device)
    out: torch.Tensor = _GatherWithGrad.apply(x, sizes, dist.get_rank())
    return out


def gather_no_grad(x: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Like :func:`gather_with_grad` for tensors that need no gradient (masks, labels)."""
    if not is_distributed():
        return x
    sizes = sizes if sizes is not None else gather_sizes(x.shape[0], x.device)
    with torch.no_grad():
        if x.dtype == torch.bool:
            return _gather_padded(x.to(torch.uint8), sizes).bool()
        return _gather_padded(x, sizes)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ranks (no autograd); ``x`` outside a process group."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / dist.get_world_size()
