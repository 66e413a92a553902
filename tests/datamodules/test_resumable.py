"""ResumableDataLoader: a loader rebuilt from ``state_dict()`` continues with exactly the batches
an uninterrupted loader would give, mid-epoch and across epoch boundaries."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from datamodules.resumable import ResumableDataLoader
from datamodules.sampler import UniqueGroupBatchSampler
from datamodules.seeding import make_generator

ITEMS = list(range(11))


def grouped_loader() -> ResumableDataLoader:
    groups = [f"s{i // 2}" for i in ITEMS]  # pairs share a subject
    sampler = UniqueGroupBatchSampler(groups, 3, shuffle=True, seed=5)
    return ResumableDataLoader(ITEMS, batch_sampler=sampler, generator=make_generator(1))


def shuffled_loader() -> ResumableDataLoader:
    return ResumableDataLoader(ITEMS, batch_size=3, shuffle=True, generator=make_generator(2))


def as_lists(batches: Any) -> list[list[int]]:
    return [b.tolist() for b in batches]


def roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    """Through ``torch.save`` / ``torch.load(weights_only=True)``, as in a checkpoint."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    out: dict[str, Any] = torch.load(buf, weights_only=True)
    return out


@pytest.mark.parametrize("make", [grouped_loader, shuffled_loader], ids=["grouped", "shuffled"])
@pytest.mark.parametrize("stop_after", [1, 2])
def test_mid_epoch_state_resumes_with_the_remaining_batches(make: Any, stop_after: int) -> None:
    ref = make()
    epochs = [as_lists(ref) for _ in range(3)]
    assert epochs[0] != epochs[1]  # a new shuffle each epoch
    victim = make()
    assert as_lists(victim) == epochs[0]
    it = iter(victim)
    seen = [next(it).tolist() for _ in range(stop_after)]
    assert seen == epochs[1][:stop_after]
    state = roundtrip(victim.state_dict())
    assert state["epoch"] == 1 and state["batches"] == stop_after

    resumed = make()
    resumed.load_state_dict(state)
    assert len(resumed) == len(ref)  # the length Lightning counts with is unchanged
    assert as_lists(resumed) == epochs[1][stop_after:]
    assert as_lists(resumed) == epochs[2]


def test_state_at_the_end_of_an_epoch_starts_the_next_epoch() -> None:
    ref = grouped_loader()
    epochs = [as_lists(ref) for _ in range(2)]
    victim = grouped_loader()
    assert as_lists(victim) == epochs[0]
    state = victim.state_dict()
    assert state["batches"] == state["length"] == len(epochs[0])
    resumed = grouped_loader()
    resumed.load_state_dict(roundtrip(state))
    assert as_lists(resumed) == epochs[1]


def test_skipped_batches_are_never_loaded() -> None:
    loaded: list[int] = []

    class Recording(torch.utils.data.Dataset[int]):
        def __len__(self) -> int:
            return len(ITEMS)

        def __getitem__(self, i: int) -> int:
            loaded.append(i)
            return i

    def make() -> ResumableDataLoader:
        return ResumableDataLoader(Recording(), batch_size=4, shuffle=False)

    victim = make()
    it = iter(victim)
    next(it)
    resumed = make()
    resumed.load_state_dict(victim.state_dict())
    loaded.clear()
    assert as_lists(resumed) == [[4, 5, 6, 7], [8, 9, 10]]
    assert loaded == list(range(4, 11))


def test_a_fresh_loader_ignores_an_empty_state() -> None:
    ref = as_lists(grouped_loader())
    loader = grouped_loader()
    loader.load_state_dict({})
    assert as_lists(loader) == ref
