"""Checkpoint loading that never runs pickle code.

``.safetensors`` files are read with safetensors; anything else goes through
``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers. A file that
would need arbitrary pickle objects (a crafted checkpoint, or one holding whole modules) is
refused with :class:`~medclip.errors.UnsafeCheckpointError` instead of being executed.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from medclip.errors import BundleError, OutputWriteError, UnsafeCheckpointError

log = logging.getLogger(__name__)

_STATE_KEYS = ("state_dict", "model", "model_state_dict")


def safe_torch_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with a clear error for unsafe files.

    Raises:
        BundleError: the file does not exist.
        UnsafeCheckpointError: the file needs pickle objects beyond tensors and plain containers.
    """
    p = Path(path)
    if not p.is_file():
        raise BundleError(f"{p}: checkpoint not found")
    try:
        return torch.load(str(p), map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as exc:
        raise UnsafeCheckpointError(
            f"{p}: refusing to load: the file needs pickle objects that weights_only loading "
            f"does not allow ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
            "Only load checkpoints you trust; re-save them as safetensors or plain state dicts."
        ) from exc


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Flat ``{name: tensor}`` from ``.safetensors`` or a weights-only torch file.

    A Lightning checkpoint's ``state_dict`` (or ``model`` / ``model_state_dict``) is unwrapped.

    Raises:
        BundleError: missing file or no state dict inside.
        UnsafeCheckpointError: see :func:`safe_torch_load`.
    """
    p = Path(path)
    if p.suffix == ".safetensors":
        if not p.is_file():
            raise BundleError(f"{p}: weights file not found")
        from safetensors.torch import load_file

        return dict(load_file(str(p), device="cpu"))
    obj = safe_torch_load(p)
    if isinstance(obj, Mapping):
        for key in _STATE_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BundleError(f"{p}: no tensor state dict found")
    return {str(k): v for k, v in obj.items()}


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` into a temp file in the same folder, then ``os.replace`` onto ``path``.

    Raises:
        OutputWriteError: the disk is full (or read-only, ...): ``path`` keeps its previous
            content and the temp file is removed.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        # torch's zip writer reports a failed write as "RuntimeError: unexpected pos"
        error = OutputWriteError.from_exception(p, exc)
        if error is not None:
            raise error from exc
        raise
    return p


def write_json_atomic(path: str | Path, data: Any, *, allow_nan: bool = True) -> Path:
    """Write ``data`` as JSON to ``path`` via a temp file in the same folder and ``os.replace``.

    Args:
        path: target file (its folder is created).
        data: JSON-serialisable data.
        allow_nan: False refuses NaN/inf (strict JSON) with a ValueError.

    Raises:
        OutputWriteError: the disk is full or the folder is not writable (any previous file at
            ``path`` is unchanged and no temp file is left).
    """
    import json

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False, allow_nan=allow_nan)
            fh.write("\n")
        os.replace(tmp, out)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        error = OutputWriteError.from_exception(out, exc)
        if error is not None:
            raise error from exc
        raise
    return out
