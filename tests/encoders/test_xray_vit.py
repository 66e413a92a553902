"""XrayViT: timm ViT with DropKey (MoRE defects: no-op schedule, hard-coded 768/12 heads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from encoders.dropkey import DropKeyAttention
from encoders.registry import ConfigError, create_encoder
from encoders.weights import WeightsError
from encoders.xray_vit import XrayViT, XrayViTConfig, create_timm_vit

TINY: dict[str, Any] = {
    "img_size": 32,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
}


def _tiny(**kw: object) -> Any:
    torch.manual_seed(0)
    model = create_encoder("xray_vit_tiny_dropkey", **{**TINY, **kw})
    assert isinstance(model, XrayViT)
    return model


def _plain_reference(model: XrayViT) -> torch.nn.Module:
    ref = create_timm_vit(model.config)
    state = {k.removeprefix("vit."): v for k, v in model.state_dict().items()}
    ref.load_state_dict(state)
    return ref


def test_registry_tiny_defaults_and_shapes() -> None:
    torch.manual_seed(0)
    model: Any = create_encoder("xray_vit_tiny_dropkey")
    assert model.output_dim == 64
    spec = model.input_spec
    assert (spec.modality, spec.image_size, spec.mean, spec.std) == ("xray", 64, 0.5, 0.25)
    out = model.eval()(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 64)
    assert model.forward_features(torch.randn(2, 1, 64, 64)).shape == (2, 1 + 64, 64)


def test_b16_entry_is_vit_base_without_qkv_bias() -> None:
    model: Any = create_encoder("xray_vit_b16_dropkey", depth=1)  # one block keeps the test small
    assert model.output_dim == 768 and model.input_spec.image_size == 224
    attn = model.vit.blocks[0].attn
    assert isinstance(attn, DropKeyAttention)
    assert (attn.num_heads, attn.head_dim) == (12, 64)
    assert attn.qkv.bias is None
    assert model.vit.patch_embed.proj.weight.shape == (768, 1, 16, 16)
    assert model.vit.pos_embed.shape == (1, 197, 768)


@pytest.mark.parametrize(("width", "heads"), [(32, 2), (48, 3), (64, 8)])
def test_eval_matches_plain_timm_and_train_differs(width: int, heads: int) -> None:
    model = _tiny(embed_dim=width, num_heads=heads, dropkey_ratio=0.3)
    ref = _plain_reference(model).eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        expected = ref(x)
        torch.testing.assert_close(model.eval()(x), expected, rtol=0, atol=1e-6)
        model.train()
        torch.manual_seed(1)
        assert not torch.allclose(model(x), expected, atol=1e-4)
        ref.train()  # plain timm with dropout/drop_path 0 is deterministic in train mode
        torch.testing.assert_close(ref(x), expected, rtol=0, atol=1e-6)


def test_zero_ratio_train_equals_eval() -> None:
    model = _tiny(dropkey_ratio=0.0)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.train()(x), model.eval()(x), rtol=0, atol=1e-6)


def test_schedule_is_set_on_attention_modules() -> None:
    model = _tiny(depth=4, dropkey_ratio=0.3, dropkey_schedule="linear")
    expected = [0.3, 0.2, 0.1, 0.0]
    assert model.dropkey_ratios() == pytest.approx(expected)
    for block, r in zip(model.vit.blocks, expected):
        assert isinstance(block.attn, DropKeyAttention)
        assert block.attn.dropkey_ratio == pytest.approx(r)
    model.set_dropkey(0.2, "constant")
    assert model.dropkey_ratios() == pytest.approx([0.2] * 4)


def test_last_layer_with_zero_ratio_is_inactive() -> None:
    """Linear schedule: only layers with ratio > 0 change the output in training."""
    model = _tiny(depth=2, dropkey_ratio=0.4, dropkey_schedule="linear")
    attn0, attn1 = model.vit.blocks[0].attn, model.vit.blocks[1].attn
    tokens = torch.randn(2, 17, 32)
    with torch.no_grad():
        torch.testing.assert_close(attn1.train()(tokens), attn1.eval()(tokens))
        assert not torch.allclose(attn0.train()(tokens), attn0.eval()(tokens), atol=1e-4)


def test_gradients_reach_every_parameter() -> None:
    model = _tiny().train()
    model(torch.randn(2, 1, 32, 32)).pow(2).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad


def test_grad_checkpointing_replays_dropkey_masks() -> None:
    x = torch.randn(2, 1, 32, 32)

    def grads(checkpointing: bool) -> list[torch.Tensor]:
        model = _tiny(grad_checkpointing=checkpointing).train()
        torch.manual_seed(3)
        model(x).sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain, ckpt = grads(False), grads(True)
    assert len(plain) == len(ckpt)
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_bf16_autocast_training_is_finite() -> None:
    model = _tiny(dropkey_ratio=0.9).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 1, 32, 32))
    assert torch.isfinite(out.float()).all()


def test_wrong_input_shape_is_reported() -> None:
    model = _tiny()
    with pytest.raises(ValueError, match=r"\(B, 1, 32, 32\)"):
        model(torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize(
    ("key", "value"),
    [("dropkey_ratio", 1.5), ("dropkey_schedule", "cosine"), ("model_name", "resnet50")],
)
def test_invalid_config_names_the_field(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        create_encoder("xray_vit_tiny_dropkey", **{key: value})


def test_pretrained_is_never_passed_to_timm() -> None:
    assert XrayViTConfig().timm_kwargs()["pretrained"] is False


def test_loads_timm_native_rgb_checkpoint(tmp_path: Path) -> None:
    """A timm ViT (3 channels, classifier head) loads: channels summed, head dropped."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(5)
    rgb: Any = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, in_chans=3, num_classes=5, **TINY
    )
    path = tmp_path / "vit_rgb.safetensors"
    save_file({k: v.contiguous() for k, v in rgb.state_dict().items()}, str(path))
    with pytest.raises(WeightsError, match=r"unexpected 2: vit\.blocks\.0\.attn\.qkv\.bias"):
        _tiny(pretrained_path=str(path))  # MoRE default qkv_bias=False; timm ViTs have a bias
    model = _tiny(pretrained_path=str(path), qkv_bias=True)
    torch.testing.assert_close(
        model.vit.patch_embed.proj.weight, rgb.patch_embed.proj.weight.sum(dim=1, keepdim=True)
    )
    torch.testing.assert_close(model.vit.blocks[1].attn.qkv.weight, rgb.blocks[1].attn.qkv.weight)
    torch.testing.assert_close(model.vit.blocks[1].attn.qkv.bias, rgb.blocks[1].attn.qkv.bias)
    torch.testing.assert_close(model.vit.pos_embed, rgb.pos_embed)
