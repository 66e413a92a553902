"""Lead-spanning 2D ResNet (ProtoECGNet morphology/global backbone)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from encoders.ecg1d import CANONICAL_LEADS
from encoders.ecg2d import Ecg2D
from encoders.registry import ConfigError, create_encoder


def _make(**kw: object) -> Any:
    torch.manual_seed(0)
    model = create_encoder("ecg_resnet2d18_leadspan", **kw)
    assert isinstance(model, Ecg2D)
    return model


def test_default_is_resnet18_with_lead_spanning_stem() -> None:
    model = _make()
    conv = model.conv1
    assert conv.weight.shape == (64, 1, 12, 7)
    assert (conv.stride, conv.padding) == ((1, 2), (0, 3))
    assert [len(s) for s in model.stages] == [2, 2, 2, 2]
    assert model.output_dim == 512
    spec = model.input_spec
    assert (spec.fs_hz, spec.length, spec.leads) == (100.0, 1000, CANONICAL_LEADS)


def test_feature_map_has_height_one_and_32_steps() -> None:
    model = _make(width=8).eval()
    x = torch.randn(2, 12, 1000)
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model(x)
    assert feats.shape == (2, 64, 1, 32)
    assert pooled.shape == (2, 64)
    torch.testing.assert_close(pooled, feats.mean(dim=(2, 3)))


def test_accepts_3d_and_4d_input() -> None:
    model = _make(width=8).eval()
    x = torch.randn(2, 12, 1000)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x.unsqueeze(1)), rtol=0, atol=0)


def test_stem_collapses_the_lead_axis() -> None:
    """The stem's kernel spans all 12 leads: its output has height 1 and sees every lead."""
    model = _make(width=8).eval()
    x = torch.zeros(1, 1, 12, 1000)
    with torch.no_grad():
        base = model.conv1(x)
        assert base.shape == (1, 8, 1, 500)
        for lead in (0, 11):
            x2 = x.clone()
            x2[0, 0, lead, 500] = 1.0
            assert (model.conv1(x2) - base).abs().sum() > 0


def test_gradients_and_checkpointing() -> None:
    x = torch.randn(2, 12, 1000)

    def grads(ckpt: bool) -> list[torch.Tensor]:
        model = _make(width=8, grad_checkpointing=ckpt).train()
        model(x).pow(2).sum().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    for a, b in zip(grads(False), grads(True), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_max_pool_and_fewer_leads() -> None:
    model = _make(width=8, pool="max", in_leads=3).eval()
    x = torch.randn(2, 1, 3, 1000)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_features(x).flatten(2).amax(-1))
    assert model.input_spec.leads is None


def test_wrong_input_shape_is_reported() -> None:
    model = _make(width=8)
    with pytest.raises(ValueError, match=r"\(B, 1, 12, T\)"):
        model(torch.randn(2, 3, 12, 1000))


@pytest.mark.parametrize(("key", "value"), [("width", 0), ("stem_kernel_t", 6), ("pool", "sum")])
def test_invalid_config_names_the_field(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        create_encoder("ecg_resnet2d18_leadspan", **{key: value})
