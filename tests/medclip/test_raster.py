"""Pillow text bands: size, wrapping, legend keys, side-by-side columns and stacking."""

from __future__ import annotations

import numpy as np
import pytest

from medclip.raster import (
    TextLine,
    points_to_px,
    render_rgb,
    stack_rows,
    text_band,
    text_columns,
)


def _ink(a: np.ndarray) -> np.ndarray:
    """Pixels that are not white."""
    return np.asarray((a < 250).any(axis=-1))


def test_band_has_the_width_and_draws_the_text() -> None:
    band = text_band([TextLine("Research use only"), TextLine("second line")], 400, 12)
    assert band.dtype == np.uint8 and band.shape[1:] == (400, 3)
    assert band.shape[0] > 2 * 12 and _ink(band).sum() > 100
    assert text_band([], 400, 12).shape == (0, 400, 3)
    one = text_band([TextLine("Research use only")], 400, 12)
    assert one.shape[0] < band.shape[0]


def test_long_lines_wrap_instead_of_running_off_the_band() -> None:
    text = " ".join(["prototype"] * 40)
    band = text_band([TextLine(text)], 300, 11)
    assert band.shape[0] > 4 * 11  # several lines
    assert not _ink(band[:, -3:]).any()  # nothing touches the right edge


def test_legend_lines_get_their_colour_key() -> None:
    band = text_band(
        [TextLine("morphology prototype 2", key_color="tab:red")], 500, 11, align="left"
    )
    red = (band[..., 0] > 180) & (band[..., 1] < 80) & (band[..., 2] < 80)
    assert red.sum() >= 10
    with pytest.raises(ValueError, match="align"):
        text_band([TextLine("x")], 100, 10, align="right")


def test_columns_and_stacking() -> None:
    cols = text_columns(["input ECG, 2.00-2.94 s", "source segment"], 600, 11)
    assert cols.shape[1] == 600
    assert _ink(cols[:, :300]).any() and _ink(cols[:, 300:]).any()
    plot = np.zeros((50, 600, 3), dtype=np.uint8)
    out = stack_rows([cols, plot, text_band([], 600, 10)])
    assert out.shape == (cols.shape[0] + 50, 600, 3)
    with pytest.raises(ValueError, match="width"):
        stack_rows([plot, np.zeros((5, 10, 3), dtype=np.uint8)])
    assert points_to_px(8, 72) == 8 and points_to_px(10, 110) == 15


def test_render_rgb_sizes_the_image_and_lets_go_of_the_canvas() -> None:
    from matplotlib.backend_bases import FigureCanvasBase
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 2))
    fig.add_axes((0, 0, 1, 1)).plot([0, 1], [0, 1], color="black")
    rgb = render_rgb(fig, 50)
    assert rgb.shape == (100, 200, 3) and rgb.dtype == np.uint8 and (rgb < 128).any()
    assert type(fig.canvas) is FigureCanvasBase and not isinstance(fig.canvas, FigureCanvasAgg)
