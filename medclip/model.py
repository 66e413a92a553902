"""The shared embedding space: three towers, projection heads and a learnable temperature.

After MoRE (arXiv 2410.16239, ANCHORS.md §1.1-1.2) with these deliberate differences:

* ``logit_scale = log(1/tau)`` is an ordinary parameter created with the module, so the optimizer
  sees it and it learns (MoRE replaced it after building the optimizer, so it never trained). It
  is clamped to ``<= ln(logit_scale_max)`` in :meth:`MedclipModel.scale` and in place after each
  optimizer step (:meth:`MedclipModel.clamp_logit_scale_`).
* Towers come from :func:`encoders.create_encoder` by name, with any width or depth.
* Only rows where a modality is present are encoded; absent rows come back as zeros with a False
  mask and never enter the loss.
* ``text_towers="separate"`` gives radiology text and cardiology text their own towers and heads.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from datamodules.types import Batch
from encoders import create_encoder
from medclip.config import ModelConfig, TowerConfig
from medclip.heads import ProjectionHead

log = logging.getLogger(__name__)

TextTarget = Literal["xray", "ecg"]
TokenDict = Mapping[str, torch.Tensor]


@dataclass
class Embeddings:
    """Output of :meth:`MedclipModel.forward`.

    Attributes:
        emb: ``"xray"``, ``"ecg"`` and ``"text"`` (shared text tower, combined reports) or
            ``"text_xray"``/``"text_ecg"`` -> ``(B, E)`` float32, L2-normalised; zeros where absent.
        masks: same keys -> ``(B,)`` bool, True where the row was encoded.
    """

    emb: dict[str, torch.Tensor] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)


def build_tower(tower: TowerConfig) -> nn.Module:
    """Create a registry tower and load its local ``pretrained_path`` if set."""
    module = create_encoder(tower.name, **tower.kwargs)
    for attr in ("output_dim", "input_spec"):
        if not hasattr(module, attr):
            raise TypeError(f"encoder {tower.name!r} has no {attr!r} attribute")
    if tower.pretrained_path:
        loader = getattr(module, "load_weights", None)
        if callable(loader):
            loader(tower.pretrained_path)
        else:
            from encoders.weights import load_pretrained

            load_pretrained(module, tower.pretrained_path)
        log.info("loaded %s weights from %s", tower.name, tower.pretrained_path)
    return module


def _output_dim(tower: nn.Module) -> int:
    dim = getattr(tower, "output_dim", None)
    if not isinstance(dim, int) or dim <= 0:
        raise TypeError(f"{type(tower).__name__}.output_dim must be a positive int, got {dim!r}")
    return dim


def _has_batchnorm(*modules: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for mod in modules for m in mod.modules())


class MedclipModel(nn.Module):
    """X-ray, ECG and text towers projected into one L2-normalised space.

    Args:
        cfg: towers, head type, embedding size and temperature settings.
        tower_factory: builds a tower from its :class:`TowerConfig` (tests may substitute one).

    Attributes:
        towers: ``xray``, ``ecg`` and ``text`` (shared) or ``text_xray``/``text_ecg``.
        heads: one :class:`~medclip.heads.ProjectionHead` per tower, same keys.
        logit_scale: scalar parameter, ``log(1/tau)``.
    """

    def __init__(
        self, cfg: ModelConfig, tower_factory: Callable[[TowerConfig], nn.Module] = build_tower
    ) -> None:
        super().__init__()
        self.cfg = cfg
        towers: dict[str, nn.Module] = {
            "xray": tower_factory(cfg.xray),
            "ecg": tower_factory(cfg.ecg),
        }
        if cfg.text_towers == "shared":
            towers["text"] = tower_factory(cfg.text)
        else:
            towers["text_xray"] = tower_factory(cfg.text)
            towers["text_ecg"] = tower_factory(cfg.text)
        self.towers = nn.ModuleDict(towers)
        self.heads = nn.ModuleDict(
            {
                k: ProjectionHead(_output_dim(t), cfg.embed_dim, cfg.head, cfg.head_hidden_dim)
                for k, t in towers.items()
            }
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(cfg.logit_scale_init)))
        self.logit_scale_max_log = math.log(cfg.logit_scale_max)
        self._bn = {k: _has_batchnorm(towers[k], self.heads[k]) for k in towers}
        self._warned_per_modality = False

    # ------------------------------------------------------------------ temperature
    def scale(self) -> torch.Tensor:
        """Clamped log inverse temperature (scalar, differentiable below the clamp)."""
        return self.logit_scale.clamp(max=self.logit_scale_max_log)

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the parameter in place to ``[0, ln(logit_scale_max)]`` (after a step)."""
        self.logit_scale.clamp_(0.0, self.logit_scale_max_log)

    # ------------------------------------------------------------------ towers
    def text_key(self, target: TextTarget = "xray") -> str:
        """Tower key used for text paired with ``target`` (``text`` when shared)."""
        if target not in ("xray", "ecg"):
            raise ValueError(f"text target must be 'xray' or 'ecg', got {target!r}")
        return "text" if self.cfg.text_towers == "shared" else f"text_{target}"

    @property
    def text_tower(self) -> nn.Module:
        """The (radiology) text tower; has ``tokenize``."""
        return self.towers[self.text_key("xray")]

    def tokenize(self, texts: Sequence[str], target: TextTarget = "xray") -> dict[str, Any]:
        """Tokenize with the text tower paired with ``target``; ``input_ids`` ``(B, S)``."""
        tokenize = getattr(self.towers[self.text_key(target)], "tokenize", None)
        if not callable(tokenize):
            raise TypeError(f"text tower {self.cfg.text.name!r} has no tokenize()")
        tokens: dict[str, Any] = tokenize(list(texts))
        return tokens

    def project(self, key: str, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Tower ``key``'s ``(B, F)`` features -> ``(B, E)`` float32 shared-space embeddings.

        Args:
            key: a tower name (``xray``, ``ecg``, or a text tower key).
            features: that tower's output.
            normalize: L2-normalise (default); False returns the raw head output.
        """
        z = self.heads[key](features).float()
        return F.normalize(z, dim=-1) if normalize else z

    def encode_xray(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """``(B, 1, H, W)`` normalised images -> ``(B, E)`` float32 embeddings.

        Args:
            x: images as the X-ray tower's ``input_spec`` describes.
            normalize: L2-normalise (default); False returns the raw head output.
        """
        return self.project("xray", self.towers["xray"](x), normalize)

    def encode_ecg(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """``(B, 12, T)`` preprocessed ECGs -> ``(B, E)`` float32 embeddings (see encode_xray)."""
        return self.project("ecg", self.towers["ecg"](x), normalize)

    def encode_text(
        self,
        texts: Sequence[str] | TokenDict,
        target: TextTarget = "xray",
        normalize: bool = True,
    ) -> torch.Tensor:
        """Report strings or tokenizer output -> ``(B, E)`` float32 embeddings.

        Args:
            texts: list of strings, or a dict with ``input_ids`` and ``attention_mask`` ``(B, S)``
                from :meth:`tokenize` (same ``target``).
            target: which text tower with separate towers (``xray`` = radiology, ``ecg`` =
                cardiology); ignored with a shared tower.
            normalize: L2-normalise (default); False returns the raw head output (for
                prompt-set averaging before normalisation).
        """
        key = self.text_key(target)
        tokens = self.tokenize(texts, target) if not isinstance(texts, Mapping) else texts
        device = self.logit_scale.device
        ids = tokens["input_ids"].to(device)
        attn = tokens["attention_mask"].to(device)
        return self.project(key, self.towers[key](ids, attn), normalize)

    # ------------------------------------------------------------------ batches
    def _rows(
        self, key: str, mask: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode the rows where ``mask`` is True; zeros elsewhere. Returns ``(emb, mask)``."""
        b = mask.shape[0]
        idx = mask.nonzero().flatten()
        n = int(idx.numel())
        if n == 0 or (n == 1 and self.training and self._bn[key]):
            # BatchNorm cannot train on one row; a single row has no in-batch negative anyway
            empty = torch.zeros(b, self.cfg.embed_dim, device=mask.device)
            return empty, torch.zeros_like(mask)
        emb = encode(idx)
        out = emb.new_zeros(b, emb.shape[1]).index_copy(0, idx, emb)
        return out, mask.clone()

    def _text_rows(
        self, key: str, target: TextTarget, texts: Sequence[str], tokens: TokenDict | None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        def encode(idx: torch.Tensor) -> torch.Tensor:
            if tokens is not None:
                sel = {k: v[idx.to(v.device)] for k, v in tokens.items() if k in _TOKEN_KEYS}
                return self.encode_text(sel, target)
            rows = idx.tolist()
            return self.encode_text([texts[i] for i in rows], target)

        return encode

    def forward(self, batch: Batch) -> Embeddings:
        """Encode every present modality of a :class:`~datamodules.types.Batch`."""
        present = batch.present.bool()
        out = Embeddings()
        pairs = (("xray", 0, self.encode_xray, batch.xray), ("ecg", 1, self.encode_ecg, batch.ecg))
        for key, col, fn, x in pairs:

            def enc(
                idx: torch.Tensor,
                fn: Callable[[torch.Tensor], torch.Tensor] = fn,
                x: torch.Tensor = x,
            ) -> torch.Tensor:
                return fn(x[idx.to(x.device)])

            out.emb[key], out.masks[key] = self._rows(key, present[:, col], enc)
        text_present = present[:, 2]
        if self.cfg.text_towers == "shared" and self.cfg.text_mode == "combined":
            fn_t = self._text_rows("text", "xray", batch.text, batch.text_tokens)
            out.emb["text"], out.masks["text"] = self._rows("text", text_present, fn_t)
            return out
        parts = self._texts_per_target(batch)
        for target in ("xray", "ecg"):
            texts, tmask = parts[target]
            tokens = batch.text_tokens if texts is batch.text and target == "xray" else None
            key = self.text_key(target)  # type: ignore[arg-type]
            fn_t = self._text_rows(key, target, texts, tokens)  # type: ignore[arg-type]
            emb, mask = self._rows(key, tmask, fn_t)
            out.emb[f"text_{target}"], out.masks[f"text_{target}"] = emb, mask
        return out

    def _texts_per_target(self, batch: Batch) -> dict[str, tuple[list[str], torch.Tensor]]:
        """Report text paired with each modality (``text_mode``)."""
        present = batch.present.bool()[:, 2]
        combined = {t: (batch.text, present) for t in ("xray", "ecg")}
        if self.cfg.text_mode == "combined":
            return combined
        parts: Mapping[str, Sequence[str]] | None = getattr(batch, "text_by_modality", None)
        if not parts:
            if not self._warned_per_modality:
                log.warning(
                    "text_mode=per_modality but the batch has no per-modality reports "
                    "(Batch.text_by_modality); using the combined report for both"
                )
                self._warned_per_modality = True
            return combined
        out: dict[str, tuple[list[str], torch.Tensor]] = {}
        for t in ("xray", "ecg"):
            texts = [str(s or "") for s in parts[t]]
            mask = torch.tensor([bool(s.strip()) for s in texts], device=present.device)
            out[t] = (texts, mask)
        return out

    # ------------------------------------------------------------------ utilities
    def set_grad_checkpointing(self, enable: bool = True) -> list[str]:
        """Turn on activation checkpointing in every tower that supports it.

        Returns:
            The tower keys that support it.
        """
        done = []
        for key, tower in self.towers.items():
            fn = getattr(tower, "set_grad_checkpointing", None)
            if callable(fn):
                fn(enable)
                done.append(key)
            else:
                log.warning("tower %s has no set_grad_checkpointing; left unchanged", key)
        return done

    def embedding_keys(self) -> list[str]:
        """Keys of :attr:`Embeddings.emb` produced by :meth:`forward`."""
        if self.cfg.text_towers == "shared" and self.cfg.text_mode == "combined":
            return ["xray", "ecg", "text"]
        return ["xray", "ecg", "text_xray", "text_ecg"]

    def input_specs(self) -> dict[str, Any]:
        """Each tower's :class:`~encoders.registry.InputSpec`, by tower key."""
        return {k: t.input_spec for k, t in self.towers.items()}


_TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")
