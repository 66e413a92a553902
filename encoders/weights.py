"""Local pretrained weights for encoder towers (never from the network).

``safetensors`` files are preferred; ``.pt``/``.pth``/``.ckpt``/``.bin`` files are read with
``torch.load(weights_only=True)`` (no pickle code execution). URLs and hub ids are refused.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES: tuple[str, ...] = (".safetensors",)
TORCH_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".ckpt", ".bin")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://|^hf[-_]hub:|^hf://")
_WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model", "model_state_dict", "module")
_SHOW = 10  # keys listed per category in an error message

StateDict = dict[str, torch.Tensor]


class WeightsError(RuntimeError):
    """A weights file is missing, unreadable, remote, or does not match the module."""


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
        path: the file that was read.
        loaded: keys copied into the module.
        missing: module keys the file did not provide.
        unexpected: file keys the module does not have.
        mismatched: ``(key, expected_shape, file_shape)`` for keys with a different shape.
    """

    path: Path
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]

    @property
    def ok(self) -> bool:
        """True when every key matched."""
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """Human-readable summary naming the offending keys."""
        parts = [f"{len(self.loaded)} tensors loaded from {self.path}"]
        if self.missing:
            parts.append(f"missing {len(self.missing)}: {_preview(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)}: {_preview(self.unexpected)}")
        if self.mismatched:
            shown = [f"{k} (module {tuple(a)} vs file {tuple(b)})" for k, a, b in self.mismatched]
            parts.append(f"shape mismatch {len(self.mismatched)}: {_preview(shown)}")
        return "; ".join(parts)


def _preview(items: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (f", ... (+{len(items) - _SHOW} more)" if len(items) > _SHOW else "")


def resolve_local_path(path: str | Path) -> Path:
    """Validate that ``path`` is an existing local file; refuse URLs and hub ids.

    Raises:
        WeightsError: a URL / hub id, or a file that does not exist.
    """
    text = str(path)
    if _URL.match(text):
        raise WeightsError(
            f"refusing to load weights from {text!r}: medclip never downloads weights; "
            "download the file yourself and pass a local path"
        )
    p = Path(text).expanduser()
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}")
    return p


def read_state_dict(path: str | Path) -> StateDict:
    """Read a flat ``{name: tensor}`` mapping from a local weights file.

    Common wrappers (``{"state_dict": ...}``, ``{"model": ...}``) and a DDP ``module.`` prefix are
    removed.

    Raises:
        WeightsError: remote path, missing file, unknown suffix, or unreadable content.
    """
    p = resolve_local_path(path)
    suffix = p.suffix.lower()
    try:
        if suffix in SAFETENSORS_SUFFIXES:
            from safetensors.torch import load_file

            raw: object = load_file(str(p), device="cpu")
        elif suffix in TORCH_SUFFIXES:
            raw = torch.load(str(p), map_location="cpu", weights_only=True)
        else:
            raise WeightsError(
                f"{p}: unknown weights format {suffix!r}; use .safetensors (preferred) or "
                f"one of {TORCH_SUFFIXES}"
            )
    except WeightsError:
        raise
    except Exception as exc:  # safetensors / pickle errors are library-specific
        raise WeightsError(f"{p}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    return _unwrap(raw, p)


def _unwrap(raw: object, path: Path) -> StateDict:
    obj = raw
    for _ in range(3):
        if isinstance(obj, Mapping) and not _is_state_dict(obj):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        raise WeightsError(f"{path}: no tensor state dict found in the file")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _is_state_dict(obj: Mapping[object, object]) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def save_state_dict(module: nn.Module, path: str | Path) -> Path:
    """Write ``module.state_dict()`` to a ``.safetensors`` file atomically.

    Returns:
        The written path.
    """
    from safetensors.torch import save_file

    p = Path(path)
    if p.suffix.lower() not in SAFETENSORS_SUFFIXES:
        raise WeightsError(f"{p}: save as .safetensors")
    p.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    tmp = p.with_name(f".{p.name}.tmp")
    save_file(_dedupe_shared(state), str(tmp))
    tmp.replace(p)
    return p


def _dedupe_shared(state: StateDict) -> StateDict:
    """Clone tensors that share storage (safetensors refuses shared tensors)."""
    seen: set[int] = set()
    out: StateDict = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        out[k] = v.clone() if ptr in seen and ptr != -1 else v
        seen.add(ptr)
    return out


def load_pretrained(
    module: nn.Module,
    path: str | Path,
    *,
    strict: bool = True,
    transform: Callable[[StateDict], StateDict] | None = None,
) -> LoadReport:
    """Load local weights into ``module`` and report which keys matched.

    Args:
        module: the tower (or sub-module) to fill.
        path: local ``.safetensors`` (preferred) or ``.pt``/``.pth``/``.ckpt``/``.bin`` file.
        strict: raise when any key is missing, unexpected or of another shape; otherwise load the
            matching tensors and log a warning naming the rest.
        transform: optional function applied to the file's state dict first (key renames, shape
            adaptation).

    Raises:
        WeightsError: remote path, unreadable file, or (``strict``) any key mismatch; the message
            names the file and the keys.
    """
    p = resolve_local_path(path)
    state = read_state_dict(p)
    if transform is not None:
        state = transform(state)
    own = module.state_dict()
    missing = tuple(k for k in own if k not in state)
    unexpected = tuple(k for k in state if k not in own)
    mismatched = tuple(
        (k, tuple(own[k].shape), tuple(state[k].shape))
        for k in own
        if k in state and own[k].shape != state[k].shape
    )
    bad = {k for k, _, _ in mismatched}
    loadable = {k: v for k, v in state.items() if k in own and k not in bad}
    report = LoadReport(p, tuple(loadable), missing, unexpected, mismatched)
    if strict and not report.ok:
        raise WeightsError(
            f"weights do not match {type(module).__name__}: {report.describe()} "
            "(pass strict=False / pretrained_strict=False to load the matching tensors only)"
        )
    if not loadable:
        raise WeightsError(f"{p}: no tensor matches {type(module).__name__}: {report.describe()}")
    module.load_state_dict(loadable, strict=False)
    if report.ok:
        logger.info("loaded %d tensors from %s", len(loadable), p)
    else:
        logger.warning("partial weights load: %s", report.describe())
    return report
