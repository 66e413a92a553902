"""The ProtoECGNet explanation figure: lead stacking, title and legend bands, the PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medclip.proto.explain import ExplanationResult, LabelExplanation, PrototypeExplanation
from medclip.proto.plot import _COLORS, explanation_image, lead_offsets_mv, plot_explanation

FS = 100.0


def _result(seed: int = 0) -> ExplanationResult:
    rng = np.random.default_rng(seed)
    t = np.arange(1000) / FS
    sig = 0.1 * rng.normal(size=(12, 1000)) + np.sin(2 * np.pi * 1.2 * t) ** 31
    sig[1] *= 3.0  # a tall lead
    protos = tuple(
        PrototypeExplanation(
            label="AFIB",
            branch=branch,
            prototype_id=i,
            prototype_class="AFIB",
            similarity=0.9 - 0.1 * i,
            similarity_z=1.0,
            contribution=0.5 - 0.1 * i,
            source_ecg_id=100 + i,
            source_window_s=(1.0, 1.0 + n / FS),
            input_window_s=(2.0 + i, 2.0 + i + n / FS),
            source_segment=rng.normal(size=(12, n)),
        )
        for i, (branch, n) in enumerate((("morphology", 94), ("rhythm", 300)))
    )
    label = LabelExplanation("AFIB", 0.91, 0.5, True, protos)
    return ExplanationResult(
        labels=(label,),
        probabilities={"AFIB": 0.91},
        signal_mv=sig,
        fs_hz=FS,
        training_data="unit-test ECGs",
    )


def test_stacked_leads_never_overlap_and_flat_leads_keep_room() -> None:
    rng = np.random.default_rng(1)
    traces = [rng.normal(size=(12, 500)) * rng.uniform(0.1, 3.0, size=(12, 1))]
    offsets, up, down = lead_offsets_mv(traces)
    assert offsets[0] == 0.0 and np.all(np.diff(offsets) < 0)
    assert np.all(offsets[:-1] - down[:-1] > offsets[1:] + up[1:])
    flat, _, _ = lead_offsets_mv([np.zeros((12, 100))])
    assert np.allclose(-np.diff(flat), 1.1)  # the minimum band, with 10% room


def _colour_pixels(img: np.ndarray, color: str) -> int:
    from matplotlib.colors import to_rgb

    target = np.array(to_rgb(color)) * 255
    return int((np.abs(img.astype(float) - target).max(axis=-1) < 30).sum())


def test_image_has_title_plot_and_a_legend_key_per_prototype() -> None:
    img = explanation_image(_result(), max_prototypes=5, dpi=50)
    assert img.dtype == np.uint8 and img.shape[1] == 14 * 50
    assert img.shape[0] > 12 * 0.8 * 50  # plot plus title and legend bands
    top, bottom = img[: img.shape[0] // 10], img[-img.shape[0] // 12 :]
    assert (top < 128).any()  # the title
    for color in _COLORS[:2]:  # both prototypes are drawn and keyed in the legend
        assert _colour_pixels(img, color) > 50
        assert _colour_pixels(bottom, color) > 5


def test_png_is_written_atomically(tmp_path: Path) -> None:
    out = plot_explanation(_result(), tmp_path / "sub" / "x.png", dpi=40)
    with Image.open(out) as im:
        assert im.size[0] == 14 * 40 and im.mode == "RGB"
    assert [p.name for p in out.parent.iterdir()] == ["x.png"]
