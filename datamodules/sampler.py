"""Batch sampler that never puts two pairs of the same group (study or subject) in one batch.

Many-to-many pairing (ANCHORS.md §1.2, MoRE) lets the same study or subject appear twice in a batch,
where contrastive learning then treats its own second pair as a negative. This sampler fixes the
number of batches per epoch (so Lightning's epoch length is exact), orders the groups at random,
and deals their items round-robin into the batches: the items of a group are contiguous in that
order, so as long as a group has no more items than there are batches they all land in different
batches. Without ``drop_last`` the number of batches grows to the largest group's size (every item
is used); with it, larger groups are subsampled per epoch (logged once).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

log = logging.getLogger(__name__)


class UniqueGroupBatchSampler(Sampler[list[int]]):
    """Yields index batches with at most one index per group.

    Args:
        groups: group key of every dataset index (e.g. ``Study.subject_id``).
        batch_size: maximum batch size.
        shuffle: new random grouping each epoch (seeded by ``seed`` and the epoch).
        drop_last: use ``len // batch_size`` full batches (items beyond them, and items of a
            group larger than the number of batches, are left out this epoch); otherwise every
            item is used, in ``max(ceil(len / batch_size), largest group)`` near-equal batches.
        seed: base seed.
        num_replicas: DDP world size (default: from ``torch.distributed`` when initialised).
        rank: DDP rank (default: from ``torch.distributed``). Each rank gets every
            ``num_replicas``-th batch; all ranks get the same number of batches.
    """

    def __init__(
        self,
        groups: Sequence[str],
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        if num_replicas is None:
            num_replicas = (
                dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
            )
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._explicit_epoch = False
        codes: dict[str, int] = {}
        self._codes = np.array([codes.setdefault(str(g), len(codes)) for g in groups], np.int64)
        self._n_groups = len(codes)
        n = len(self._codes)
        largest = int(np.bincount(self._codes).max()) if n else 0
        full = n // batch_size
        if drop_last and full >= 1:
            n_batches = full
            if largest > n_batches:
                log.warning(
                    "a group has %d items but an epoch has %d batches; each epoch uses %d of them",
                    largest,
                    n_batches,
                    n_batches,
                )
        else:  # keep every item: as many batches as the largest group needs (never zero)
            n_batches = max(math.ceil(n / batch_size), largest)
        self._n_batches_total = n_batches
        self._per_rank = n_batches // num_replicas if n_batches >= num_replicas else 0
        if n and self._per_rank == 0:
            raise ValueError(
                f"{n} items give {n_batches} batches, fewer than the {num_replicas} replicas"
            )

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (Lightning calls this each epoch)."""
        self.epoch = epoch
        self._explicit_epoch = True

    def __len__(self) -> int:
        return self._per_rank

    def _order(self, rng: np.random.Generator) -> np.ndarray:
        """Indices with each group's items contiguous; groups and items in random order."""
        idx = np.arange(len(self._codes))
        if not self.shuffle:
            first_seen = np.argsort(np.unique(self._codes, return_index=True)[1])
            rank_of_group = np.empty(self._n_groups, np.int64)
            rank_of_group[first_seen] = np.arange(self._n_groups)
            return idx[np.argsort(rank_of_group[self._codes], kind="stable")]
        group_rank = rng.permutation(self._n_groups)
        jitter = rng.permutation(len(idx))
        return idx[np.lexsort((jitter, group_rank[self._codes]))]

    def batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` across every replica (before sharding)."""
        rng = np.random.default_rng([self.seed, epoch])
        order = self._order(rng)
        n_batches = self._n_batches_total
        if n_batches == 0:
            return []
        # Cap every group at n_batches items so the round-robin deal cannot repeat it in a batch.
        codes = self._codes[order]
        starts = np.r_[0, np.flatnonzero(codes[1:] != codes[:-1]) + 1]
        lengths = np.diff(np.r_[starts, len(order)])
        pos_in_group = np.arange(len(order)) - np.repeat(starts, lengths)
        order = order[pos_in_group < n_batches]
        if self.drop_last and len(order) >= n_batches * self.batch_size:
            order = order[: n_batches * self.batch_size]
        out: list[list[int]] = [[] for _ in range(n_batches)]
        for k, i in enumerate(order.tolist()):
            out[k % n_batches].append(int(i))
        if self.shuffle:
            out = [out[j] for j in rng.permutation(n_batches)]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.epoch
        if not self._explicit_epoch:
            self.epoch += 1  # plain DataLoader use: new shuffle on every pass
        batches = self.batches(epoch)
        mine = batches[self.rank :: self.num_replicas][: self._per_rank]
        yield from mine
