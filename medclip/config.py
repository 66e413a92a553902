"""Typed configuration: YAML presets shipped in the package, loaded into frozen dataclasses.

``load_config("small", overrides=["optim.lr_towers=1e-4"])`` reads ``medclip/configs/small.yaml``
(or any YAML path), applies dotted ``key=value`` overrides and validates the result. Errors name
the bad key, e.g. ``ConfigError: model.embed_dimm: unknown key (did you mean embed_dim?)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from medclip.proto.config import ProtoConfig
from medclip.zeroshot_config import ZeroShotConfig

PRESETS: tuple[str, ...] = ("tiny", "small", "base")


class ConfigError(ValueError):
    """Invalid configuration; the message names the offending key."""


@dataclass(frozen=True)
class TowerConfig:
    """One encoder tower: a registry name plus config overrides.

    Attributes:
        name: name in :mod:`encoders.registry` (``medclip encoders`` lists them).
        kwargs: overrides of that encoder's config dataclass fields.
        pretrained_path: optional local weights file (safetensors or a state dict); never a URL.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained_path: str | None = None

    def __post_init__(self) -> None:
        if self.pretrained_path and "://" in self.pretrained_path:
            raise ConfigError(
                f"pretrained_path: {self.pretrained_path!r} looks like a URL; "
                "medclip only loads local files"
            )


@dataclass(frozen=True)
class ModelConfig:
    """Towers, the shared space and the temperature."""

    xray: TowerConfig = field(default_factory=lambda: TowerConfig("xray_vit_tiny_dropkey"))
    ecg: TowerConfig = field(default_factory=lambda: TowerConfig("ecg_resnet1d18"))
    text: TowerConfig = field(default_factory=lambda: TowerConfig("text_minilm_lora"))
    #: ``shared``: one text tower for radiology and cardiology text; ``separate``: two towers.
    text_towers: Literal["shared", "separate"] = "shared"
    #: ``combined``: one report string (CXR report + ECG statements) anchors both modalities;
    #: ``per_modality``: each modality pairs with its own report part.
    text_mode: Literal["combined", "per_modality"] = "combined"
    embed_dim: int = 128
    head: Literal["mlp_bn", "mlp_ln", "linear"] = "mlp_bn"
    head_hidden_dim: int | None = None
    logit_scale_init: float = 1.0 / 0.07
    logit_scale_max: float = 100.0

    def __post_init__(self) -> None:
        if self.embed_dim <= 0:
            raise ConfigError("model.embed_dim: must be positive")
        if not 1.0 <= self.logit_scale_init <= self.logit_scale_max:
            raise ConfigError("model.logit_scale_init: must lie in [1, logit_scale_max]")


