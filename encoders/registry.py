"""A timm-style registry of encoder towers.

Each entry maps a descriptive name (``xray_vit_b16_dropkey``, ``ecg_resnet1d18``, ...) to a typed,
frozen config dataclass and a builder. :func:`create_encoder` validates overrides against the
config's fields, so a typo names the bad key instead of failing deep inside a constructor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn


@dataclass(frozen=True)
class InputSpec:
    """What a tower expects as input; written to a bundle so preprocessing follows the model.

    Attributes:
        modality: ``"xray"``, ``"ecg"`` or ``"text"``.
        fs_hz: ECG sampling rate.
        length: ECG samples per lead, or text max tokens.
        leads: ECG lead order.
        image_size: CXR side in pixels (square, after keep-aspect resize + pad).
        mean: CXR normalisation mean (on the ``[0, 1]`` scale).
        std: CXR normalisation std.
    """

    modality: str
    fs_hz: float | None = None
    length: int | None = None
    leads: tuple[str, ...] | None = None
    image_size: int | None = None
    mean: float | None = None
    std: float | None = None


class ConfigError(ValueError):
    """A config has an unknown key or an invalid value; the message names the key."""


C = TypeVar("C")


@dataclass(frozen=True)
class _Entry:
    name: str
    config_cls: type
    builder: Callable[[Any], nn.Module]
    defaults: dict[str, Any]


_REGISTRY: dict[str, _Entry] = {}


def register_encoder(
    name: str, config_cls: type, **defaults: Any
) -> Callable[[Callable[[Any], nn.Module]], Callable[[Any], nn.Module]]:
    """Register ``builder(config) -> nn.Module`` under ``name``.

    Args:
        name: registry name.
        config_cls: the frozen config dataclass the builder takes.
        **defaults: field values this entry sets on top of the dataclass defaults.
    """

    def deco(builder: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        if name in _REGISTRY:
            raise KeyError(f"encoder {name!r} is already registered")
        build_config(config_cls, defaults, context=name)  # validate the defaults early
        _REGISTRY[name] = _Entry(name, config_cls, builder, dict(defaults))
        return builder

    return deco


def build_config(config_cls: type[C], values: dict[str, Any], context: str = "") -> C:
    """Instantiate ``config_cls`` from ``values``, naming any unknown key in the error."""
    names = {f.name for f in dataclasses.fields(config_cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    where = f" for {context}" if context else ""
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}{where}; valid keys: {sorted(names)}")
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config{where}: {exc}") from exc


def get_config_class(name: str) -> type:
    """Config dataclass of a registered encoder."""
    return _get(name).config_cls


def create_encoder(name: str, **overrides: Any) -> nn.Module:
    """Build a registered tower, overriding config fields by keyword.

    Raises:
        KeyError: unknown encoder name (the message lists the known ones).
        ConfigError: an override names an unknown field or has an invalid value.
    """
    entry = _get(name)
    cfg: Any = build_config(entry.config_cls, {**entry.defaults, **overrides}, context=name)
    return entry.builder(cfg)


def list_encoders(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, sorted."""
    import fnmatch

    _ensure_builtin()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def _get(name: str) -> _Entry:
    _ensure_builtin()
    if name not in _REGISTRY:
        raise KeyError(f"unknown encoder {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def _ensure_builtin() -> None:
    """Import the modules that register the built-in towers."""
    import importlib

    for mod in ("encoders.xray_vit", "encoders.ecg1d", "encoders.ecg2d", "encoders.text"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:  # a tower module not written yet
            if exc.name != mod:
                raise
