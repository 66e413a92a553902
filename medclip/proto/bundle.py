"""The ProtoECGNet bundle: a folder that loads without pickle and without network.

Layout::

    BUNDLE/
      config.json                   proto config, label groups, branch shapes, preprocessing,
                                    per-label thresholds (tuned on validation), training data name
      model.safetensors             all weights (backbones, add-ons, prototypes, classifiers,
                                    fusion, similarity statistics)
      labels.json                   fused label order and groups
      metrics.json                  test-fold macro AUROC per branch and fused (with bootstrap CI)
      card.md                       data, metrics, intended use ("research use only")
      prototypes/prototypes.safetensors   {branch: (P, D, L)} projected prototypes
      prototypes/prototypes.json          one entry per prototype: branch, index, class, source
                                          ecg_id, window [start_s, end_s], similarity
      prototypes/segments.safetensors     {branch: (P, 12, S)} source segments in mV
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.proto_groups import ProtoGroups
from medclip.errors import BundleError
from medclip.proto.config import ProtoConfig
from medclip.proto.data import Preprocessing
from medclip.proto.model import ProtoECGNet, build_proto_model
from medclip.proto.push import PrototypeSource
from medclip.safe_load import write_json_atomic

BUNDLE_FORMAT = "medclip-proto-bundle"
BUNDLE_VERSION = 1
RESEARCH_NOTE = "Research use only: not a medical device, not for clinical decisions."


@dataclass
class ProtoBundle:
    """A loaded ProtoECGNet bundle.

    Attributes:
        model: the network in eval mode.
        config: the proto config it was trained with.
        preprocessing: how a raw mV ECG becomes model input.
        sources: per branch, one :class:`PrototypeSource` per prototype.
        segments: per branch, ``(P, 12, S)`` source segments in mV.
        thresholds: ``(L,)`` per-label probability thresholds in ``model.labels`` order.
        training_data: name of the training data (from the card).
        metrics: test metrics written at training time.
        card: the model card text.
        path: the bundle folder.
    """

    model: ProtoECGNet
    config: ProtoConfig
    preprocessing: Preprocessing
    sources: dict[str, list[PrototypeSource]]
    segments: dict[str, np.ndarray]
    thresholds: np.ndarray
    training_data: str
    metrics: dict[str, Any] = field(default_factory=dict)
    card: str = ""
    path: Path | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        """Fused label order."""
        return self.model.labels


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def branch_info(model: ProtoECGNet) -> dict[str, dict[str, Any]]:
    """Shape facts of each branch, written to ``config.json``."""
    out: dict[str, dict[str, Any]] = {}
    for n in model.branch_names:
        b = model.branch(n)
        out[n] = {
            "classes": list(b.classes),
            "n_prototypes": b.n_prototypes,
            "prototype_length": b.prototype_layer.length,
            "partial": b.is_partial,
            "backbone_steps": b.backbone_steps,
            "step_samples": b.step_samples,
            "scaled": b.prototype_layer.scaled,
        }
    return out


def export_proto_bundle(
    out: str | Path,
    model: ProtoECGNet,
    cfg: ProtoConfig,
    preprocessing: Preprocessing,
    sources: dict[str, list[PrototypeSource]],
    segments: dict[str, np.ndarray],
    thresholds: np.ndarray,
    training_data: str,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle folder (every file atomically) and return its path."""
    path = Path(out)
    (path / "prototypes").mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items()}
    _save_tensors(path / "model.safetensors", state)
    _save_tensors(
        path / "prototypes" / "prototypes.safetensors",
        {n: model.branch(n).prototype_layer.prototypes for n in model.branch_names},
    )
    _save_tensors(
        path / "prototypes" / "segments.safetensors",
        {n: torch.from_numpy(np.ascontiguousarray(segments[n])) for n in model.branch_names},
    )
    write_json_atomic(
        path / "prototypes" / "prototypes.json",
        {
            "branches": branch_info(model),
            "fs_hz": preprocessing.fs_hz,
            "segment_units": "mV (after the high-pass filter)",
            "prototypes": [s.as_dict() for n in model.branch_names for s in sources[n]],
        },
    )
    thr = [float(t) for t in np.asarray(thresholds).reshape(-1)]
    if len(thr) != len(model.labels):
        raise BundleError(f"{len(thr)} thresholds for {len(model.labels)} labels")
    write_json_atomic(
        path / "config.json",
        {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "proto": _plain(cfg),
            "groups": model.groups.as_dict(),
            "labels": list(model.labels),
            "branches": branch_info(model),
            "preprocessing": preprocessing.as_dict(),
            "thresholds": dict(zip(model.labels, thr)),
            "training_data": training_data,
        },
    )
    write_json_atomic(
        path / "labels.json", {"labels": list(model.labels), "groups": model.groups.as_dict()}
    )
    write_json_atomic(path / "metrics.json", metrics or {})
    _write_text(path / "card.md", _card(model, training_data, metrics or {}))
    return path