@dataclass(frozen=True)
class LossConfig:
    """Contrastive loss: weighted InfoNCE over present modality pairs."""

    xray_text: float = 1.0
    ecg_text: float = 1.0
    #: 0 reproduces MoRE (no X-ray<->ECG term).
    xray_ecg: float = 1.0
    #: MedCLIP-style label-aware soft targets.
    soft_targets: bool = False
    #: weight of the identity in the soft targets (rows without labels fall back to it).
    soft_target_identity_mix: float = 0.5
    soft_target_temperature: float = 1.0
    gather_with_grad: bool = True

    def __post_init__(self) -> None:
        for k in ("xray_text", "ecg_text", "xray_ecg"):
            if getattr(self, k) < 0:
                raise ConfigError(f"loss.{k}: must be >= 0")
        if not 0.0 <= self.soft_target_identity_mix <= 1.0:
            raise ConfigError("loss.soft_target_identity_mix: must lie in [0, 1]")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with separate groups for towers, heads (incl. logit scale) and LoRA.

    ``schedule``: the cosine after warm-up spans ``epochs`` (``trainer.max_epochs``; exactly
    reproducible) or ``time`` (the ``trainer.max_time_s`` budget, measured like Lightning's
    time limit, so a time-capped run anneals by the time it stops, whatever the machine's
    speed; the learning rates then depend on timing and are not bit-reproducible).
    """

    lr_towers: float = 1e-4
    lr_heads: float = 1e-3
    lr_lora: float = 5e-4
    wd_towers: float = 0.05
    wd_heads: float = 0.0
    wd_lora: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    grad_clip_norm: float | None = 1.0
    schedule: Literal["epochs", "time"] = "epochs"

    def __post_init__(self) -> None:
        for k in ("lr_towers", "lr_heads", "lr_lora"):
            if getattr(self, k) <= 0:
                raise ConfigError(f"optim.{k}: must be positive")
        if self.schedule not in ("epochs", "time"):
            raise ConfigError(f"optim.schedule: choose 'epochs' or 'time', got {self.schedule!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it is preprocessed and batched."""

    #: ``synthetic`` (generated under ``root`` if absent), ``mimic`` (MIMIC-CXR + MIMIC-IV-ECG),
    #: ``ptbxl``, ``chexpert``.
    dataset: Literal["synthetic", "mimic", "ptbxl", "chexpert"] = "synthetic"
    root: str | None = None
    ecg_root: str | None = None
    cache_dir: str | None = None
    synth_n: int = 200
    synth_seed: int = 0
    batch_size: int = 32
    num_workers: int = 0
    ecg_fs_hz: float = 100.0
    ecg_length: int = 1000
    image_size: int = 224
    image_mean: float = 0.5
    image_std: float = 0.25
    pair_window_days: float = 60.0
    pairing: Literal["nearest", "all"] = "nearest"
    uncertainty_policy: Literal["ignore", "zero", "one"] = "ignore"
    skip_bad_records: bool = True
    max_text_tokens: int = 128

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("data.batch_size: must be >= 1")
        if self.ecg_fs_hz <= 0:
            raise ConfigError("data.ecg_fs_hz: must be positive")


@dataclass(frozen=True)
class TrainerConfig:
    """Lightning trainer settings."""

    max_epochs: int = 10
    max_steps: int = -1
    max_time_s: float | None = None
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    #: ``plain``: Lightning accumulation; ``feature_cache``: open_clip ``--accum-freq`` style,
    #: all micro-batches' embeddings serve as negatives.
    accum_mode: Literal["plain", "feature_cache"] = "plain"
    gradient_checkpointing: bool = False
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    log_every_n_steps: int = 10
    val_check_interval: float | int = 1.0
    deterministic: bool = False
    seed: int = 0
    out_dir: str = "runs"

    def __post_init__(self) -> None:
        if self.accumulate_grad_batches < 1:
            raise ConfigError("trainer.accumulate_grad_batches: must be >= 1")


@dataclass(frozen=True)
class MedclipConfig:
    """The whole experiment."""

    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    proto: ProtoConfig = field(default_factory=ProtoConfig)
    zeroshot: ZeroShotConfig = field(default_factory=ZeroShotConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-serialisable dict."""
        return _to_plain(dataclasses.asdict(self))


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def preset_path(name: str) -> Path:
    """Path of a shipped preset YAML."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {list(PRESETS)} or a YAML path")
    return Path(str(resources.files("medclip") / "configs" / f"{name}.yaml"))


def load_config(
    preset_or_path: str | Path = "small", overrides: list[str] | None = None
) -> MedclipConfig:
    """Load a preset name or YAML path, then apply dotted ``key=value`` overrides.

    Values in overrides are parsed as YAML scalars (``1e-4``, ``true``, ``[a, b]``).
    """
    src = str(preset_or_path)
    path = preset_path(src) if src in PRESETS else Path(src)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.lr_towers=1e-4")
        _set_dotted(raw, key.strip(), yaml.safe_load(text))
    return from_dict(MedclipConfig, raw)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{key}: {p} is not a section")
        node = nxt
    node[parts[-1]] = value


T = typing.TypeVar("T")


def from_dict(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses.

    Raises:
        ConfigError: naming the dotted key that is unknown or has the wrong type.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or '<root>'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{dotted}: unknown key{hint}")
        kwargs[key] = _coerce(hints[key], value, dotted)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix.rstrip('.') or '<root>'}: {exc}") from exc


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if tp is Any:
        return value
    if origin in (dict,):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if origin in (tuple,):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, key) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, key) for a, v in zip(args, value))
    if origin in (list,):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(args[0], v, key) if args else v for v in value]
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value
