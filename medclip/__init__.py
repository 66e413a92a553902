"""medclip: chest X-rays, 12-lead ECGs and report text in one embedding space.

Research use only. The public API is imported lazily so ``import medclip`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_config": ("medclip.config", "load_config"),
    "MedclipConfig": ("medclip.config", "MedclipConfig"),
    "load_bundle": ("medclip.bundle", "load_bundle"),
    "Predictor": ("medclip.inference", "Predictor"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'medclip' has no attribute {name!r}")
