"""A ``DataLoader`` that resumes mid-epoch at the exact batch it stopped at.

Lightning saves the ``state_dict()`` of every training loader that has one in its checkpoints
and hands it back to ``load_state_dict()`` before the loader is iterated again on resume. A
plain ``DataLoader`` has no such state, so a run resumed from a mid-epoch checkpoint starts the
epoch over with the wrong batches (and the wrong shuffle when workers fetch indices ahead).

:class:`ResumableDataLoader` records, for the epoch being iterated, the sampler's epoch, how
many batches it has handed out and the state of its ``generator`` when the epoch began. On
resume it restores that generator state and epoch and skips the batches already trained on at
the sampler level (their files are never read), so the remaining batches are exactly those of
an uninterrupted run.

Limits: the position counts the batches handed to the trainer, which must consume them in
order (as Lightning does); with ``num_workers > 0`` the workers' own random streams
(per-sample augmentation) restart on resume, so exact equality needs ``num_workers=0`` or
augmentation-free data.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader


class _SkipFirst:
    """Index sampler wrapper that drops the first ``skip`` items of its next iteration only."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.skip = 0

    def __iter__(self) -> Iterator[Any]:
        skip, self.skip = self.skip, 0
        return itertools.islice(iter(self.base), skip, None)

    def __len__(self) -> int:
        return len(self.base)


class ResumableDataLoader(DataLoader):  # type: ignore[type-arg]
    """``DataLoader`` with ``state_dict()`` / ``load_state_dict()`` for exact mid-epoch resume.

    Takes the arguments of :class:`torch.utils.data.DataLoader`. The state is a plain dict of
    ints and ``uint8`` generator-state tensors, so checkpoints holding it load with
    ``torch.load(weights_only=True)``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._skipper: _SkipFirst | None = None
        self._position = 0
        self._epoch = -1  # epoch of the iteration in progress
        self._next_epoch = 0
        self._generator_at_start: torch.Tensor | None = None

    @property
    def _index_sampler(self) -> Any:
        base = super()._index_sampler
        skipper: _SkipFirst | None = getattr(self, "_skipper", None)
        if skipper is None or skipper.base is not base:
            skipper = _SkipFirst(base)
            self._skipper = skipper
        return skipper

    def _set_epoch(self, epoch: int) -> None:
        """``set_epoch`` on the sampler and batch sampler that have one.

        Lightning calls ``set_epoch`` on ``sampler`` and ``batch_sampler.sampler`` only (and
        after the first ``iter`` of a run), never on a custom ``batch_sampler``: the loader
        numbers its iterations itself so each epoch's shuffle is the same with or without a
        resume (Lightning's own call, when it makes one, gives the same number).
        """
        seen: set[int] = set()
        for obj in (self.batch_sampler, self.sampler):
            if obj is None or id(obj) in seen:
                continue
            seen.add(id(obj))
            set_epoch = getattr(obj, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        skipper = self._index_sampler
        assert isinstance(skipper, _SkipFirst)
        self._epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        self._set_epoch(self._epoch)
        self._generator_at_start = (
            self.generator.get_state() if self.generator is not None else None
        )
        self._position = skipper.skip
        return self._counted(super().__iter__())

    def _counted(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            self._position += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Position in the current epoch: ``{"epoch", "batches", "length", "generator_*"}``."""
        try:
            length = len(self)
        except TypeError:  # an iterable dataset without a length
            length = -1
        state: dict[str, Any] = {
            "epoch": self._epoch,
            "batches": int(self._position),
            "length": length,
        }
        if self.generator is not None:
            state["generator_now"] = self.generator.get_state()
            if self._generator_at_start is not None:
                state["generator_at_start"] = self._generator_at_start
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` was taken: mid-epoch, skip the batches already used;
        at an epoch's end, start the next epoch."""
        batches = max(0, int(state.get("batches", 0)))
        epoch = int(state.get("epoch", -1))
        length = int(state.get("length", -1))
        finished = 0 < length <= batches
        gen_key = "generator_now" if finished else "generator_at_start"
        gen_state = state.get(gen_key)
        if self.generator is not None and isinstance(gen_state, torch.Tensor):
            self.generator.set_state(gen_state)
        if epoch >= 0:
            self._next_epoch = epoch + 1 if finished else epoch
        skipper = self._index_sampler
        assert isinstance(skipper, _SkipFirst)
        skipper.skip = 0 if finished else batches
