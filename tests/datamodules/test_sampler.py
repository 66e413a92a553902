"""UniqueGroupBatchSampler: at most one item per group (study/subject) in a batch."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datamodules.sampler import UniqueGroupBatchSampler


def check_unique(batches: list[list[int]], groups: list[str]) -> None:
    for batch in batches:
        keys = [groups[i] for i in batch]
        assert len(keys) == len(set(keys)), keys


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 4), min_size=1, max_size=40),
    batch_size=st.integers(1, 9),
    seed=st.integers(0, 3),
)
def test_no_group_twice_and_every_item_once(sizes: list[int], batch_size: int, seed: int) -> None:
    groups = [f"g{g}" for g, k in enumerate(sizes) for _ in range(k)]
    rng = np.random.default_rng(seed)
    groups = [groups[i] for i in rng.permutation(len(groups))]
    sampler = UniqueGroupBatchSampler(groups, batch_size, seed=seed)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    check_unique(batches, groups)
    assert all(0 < len(b) <= batch_size for b in batches)
    assert sorted(itertools.chain(*batches)) == list(range(len(groups)))  # each item once


def test_duplicates_of_one_subject_are_spread() -> None:
    groups = ["a"] * 4 + [f"s{i}" for i in range(12)]  # 16 items, subject "a" has 4 pairs
    sampler = UniqueGroupBatchSampler(groups, batch_size=4, seed=0)
    batches = list(sampler)
    assert len(batches) == 4
    check_unique(batches, groups)
    assert sum(groups[i] == "a" for b in batches for i in b) == 4


def test_oversized_group(caplog: pytest.LogCaptureFixture) -> None:
    groups = ["a"] * 5 + ["b", "c", "d"]
    keep_all = UniqueGroupBatchSampler(groups, batch_size=4)
    batches = list(keep_all)
    assert len(batches) == len(keep_all) == 5  # more, smaller batches; nothing dropped
    check_unique(batches, groups)
    assert sorted(itertools.chain(*batches)) == list(range(8))
    dropping = UniqueGroupBatchSampler(groups, batch_size=4, drop_last=True)
    batches = list(dropping)
    assert len(batches) == len(dropping) == 2
    check_unique(batches, groups)
    assert "a group has 5 items" in caplog.text


def test_epochs_reshuffle_and_seed_reproduces() -> None:
    groups = [f"g{i // 2}" for i in range(40)]
    a = UniqueGroupBatchSampler(groups, 8, seed=1)
    b = UniqueGroupBatchSampler(groups, 8, seed=1)
    first, second = list(a), list(a)  # plain DataLoader use: each pass is a new epoch
    assert first != second
    assert list(b) == first
    b.set_epoch(5)
    a.set_epoch(5)
    assert list(a) == list(b) == list(a)  # an explicit epoch is stable


def test_no_shuffle_is_deterministic_and_complete() -> None:
    groups = [f"g{i % 7}" for i in range(21)]
    s = UniqueGroupBatchSampler(groups, 5, shuffle=False)
    batches = list(s)
    assert batches == list(s)
    check_unique(batches, groups)
    assert sorted(itertools.chain(*batches)) == list(range(21))


def test_drop_last_gives_full_batches() -> None:
    groups = [str(i) for i in range(23)]
    s = UniqueGroupBatchSampler(groups, 5, drop_last=True)
    assert len(s) == 4
    assert [len(b) for b in s] == [5, 5, 5, 5]
    tiny = UniqueGroupBatchSampler(groups[:3], 5, drop_last=True)
    assert [len(b) for b in tiny] == [3]  # never drops everything


def test_replicas_get_disjoint_equal_shares() -> None:
    groups = [f"g{i // 3}" for i in range(50)]
    shards = [
        list(UniqueGroupBatchSampler(groups, 4, seed=3, num_replicas=2, rank=r)) for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 6
    seen = [i for shard in shards for b in shard for i in b]
    assert len(seen) == len(set(seen))
    with pytest.raises(ValueError, match="rank"):
        UniqueGroupBatchSampler(groups, 4, num_replicas=2, rank=2)
