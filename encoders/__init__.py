"""Encoder towers (X-ray ViT with DropKey, 1D/2D ECG networks, LoRA text) behind a registry.

``create_encoder(name, **overrides)`` builds a tower; ``list_encoders()`` lists the names. Every
tower is an ``nn.Module`` with ``output_dim`` and ``input_spec``. This package imports nothing
from ``medclip`` or ``datamodules``.
"""

from __future__ import annotations

from encoders.dropkey import DropKeyAttention, apply_dropkey, dropkey_mask, dropkey_schedule
from encoders.ecg1d import (
    CANONICAL_LEADS,
    Ecg1D,
    EcgInputConfig,
    EcgViTConfig,
    ResNet1dConfig,
    XResNet1dConfig,
)
from encoders.ecg2d import Ecg2D, LeadSpanResNet2dConfig
from encoders.registry import (
    ConfigError,
    InputSpec,
    build_config,
    create_encoder,
    get_config_class,
    list_encoders,
    register_encoder,
)
from encoders.text import (
    TextEncoder,
    TextEncoderConfig,
    TrainableSummary,
    default_text_model_path,
    masked_mean_pool,
)
from encoders.weights import LoadReport, WeightsError, load_pretrained, read_state_dict
from encoders.xray_vit import XrayViT, XrayViTConfig

__all__ = [
    "CANONICAL_LEADS",
    "ConfigError",
    "DropKeyAttention",
    "Ecg1D",
    "Ecg2D",
    "EcgInputConfig",
    "EcgViTConfig",
    "InputSpec",
    "LeadSpanResNet2dConfig",
    "LoadReport",
    "ResNet1dConfig",
    "TextEncoder",
    "TextEncoderConfig",
    "TrainableSummary",
    "WeightsError",
    "XResNet1dConfig",
    "XrayViT",
    "XrayViTConfig",
    "apply_dropkey",
    "build_config",
    "create_encoder",
    "default_text_model_path",
    "dropkey_mask",
    "dropkey_schedule",
    "get_config_class",
    "list_encoders",
    "load_pretrained",
    "masked_mean_pool",
    "read_state_dict",
    "register_encoder",
]
