"""The frozen-prefix cache of the text tower gives the uncached outputs and gradients."""

from __future__ import annotations

import pytest
import torch

from encoders.registry import ConfigError, create_encoder
from encoders.text import TextEncoder, TextEncoderConfig
from encoders.text_prefix import PrefixCache

REPORTS = [
    "Small left pleural effusion.",
    "No acute cardiopulmonary process. Heart size is normal and the lungs are clear.",
    "Sinus rhythm. Left ventricular hypertrophy. Abnormal ECG.",
]


def _pair(**kw: object) -> tuple[TextEncoder, TextEncoder]:
    """The same tiny tower without and with the cache; LoRA B made non-zero so it matters."""
    kw = {"tiny_layers": 3, "lora_top_layers": 1, "lora_dropout": 0.0, **kw}
    torch.manual_seed(0)
    plain = create_encoder("text_tiny_random", **kw)
    torch.manual_seed(0)
    cached = create_encoder("text_tiny_random", prefix_cache_mb=8, **kw)
    assert isinstance(plain, TextEncoder) and isinstance(cached, TextEncoder)
    with torch.no_grad():
        for name, p in plain.named_parameters():
            if "lora_B" in name:
                p.normal_()
    cached.load_state_dict(plain.state_dict())
    return plain, cached


def test_cached_outputs_equal_the_full_forward_and_hit_on_repeat() -> None:
    plain, cached = _pair()
    plain.eval(), cached.eval()
    tokens = plain.tokenize(REPORTS)
    with torch.no_grad():
        want = plain(**tokens)
        first, again = cached(**tokens), cached(**tokens)
        alone = cached(**cached.tokenize(REPORTS[:1]))  # other padding, served from the cache
    torch.testing.assert_close(first, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(again, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alone, want[:1], rtol=1e-5, atol=1e-6)
    cache = cached.prefix_cache
    assert cache is not None and len(cache) == 3
    assert (cache.stats.misses, cache.stats.hits) == (3, 4)


def test_gradients_reach_the_top_lora_layers_as_without_the_cache() -> None:
    plain, cached = _pair()
    tokens = plain.tokenize(REPORTS)
    for model in (plain, cached):
        model.eval()  # same dropout (none) on both sides; the top layers still get gradients
        with torch.enable_grad():
            model(**tokens).pow(2).sum().backward()
    grads = {n: p.grad for n, p in plain.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())
    for name, p in cached.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6)


def test_new_weights_or_a_device_move_clear_the_cache() -> None:
    plain, cached = _pair()
    tokens = cached.tokenize(REPORTS)
    cache = cached.prefix_cache
    assert cache is not None
    with torch.no_grad():
        cached(**tokens)
    assert len(cache) == 3
    cached.load_state_dict(plain.state_dict())
    assert len(cache) == 0
    with torch.no_grad():
        cached(**tokens)
    cached.to(torch.float64)
    assert len(cache) == 0


def test_lru_bound_in_bytes() -> None:
    cache = PrefixCache(max_bytes=3 * 4 * 10)  # three (10,) float32 entries
    for k in range(5):
        cache.put(bytes([k]), torch.zeros(10))
    assert len(cache) == 3 and cache.nbytes == 120 and cache.stats.evictions == 2
    assert cache.get(bytes([0])) is None and cache.get(bytes([4])) is not None
    cache.put(bytes([2]), torch.zeros(10))  # refreshing an entry does not double-count it
    assert cache.nbytes == 120
    with pytest.raises(ValueError, match="positive"):
        PrefixCache(0)


def test_config_needs_a_frozen_prefix() -> None:
    with pytest.raises(ValueError, match="lora_top_layers"):
        TextEncoderConfig(source="tiny_random", prefix_cache_mb=8)
    with pytest.raises(ValueError, match="lora_top_layers"):
        TextEncoderConfig(source="tiny_random", lora=False, lora_top_layers=1, prefix_cache_mb=8)
    with pytest.raises(ValueError, match=">= 0"):
        TextEncoderConfig(source="tiny_random", prefix_cache_mb=-1)
    with pytest.raises(ConfigError, match="prefix"):  # all layers adapted: nothing to cache
        create_encoder("text_tiny_random", tiny_layers=2, lora_top_layers=2, prefix_cache_mb=8)
