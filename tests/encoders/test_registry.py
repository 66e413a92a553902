"""Encoder registry: names, config validation, the output_dim / input_spec contract."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torch import nn

from encoders import registry
from encoders.registry import (
    ConfigError,
    InputSpec,
    build_config,
    create_encoder,
    get_config_class,
    list_encoders,
    register_encoder,
)

REQUIRED = {
    "xray_vit_tiny_dropkey",
    "xray_vit_small_dropkey",
    "xray_vit_b16_dropkey",
    "ecg_resnet1d18",
    "ecg_xresnet1d50",
    "ecg_vit_conv1d",
    "ecg_resnet2d18_leadspan",
    "text_minilm_lora",
    "text_hf_lora",
    "text_tiny_random",
}

# small overrides so every tower builds in well under a second
SMALL: dict[str, tuple[dict[str, object], torch.Tensor | None]] = {
    "xray_vit_tiny_dropkey": ({}, torch.randn(2, 1, 64, 64)),
    "xray_vit_small_dropkey": (
        {"img_size": 32, "patch_size": 16, "depth": 1},
        torch.randn(2, 1, 32, 32),
    ),
    "xray_vit_b16_dropkey": ({"img_size": 32, "depth": 1}, torch.randn(2, 1, 32, 32)),
    "ecg_resnet1d18": ({"width": 8}, torch.randn(2, 12, 1000)),
    "ecg_xresnet1d50": ({"width": 4, "stem_widths": (8, 8, 8)}, torch.randn(2, 12, 1000)),
    "ecg_xresnet1d101": ({"width": 4, "stem_widths": (8, 8, 8)}, torch.randn(2, 12, 1000)),
    "ecg_vit_conv1d": (
        {"width": 32, "depth": 1, "num_heads": 2, "patch_channels": 8},
        torch.randn(2, 12, 1000),
    ),
    "ecg_resnet2d18_leadspan": ({"width": 8}, torch.randn(2, 12, 1000)),
    "text_tiny_random": ({}, None),
}


def test_all_required_names_are_listed() -> None:
    names = list_encoders()
    assert set(names) >= REQUIRED
    assert names == sorted(names)
    assert set(list_encoders("ecg_*")) == {n for n in names if n.startswith("ecg_")}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_tower_honours_the_contract(name: str) -> None:
    kw, x = SMALL[name]
    torch.manual_seed(0)
    model: Any = create_encoder(name, **kw).eval()
    assert isinstance(model.output_dim, int) and model.output_dim > 0
    assert isinstance(model.input_spec, InputSpec)
    assert model.input_spec.modality == name.split("_")[0]
    with torch.no_grad():
        if x is None:
            out = model(**model.tokenize(["a report", "another longer report text"]))
        else:
            out = model(x)
    assert out.shape == (2, model.output_dim)
    assert torch.isfinite(out).all()


def test_unknown_key_names_the_key_and_encoder() -> None:
    with pytest.raises(ConfigError, match=r"\['widht'\].*ecg_resnet1d18"):
        create_encoder("ecg_resnet1d18", widht=8)


def test_invalid_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="dropkey_ratio"):
        create_encoder("xray_vit_tiny_dropkey", dropkey_ratio=-0.5)


def test_unknown_encoder_lists_known_names() -> None:
    with pytest.raises(KeyError, match="ecg_resnet1d18"):
        create_encoder("ecg_resnet1d19")


def test_configs_are_frozen_dataclasses() -> None:
    for name in REQUIRED:
        cls = get_config_class(name)
        assert dataclasses.is_dataclass(cls)
        if name == "text_hf_lora":
            continue
        cfg: Any = build_config(cls, {})
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.pretrained_path = "x"


def test_register_custom_encoder_and_reject_duplicates() -> None:
    @dataclasses.dataclass(frozen=True)
    class _Cfg:
        dim: int = 3

    name = "test_only_linear"
    try:

        @register_encoder(name, _Cfg, dim=5)
        def _build(cfg: _Cfg) -> nn.Module:
            return nn.Linear(cfg.dim, cfg.dim)

        built = create_encoder(name)
        assert isinstance(built, nn.Linear) and built.in_features == 5
        assert name in list_encoders()
        with pytest.raises(KeyError, match="already registered"):
            register_encoder(name, _Cfg)(_build)
        with pytest.raises(ConfigError, match="bad_default"):
            register_encoder("test_only_bad", _Cfg, bad_default=1)(_build)
    finally:
        registry._REGISTRY.pop(name, None)
