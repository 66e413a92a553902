"""Prototype layers: windowed cosine similarity, scaling, pooling, add-ons, last-layer init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from encoders.prototypes import (
    AddOnLayers,
    PrototypeLayer,
    class_identity,
    init_last_layer,
    pool_windows,
    window_cosine,
)


def test_class_identity_gives_consecutive_prototypes_per_class() -> None:
    ident = class_identity(3, 2)
    assert ident.shape == (6, 3)
    assert ident.argmax(dim=1).tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(ident.sum(dim=1), torch.ones(6))


def test_last_layer_init_is_plus_one_own_class_minus_half_elsewhere() -> None:
    ident = class_identity(3, 2)
    layer = nn.Linear(6, 3, bias=True)
    init_last_layer(layer, ident)
    w = layer.weight.detach()
    for c in range(3):
        for p in range(6):
            assert float(w[c, p]) == (1.0 if p // 2 == c else -0.5)
    assert torch.equal(layer.bias, torch.zeros(3))
    with pytest.raises(ValueError, match="expected"):
        init_last_layer(nn.Linear(5, 3), ident)


def test_window_cosine_matches_hand_computation() -> None:
    # z: D=2 channels, T=3 steps; one prototype of L=2 steps
    z = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]])
    p = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # flattened (D*L): [1, 0, 0, 1]
    # windows flattened channel-major: w0 = [1, 0, 0, 1], w1 = [0, 2, 1, 0]
    expected = torch.tensor([1.0, 0.0])
    got = window_cosine(z, p, scaled=False)
    assert got.shape == (1, 2, 1)
    assert torch.allclose(got[0, :, 0], expected, atol=1e-6)
    scaled = window_cosine(z, p, scaled=True)
    assert torch.allclose(scaled, got / math.sqrt(2 * 2))


def test_scaled_similarity_is_bounded_by_one_over_sqrt_dl() -> None:
    torch.manual_seed(0)
    z = torch.randn(4, 16, 10)
    protos = torch.randn(5, 16, 3)
    sims = window_cosine(z, protos, scaled=True)
    assert sims.shape == (4, 8, 5)
    assert float(sims.abs().max()) <= 1 / math.sqrt(16 * 3) + 1e-6
    # the paper's sizes: 512 channels, 3 steps -> about 0.026
    assert 1 / math.sqrt(512 * 3) == pytest.approx(0.0255, abs=1e-3)


def test_window_cosine_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        window_cosine(torch.randn(1, 4, 2), torch.randn(1, 4, 3), scaled=True)
    with pytest.raises(ValueError, match="channels"):
        window_cosine(torch.randn(1, 4, 5), torch.randn(1, 3, 2), scaled=True)


def test_pooling_mean_topk_max() -> None:
    w = torch.tensor([[[1.0], [4.0], [2.0], [3.0]]])  # (B=1, W=4, P=1)
    assert float(pool_windows(w, "mean")) == pytest.approx(2.5)
    assert float(pool_windows(w, "max")) == pytest.approx(4.0)
    assert float(pool_windows(w, "topk", topk=2)) == pytest.approx(3.5)
    assert float(pool_windows(w, "topk", topk=10)) == pytest.approx(2.5)  # k capped at W
    with pytest.raises(ValueError, match="unknown pool"):
        pool_windows(w, "median")


def test_prototype_layer_shapes_global_and_partial() -> None:
    torch.manual_seed(0)
    z = torch.rand(2, 8, 32)
    partial = PrototypeLayer(4, 3, 8, 3, scaled=True, pool="mean")
    out = partial(z)
    assert partial.n_prototypes == 12
    assert out.similarity.shape == (2, 12)
    assert out.windows.shape == (2, 30, 12)
    assert torch.allclose(out.similarity, out.windows.mean(dim=1))
    assert partial.prototype_class.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    glob = PrototypeLayer(2, 2, 8, 32, scaled=True, pool="max")(z)
    assert glob.windows.shape == (2, 1, 4)
    with torch.no_grad():
        vec = PrototypeLayer(2, 2, 8, 1, scaled=False)(z.mean(dim=-1, keepdim=True))
    # features and initial prototypes are non-negative, so plain cosine lies in [0, 1]
    assert float(vec.similarity.min()) >= 0.0 and float(vec.similarity.max()) <= 1.0 + 1e-6


def test_prototype_equal_to_a_window_scores_one_there() -> None:
    torch.manual_seed(1)
    layer = PrototypeLayer(1, 1, 4, 2, scaled=False, pool="max")
    z = torch.rand(1, 4, 6)
    with torch.no_grad():
        layer.prototypes[0] = z[0, :, 3:5]
    out = layer(z)
    assert int(out.windows[0, :, 0].argmax()) == 3
    assert float(out.similarity[0, 0]) == pytest.approx(1.0, abs=1e-6)


def test_add_on_layers_output_in_unit_interval() -> None:
    torch.manual_seed(0)
    add = AddOnLayers(8, 5)
    y = add(torch.randn(3, 8, 7) * 10)
    assert y.shape == (3, 5, 7)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_add_on_layers_without_sigmoid_can_be_negative() -> None:
    torch.manual_seed(0)
    add = AddOnLayers(8, 5, final_activation="none")
    y = add(torch.randn(3, 8, 7) * 10)
    assert float(y.min()) < 0.0
    with pytest.raises(ValueError, match="final_activation"):
        AddOnLayers(8, 5, final_activation="tanh")  # type: ignore[arg-type]
