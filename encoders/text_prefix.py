"""A cache of the frozen lower layers' output of a BERT-style text tower.

With LoRA only in the top ``N`` layers (``lora_top_layers``), the embeddings and the layers
below them never change during training, so the hidden states they give a report are the same
every epoch. :class:`PrefixCache` keeps those states per distinct text (keyed by its token
ids) and :func:`forward_with_prefix_cache` runs only the top layers on them, the same idea as
open_clip's locked towers and LiT's precomputed features, applied to a prefix of the tower.

The prefix runs in eval mode (no dropout) so that its output is a function of the text alone;
the top layers keep their training-mode dropout and their LoRA adapters. The real tokens' states
do not depend on padding (padding is masked out of attention), so a text's cached states fit any
batch. Requirements, checked at set-up: a model with ``embeddings`` and ``encoder.layer``
(BERT, RoBERTa, MiniLM, PubMedBERT, BioClinicalBERT, ...), right padding, a frozen prefix.
Not thread-safe: the layer list is swapped for the duration of a forward pass.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from encoders.registry import ConfigError


@dataclass
class PrefixCacheStats:
    """Lookups since the cache was created or cleared."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0

    @property
    def hit_rate(self) -> float:
        """``hits / (hits + misses)``; 0 before any lookup."""
        return self.hits / max(self.hits + self.misses, 1)


class PrefixCache:
    """Least-recently-used store of ``(tokens, D)`` prefix states, bounded in bytes.

    Args:
        max_bytes: evict the least recently used texts beyond this many bytes of states.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.stats = PrefixCacheStats()
        self._items: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: bytes) -> torch.Tensor | None:
        """The states of ``key`` (marked as recently used), or None."""
        hit = self._items.get(key)
        if hit is None:
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        self._items.move_to_end(key)
        return hit

    def put(self, key: bytes, states: torch.Tensor) -> None:
        """Store ``states`` (detached) under ``key``, evicting old entries beyond the bound."""
        states = states.detach()
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old.numel() * old.element_size()
        self._items[key] = states
        self.nbytes += states.numel() * states.element_size()
        while self.nbytes > self.max_bytes and len(self._items) > 1:
            _, dropped = self._items.popitem(last=False)
            self.nbytes -= dropped.numel() * dropped.element_size()
            self.stats.evictions += 1

    def clear(self) -> None:
        """Forget every entry (weights or device changed)."""
        self._items.clear()
        self.nbytes = 0
        self.stats = PrefixCacheStats()


def bert_parts(model: Any) -> tuple[Any, nn.Module, nn.Module, nn.ModuleList]:
    """``(base model, embeddings, encoder, encoder.layer)`` of a (peft-wrapped) BERT-style model.

    Raises:
        ConfigError: the model does not have that structure.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    emb = getattr(base, "embeddings", None)
    enc = getattr(base, "encoder", None)
    layers = getattr(enc, "layer", None)
    if not isinstance(emb, nn.Module) or not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            f"prefix_cache_mb: needs a BERT-style text model (embeddings + encoder.layer); "
            f"{type(base).__name__} has another structure"
        )
    assert isinstance(enc, nn.Module)
    return base, emb, enc, layers


def check_prefix(model: Any, tokenizer: Any, depth: int) -> None:
    """Raise :class:`ConfigError` unless the bottom ``depth`` layers can be cached."""
    _, emb, _, layers = bert_parts(model)
    if not 0 < depth < len(layers):
        raise ConfigError(f"prefix_cache_mb: the frozen prefix has {depth} of {len(layers)} layers")
    trainable = [
        n for m in (emb, *list(layers)[:depth]) for n, p in m.named_parameters() if p.requires_grad
    ]
    if trainable:
        raise ConfigError(
            f"prefix_cache_mb: the cached layers must be frozen; {trainable[0]} trains"
        )
    if getattr(tokenizer, "padding_side", "right") != "right":
        raise ConfigError("prefix_cache_mb: needs a tokenizer that pads on the right")


@contextmanager
def _layers(enc: nn.Module, keep: list[nn.Module]) -> Iterator[None]:
    original = enc.layer
    enc.layer = nn.ModuleList(keep)
    try:
        yield
    finally:
        enc.layer = original


@contextmanager
def _eval(modules: list[nn.Module]) -> Iterator[None]:
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


@contextmanager
def _embedding_output(emb: nn.Module, states: torch.Tensor) -> Iterator[None]:
    handle = emb.register_forward_hook(lambda _m, _i, out: states.to(out.dtype))
    try:
        yield
    finally:
        handle.remove()


def forward_with_prefix_cache(
    model: Any,
    cache: PrefixCache,
    depth: int,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """Last hidden state ``(B, L, D)`` with the bottom ``depth`` layers served from ``cache``.

    Texts not in the cache go through the embeddings and the bottom layers once (eval mode,
    no autograd); then every row enters the top layers from its cached states.
    """
    base, emb, enc, layers = bert_parts(model)
    mask = attention_mask.bool()
    ids_cpu, mask_cpu = input_ids.cpu(), mask.cpu()
    keys = [ids_cpu[i][mask_cpu[i]].numpy().tobytes() for i in range(len(ids_cpu))]
    found = [cache.get(k) for k in keys]
    missing = [i for i, s in enumerate(found) if s is None]
    if missing:
        rows = torch.tensor(missing, device=input_ids.device)
        bottom = list(layers)[:depth]
        with torch.no_grad(), _eval([emb, *bottom]), _layers(enc, bottom):
            out = base(input_ids=input_ids[rows], attention_mask=attention_mask[rows])
        for j, i in enumerate(missing):
            found[i] = out.last_hidden_state[j][mask[i]].clone()
            cache.put(keys[i], found[i])  # type: ignore[arg-type]
    first = next(s for s in found if s is not None)
    states = first.new_zeros((*input_ids.shape, first.shape[-1]))
    for i, s in enumerate(found):
        states[i][mask[i]] = s  # type: ignore[assignment]
    with _layers(enc, list(layers)[depth:]), _embedding_output(emb, states):
        result = base(input_ids=input_ids, attention_mask=attention_mask)
    hidden: torch.Tensor = result.last_hidden_state
    return hidden
