"""The demo's pictures: prototype pairs and cached case previews (no bundle needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apps import figures


def test_prototype_pair_shows_the_input_window_beside_the_source_segment() -> None:
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(12, 1000))
    segment = rng.normal(size=(12, 94))
    img = figures.prototype_pair_array(
        signal, 100.0, (2.0, 2.94), segment, (4.0, 4.94), "AFIB: morphology prototype 3"
    )
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[1] == round(7.5 * 70)
    half = img.shape[1] // 2
    red = (img[..., 0] > 180) & (img[..., 1] < 110) & (img[..., 2] < 110)
    black = img.max(axis=-1) < 60
    assert red[:, half:].sum() > 200 and red[:, :half].sum() == 0  # the source on the right
    assert black[:, :half].sum() > black[:, half:].sum()  # the input on the left


def test_previews_are_decoded_once_and_read_again_when_they_change(tmp_path: Path) -> None:
    path = tmp_path / "case.png"
    Image.new("RGB", (640, 320), (10, 20, 30)).save(path)
    first = figures.load_image_array(path)
    assert first.shape == (160, 320, 3) and not first.flags.writeable
    assert figures.load_image_array(path) is first
    with pytest.raises(ValueError):
        first[0, 0, 0] = 1
    Image.new("RGB", (200, 200), (200, 0, 0)).save(path)
    os.utime(path, ns=(1, 10**18))  # a new modification time even on coarse clocks
    second = figures.load_image_array(path)
    assert second.shape == (200, 200, 3) and tuple(second[0, 0]) == (200, 0, 0)
