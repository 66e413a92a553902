"""DropKey: mask construction, schedule, fp16/bf16 safety and the attention module swap."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from timm.layers import Attention

from encoders.dropkey import (
    DropKeyAttention,
    apply_dropkey,
    dropkey_mask,
    dropkey_ratios,
    dropkey_schedule,
)


def test_constant_schedule() -> None:
    assert dropkey_schedule(0.3, 4, "constant") == [0.3] * 4


def test_linear_schedule_decreases_from_ratio_to_zero() -> None:
    ratios = dropkey_schedule(0.2, 12, "linear")
    assert ratios[0] == pytest.approx(0.2)
    assert ratios[-1] == pytest.approx(0.0)
    assert ratios[5] == pytest.approx(0.2 * (1 - 5 / 11))
    assert all(a > b for a, b in itertools.pairwise(ratios))
    assert dropkey_schedule(0.2, 1, "linear") == [0.2]


@pytest.mark.parametrize(
    ("ratio", "schedule"), [(-0.1, "constant"), (1.0, "constant"), (0.1, "cosine")]
)
def test_schedule_rejects_bad_values(ratio: float, schedule: str) -> None:
    with pytest.raises(ValueError):
        dropkey_schedule(ratio, 3, schedule)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_mask_uses_dtype_minimum_and_keeps_diagonal(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    mask = dropkey_mask(4, 3, 50, 0.3, dtype=dtype, generator=g)
    assert mask.shape == (4, 3, 50, 50) and mask.dtype == dtype
    values = set(mask.unique().tolist())
    assert values == {0.0, torch.finfo(dtype).min}
    assert torch.all(torch.diagonal(mask, dim1=-2, dim2=-1) == 0)
    off = ~torch.eye(50, dtype=torch.bool)
    frac = (mask[..., off] < 0).float().mean().item()
    assert frac == pytest.approx(0.3, abs=0.02)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fully_dropped_rows_stay_finite(dtype: torch.dtype) -> None:
    """Ratio 1 drops every key except the token's own: no NaN, output = own value."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 7, 8).to(dtype) for _ in range(3))
    mask = dropkey_mask(2, 2, 7, 1.0, dtype=dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), v.float(), atol=1e-2, rtol=0)


def _attn(dim: int = 32, heads: int = 4) -> Attention:
    torch.manual_seed(0)
    return Attention(dim, num_heads=heads, qkv_bias=True)


def test_wrapper_reuses_layers_and_state_dict_keys() -> None:
    src = _attn()
    dk = DropKeyAttention(src, 0.2)
    assert dk.qkv is src.qkv and dk.proj is src.proj
    assert list(dk.state_dict()) == list(src.state_dict())
    assert dk.dropkey_ratio == 0.2
    with pytest.raises(ValueError):
        dk.dropkey_ratio = 1.0


@pytest.mark.parametrize(("dim", "heads"), [(32, 4), (48, 3), (64, 1)])
def test_eval_identical_train_different(dim: int, heads: int) -> None:
    src = _attn(dim, heads).eval()
    dk = DropKeyAttention(src, 0.5).eval()
    x = torch.randn(3, 10, dim)
    with torch.no_grad():
        ref = src(x)
        torch.testing.assert_close(dk(x), ref, rtol=0, atol=1e-6)
        dk.train()
        torch.manual_seed(1)
        assert not torch.allclose(dk(x), ref, atol=1e-4)
        dk.dropkey_ratio = 0.0
        torch.testing.assert_close(dk(x), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_training_forward_is_finite(dtype: torch.dtype) -> None:
    dk = DropKeyAttention(_attn(), 0.9).to(dtype).train()
    x = torch.randn(2, 16, 32, dtype=dtype)
    out = dk(x)
    assert out.dtype == dtype and torch.isfinite(out).all()


def test_caller_mask_is_kept_under_dropkey() -> None:
    """Keys masked by the caller stay masked in training: perturbing token 3 only moves row 3."""
    dk = DropKeyAttention(_attn(), 0.3).train()
    keep = torch.ones(10, 10, dtype=torch.bool)
    keep[:, 3] = False
    keep[3, 3] = True
    x = torch.randn(2, 10, 32)
    x2 = x.clone()
    x2[:, 3] += 5.0
    with torch.no_grad():
        torch.manual_seed(7)
        a = dk(x, attn_mask=keep)
        torch.manual_seed(7)
        b = dk(x2, attn_mask=keep)
    others = [i for i in range(10) if i != 3]
    torch.testing.assert_close(a[:, others], b[:, others])
    assert not torch.allclose(a[:, 3], b[:, 3])


def test_gradients_flow_through_wrapper() -> None:
    dk = DropKeyAttention(_attn(), 0.3).train()
    x = torch.randn(2, 8, 32, requires_grad=True)
    dk(x).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in dk.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_apply_dropkey_sets_ratio_on_attention_modules() -> None:
    from timm.models.vision_transformer import Block

    blocks = torch.nn.Sequential(*[Block(32, 4) for _ in range(4)])
    ratios = apply_dropkey(blocks, 0.3, "linear")
    assert all(isinstance(b.attn, DropKeyAttention) for b in blocks)
    assert dropkey_ratios(blocks) == pytest.approx([0.3, 0.2, 0.1, 0.0])
    assert ratios == pytest.approx([0.3, 0.2, 0.1, 0.0])
    apply_dropkey(blocks, 0.1, "constant")  # re-applying updates in place
    assert dropkey_ratios(blocks) == pytest.approx([0.1] * 4)
