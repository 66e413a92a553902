"""Reproducible randomness for DataLoaders.

Each worker derives its NumPy and :mod:`random` seeds from the per-worker torch seed that the
DataLoader draws from its ``generator``; so a loader built with :func:`make_generator` gives the
same samples on every run, while different workers and epochs still get different streams.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (pass it to ``DataLoader(generator=...)``)."""
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return gen


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed NumPy and :mod:`random` from the worker's torch seed.

    Args:
        worker_id: index of the worker (already folded into ``torch.initial_seed()``).
    """
    del worker_id  # torch.initial_seed() is base_seed + worker_id inside a worker
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def sample_rng() -> np.random.Generator:
    """A NumPy generator drawn from the current torch RNG (per-sample augmentation).

    Inside a worker the torch RNG is seeded by the DataLoader, in the main process by
    ``torch.manual_seed``; either way the stream is reproducible and changes between epochs.
    """
    seed = int(torch.randint(0, 2**62, (1,)).item())
    return np.random.default_rng(seed)