def _plain(cfg: ProtoConfig) -> dict[str, Any]:
    import dataclasses

    d = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _card(model: ProtoECGNet, training_data: str, metrics: dict[str, Any]) -> str:
    lines = [
        "# ProtoECGNet bundle (medclip)",
        "",
        f"**{RESEARCH_NOTE}**",
        "",
        f"- Method: ProtoECGNet (arXiv 2504.08713), branches: {', '.join(model.branch_names)}",
        f"- Training data: {training_data}",
        f"- Labels: {len(model.labels)} SCP statements",
        "",
        "## Test metrics (macro AUROC over the whole test fold, 95% bootstrap CI)",
        "",
    ]
    for name, m in metrics.get("test", {}).items():
        if isinstance(m, dict) and m.get("macro_auroc") is not None:
            ci = m.get("macro_ci") or [None, None]
            ci_txt = f" [{ci[0]:.4f}, {ci[1]:.4f}]" if None not in ci else ""
            lines.append(f"- {name}: {m['macro_auroc']:.4f}{ci_txt} (n={m.get('n', '?')})")
    lines += [
        "",
        "## Limits",
        "",
        "- Prototypes are training ECG segments; similarity is not a diagnosis.",
        "- Thresholds were tuned on the validation fold only.",
        "",
    ]
    return "\n".join(lines)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise BundleError(f"{path}: missing from the bundle")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable JSON ({exc})") from exc


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise BundleError(f"{path}: missing from the bundle")
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise BundleError(f"{path}: unreadable safetensors ({exc})") from exc


def load_proto_bundle(path: str | Path, map_location: str | torch.device = "cpu") -> ProtoBundle:
    """Load a bundle written by :func:`export_proto_bundle` (no pickle, no network).

    Raises:
        BundleError: missing or malformed files, or weights that do not fit the config.
    """
    from medclip.config import ConfigError, from_dict

    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle folder")
    conf = _read_json(root / "config.json")
    if conf.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{root / 'config.json'}: not a ProtoECGNet bundle")
    try:
        cfg = from_dict(ProtoConfig, conf["proto"], prefix="proto.")
        groups = ProtoGroups.from_dict(conf["groups"])
        pre = Preprocessing.from_dict(conf["preprocessing"])
    except (KeyError, ConfigError, ValueError, TypeError) as exc:
        raise BundleError(f"{root / 'config.json'}: malformed ({exc})") from exc
    # the backbones' random init is overwritten by the weights below
    model = build_proto_model(cfg, groups, pre.length)
    state = _load_tensors(root / "model.safetensors")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(
            f"{root / 'model.safetensors'}: does not match config.json ({exc})"
        ) from exc
    model.to(map_location).eval()
    if list(model.labels) != list(conf.get("labels", [])):
        raise BundleError(f"{root / 'config.json'}: label order does not match the model")
    pjson = _read_json(root / "prototypes" / "prototypes.json")
    sources: dict[str, list[PrototypeSource]] = {n: [] for n in model.branch_names}
    for d in pjson.get("prototypes", []):
        s = PrototypeSource.from_dict(d)
        sources.setdefault(s.branch, []).append(s)
    for n in model.branch_names:
        if len(sources[n]) != model.branch(n).n_prototypes:
            raise BundleError(f"{root / 'prototypes' / 'prototypes.json'}: {n} entries missing")
        sources[n].sort(key=lambda s: s.index)
    segs = _load_tensors(root / "prototypes" / "segments.safetensors")
    segments = {n: segs[n].numpy() for n in model.branch_names if n in segs}
    thr_map = conf.get("thresholds", {})
    thresholds = np.array([float(thr_map.get(lbl, 0.5)) for lbl in model.labels])
    metrics = _read_json(root / "metrics.json") if (root / "metrics.json").is_file() else {}
    card = (root / "card.md").read_text(encoding="utf-8") if (root / "card.md").is_file() else ""
    return ProtoBundle(
        model=model,
        config=cfg,
        preprocessing=pre,
        sources=sources,
        segments=segments,
        thresholds=thresholds,
        training_data=str(conf.get("training_data", "unknown")),
        metrics=metrics,
        card=card,
        path=root,
    )
