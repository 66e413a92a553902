"""medclip.resume: generator states survive a weights-only checkpoint and come back on resume."""

from __future__ import annotations

import io
import random
from typing import Any

import numpy as np
import torch

from medclip.resume import RngState, collect_rng_states, set_rng_states


def draws() -> tuple[list[float], list[float], list[float], list[float]]:
    return (
        torch.rand(4).tolist(),
        np.random.rand(4).tolist(),
        [np.random.randn() for _ in range(3)],  # leaves a cached gaussian half the time
        [random.random() for _ in range(4)],
    )


def weights_only_roundtrip(obj: Any) -> Any:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_states_roundtrip_through_a_weights_only_checkpoint() -> None:
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.randn()  # a cached gaussian in the NumPy state
    states = weights_only_roundtrip(collect_rng_states())
    expected = draws()
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    assert draws() != expected
    set_rng_states(states)
    assert draws() == expected


def test_callback_restores_the_checkpoint_states_when_training_starts() -> None:
    torch.manual_seed(7)
    saved = weights_only_roundtrip(RngState().state_dict())
    expected = torch.rand(3)
    torch.manual_seed(8)  # what a resumed process does before training (seeding, model init)
    cb = RngState()
    cb.load_state_dict(saved)
    cb.on_train_start(None, None)  # type: ignore[arg-type]
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(8)
    cb.on_train_start(None, None)  # type: ignore[arg-type]  # only once, only after a resume
    assert not torch.equal(torch.rand(3), expected)
