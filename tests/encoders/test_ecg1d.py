"""1D ECG towers: ResNet1d (ProtoECGNet rhythm), XResNet1d (PTB-XL), conv-patch ViT (MoRE)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from encoders.dropkey import DropKeyAttention
from encoders.ecg1d import CANONICAL_LEADS, Ecg1D, EcgViTConfig
from encoders.registry import ConfigError, create_encoder

VIT_TINY = {"width": 32, "depth": 2, "num_heads": 2, "patch_channels": 16}


def _make(name: str, **kw: object) -> Any:
    torch.manual_seed(0)
    model = create_encoder(name, **kw)
    assert isinstance(model, Ecg1D)
    return model


def test_lead_order_matches_datamodules() -> None:
    from datamodules.types import CANONICAL_LEADS as DATA_LEADS

    assert CANONICAL_LEADS == DATA_LEADS


@pytest.mark.parametrize(
    ("name", "kw", "dim", "steps"),
    [
        ("ecg_resnet1d18", {"width": 8}, 64, 32),
        ("ecg_xresnet1d50", {"width": 4, "stem_widths": (8, 8, 8)}, 4 * 8 * 4, 32),
        ("ecg_vit_conv1d", VIT_TINY, 32, 196),
    ],
)
def test_shapes_and_spec(name: str, kw: dict[str, object], dim: int, steps: int) -> None:
    model = _make(name, **kw).eval()
    x = torch.randn(2, 12, 1000)
    with torch.no_grad():
        assert model(x).shape == (2, dim)
        assert model.forward_features(x).shape == (2, dim, steps)
    assert model.output_dim == dim
    spec = model.input_spec
    assert (spec.modality, spec.fs_hz, spec.length, spec.leads) == (
        "ecg",
        100.0,
        1000,
        CANONICAL_LEADS,
    )


def test_resnet1d18_is_basicblock_2222() -> None:
    model = _make("ecg_resnet1d18")
    assert model.output_dim == 512
    stages = model.backbone.stages
    assert [len(s) for s in stages] == [2, 2, 2, 2]
    assert type(stages[0][0]).__name__ == "BasicBlock1d"


def test_xresnet_depths() -> None:
    m50 = _make("ecg_xresnet1d50", width=4, stem_widths=(8, 8, 8))
    m101 = _make("ecg_xresnet1d101", width=4, stem_widths=(8, 8, 8))
    assert [len(s) for s in m50.backbone.stages] == [3, 4, 6, 3]
    assert [len(s) for s in m101.backbone.stages] == [3, 4, 23, 3]


def test_vit_defaults_follow_more() -> None:
    cfg = EcgViTConfig()
    assert (cfg.width, cfg.depth, cfg.num_heads, cfg.patch_channels) == (768, 12, 12, 256)
    assert cfg.num_tokens == 196  # 196 + CLS = ViT-B/16's 197 positions


def test_vit_dropkey_eval_identity_train_difference() -> None:
    model = _make("ecg_vit_conv1d", **VIT_TINY, dropkey_ratio=0.5)
    blocks = model.backbone.blocks
    assert all(isinstance(b.attn, DropKeyAttention) for b in blocks)
    x = torch.randn(2, 12, 1000)
    model.eval()
    with torch.no_grad():
        ref = model(x)
        # same weights with DropKey off must agree exactly in eval
        for b in blocks:
            b.attn.dropkey_ratio = 0.0
        torch.testing.assert_close(model(x), ref, rtol=0, atol=0)
        # train mode: BN uses batch stats, so compare train vs train with ratio 0 / 0.5
        model.train()
        torch.manual_seed(1)
        no_drop = model(x)
        for b in blocks:
            b.attn.dropkey_ratio = 0.5
        torch.manual_seed(1)
        assert not torch.allclose(model(x), no_drop, atol=1e-4)


def test_vit_linear_schedule() -> None:
    model = _make("ecg_vit_conv1d", **{**VIT_TINY, "depth": 3}, dropkey_schedule="linear")
    assert model.dropkey_ratios() == pytest.approx([0.3, 0.15, 0.0])


def test_vit_other_lengths_interpolate_positions() -> None:
    model = _make("ecg_vit_conv1d", **VIT_TINY).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 12, 500)).shape == (1, 32, 96)


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("ecg_resnet1d18", {"width": 8}),
        ("ecg_xresnet1d50", {"width": 4, "stem_widths": (8, 8, 8)}),
        ("ecg_vit_conv1d", VIT_TINY),
    ],
)
def test_gradients_reach_every_parameter(name: str, kw: dict[str, object]) -> None:
    model = _make(name, **kw).train()
    model(torch.randn(2, 12, 1000)).pow(2).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize(
    ("name", "kw"), [("ecg_resnet1d18", {"width": 8}), ("ecg_vit_conv1d", VIT_TINY)]
)
def test_grad_checkpointing_gives_same_gradients(name: str, kw: dict[str, object]) -> None:
    x = torch.randn(2, 12, 1000)

    def grads(ckpt: bool) -> list[torch.Tensor]:
        model = _make(name, **kw, grad_checkpointing=ckpt).train()
        torch.manual_seed(2)
        model(x).sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    for a, b in zip(grads(False), grads(True), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_max_pool_option() -> None:
    model = _make("ecg_resnet1d18", width=8, pool="max").eval()
    x = torch.randn(2, 12, 1000)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_features(x).amax(dim=-1))


def test_wrong_input_shape_is_reported() -> None:
    model = _make("ecg_resnet1d18", width=8)
    with pytest.raises(ValueError, match=r"\(B, 12, T\)"):
        model(torch.randn(2, 1000, 12))


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("ecg_resnet1d18", "width", 0),
        ("ecg_resnet1d18", "kernel_size", 4),
        ("ecg_xresnet1d50", "layers", ()),
        ("ecg_vit_conv1d", "num_heads", 5),
        ("ecg_vit_conv1d", "dropkey_ratio", 1.0),
    ],
)
def test_invalid_config_names_the_field(name: str, key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        create_encoder(name, **{key: value})


def test_yaml_lists_become_tuples() -> None:
    model = _make("ecg_resnet1d18", width=8, layers=[1, 1, 1, 1])
    assert model.config.layers == (1, 1, 1, 1)
    assert [len(s) for s in model.backbone.stages] == [1, 1, 1, 1]
