"""Model bundles: a folder that loads offline, without pickle (DESIGN.md §3).

Layout::

    BUNDLE/
      config.json          format/version, towers, embedding size, LoRA state, the preprocessing
                           the model expects (ECG fs/length/leads, CXR size/mean/std, text
                           tokens) and the full training config
      model.safetensors    every weight of the shared-space model
      tokenizer/           the text tokenizer (``tokenizer_ecg/`` for a separate cardiology tower)
      text_model/<key>/    only for towers built from a local Hugging Face folder: its config,
                           weights and tokenizer, so the bundle does not depend on that folder
      labels.json          label vocabularies, zero-shot prompt sets, label -> modalities
      card.md              training data (synthetic or real), metrics, intended use, limits
      prototypes/          optional ProtoECGNet bundle (:mod:`medclip.proto.bundle`)

LoRA adapters are merged into the text weights by default (``merge_lora=True``): the bundle then
holds a plain text model. ``merge_lora=False`` keeps the adapters as separate tensors (e.g. to
continue LoRA fine-tuning). Export is atomic: everything is written into ``OUT.tmp-*`` in the same
folder, then renamed onto ``OUT``. Loading reads JSON and safetensors only and never touches the
network (``local_files_only``); Lightning is not imported.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from medclip import __version__
from medclip.config import DataConfig, MedclipConfig, TowerConfig, from_dict
from medclip.errors import BundleError, OutputWriteError
from medclip.model import MedclipModel

if TYPE_CHECKING:
    from datamodules.transforms import CxrTransformConfig, EcgTransformConfig

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "medclip-bundle"
BUNDLE_VERSION = 1
RESEARCH_NOTICE = "Research use only: not a medical device; not for clinical decisions."
_TOKENIZER_DIRS = {"text": "tokenizer", "text_xray": "tokenizer", "text_ecg": "tokenizer_ecg"}


@dataclass
class Bundle:
    """A loaded bundle.

    Attributes:
        model: the shared-space model, in eval mode.
        config: the training config (towers as in the bundle).
        labels: ``labels.json`` (vocabularies, prompt sets, label modalities).
        card: ``card.md`` text.
        path: the bundle folder.
        prototypes: the ProtoECGNet bundle under ``prototypes/`` if present, else None.
        meta: ``config.json`` (format, preprocessing, LoRA state, ...).
    """

    model: MedclipModel
    config: MedclipConfig
    labels: dict[str, Any]
    card: str
    path: Path
    prototypes: Any | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing the model expects (``config.json["preprocessing"]``)."""
        return dict(self.meta.get("preprocessing", {}))

    def transform_configs(self) -> tuple[EcgTransformConfig, CxrTransformConfig]:
        """``(EcgTransformConfig, CxrTransformConfig)`` rebuilt from the bundle."""
        from datamodules.transforms import CxrTransformConfig, EcgTransformConfig

        pre = self.preprocessing

        def known(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
            names = {f.name for f in dataclasses.fields(cls)}
            return {k: v for k, v in values.items() if k in names}

        return (
            EcgTransformConfig(**known(EcgTransformConfig, pre.get("ecg", {}))),
            CxrTransformConfig(**known(CxrTransformConfig, pre.get("xray", {}))),
        )


# ---------------------------------------------------------------------------- preprocessing
def preprocessing_configs(
    model: MedclipModel, data: DataConfig | None = None
) -> tuple[EcgTransformConfig, CxrTransformConfig]:
    """Transforms that follow the model: values from the towers' ``input_spec``, the data
    config (or its defaults) only where a tower does not specify them."""
    from datamodules.transforms import CxrTransformConfig, EcgTransformConfig

    d = data or DataConfig()
    specs = model.input_specs()
    ecg, xray = specs["ecg"], specs["xray"]
    ecg_cfg = EcgTransformConfig(
        fs_hz=float(ecg.fs_hz or d.ecg_fs_hz), length=int(ecg.length or d.ecg_length)
    )
    cxr_cfg = CxrTransformConfig(
        image_size=int(xray.image_size or d.image_size),
        mean=float(xray.mean if xray.mean is not None else d.image_mean),
        std=float(xray.std if xray.std is not None else d.image_std),
    )
    for name, used, asked in (
        ("data.ecg_fs_hz", ecg_cfg.fs_hz, d.ecg_fs_hz),
        ("data.ecg_length", ecg_cfg.length, d.ecg_length),
        ("data.image_size", cxr_cfg.image_size, d.image_size),
        ("data.image_mean", cxr_cfg.mean, d.image_mean),
        ("data.image_std", cxr_cfg.std, d.image_std),
    ):
        if data is not None and float(used) != float(asked):
            log.warning("%s=%s differs from the model's input spec; using %s", name, asked, used)
    return ecg_cfg, cxr_cfg


def preprocessing_dict(model: MedclipModel, data: DataConfig | None = None) -> dict[str, Any]:
    """JSON form of the preprocessing the model expects (for ``config.json``)."""
    from datamodules.types import CANONICAL_LEADS

    ecg_cfg, cxr_cfg = preprocessing_configs(model, data)
    specs = model.input_specs()
    leads = specs["ecg"].leads or CANONICAL_LEADS
    text = {k: int(s.length) for k, s in specs.items() if k.startswith("text") and s.length}
    return {
        "ecg": {**dataclasses.asdict(ecg_cfg), "leads": list(leads)},
        "xray": dataclasses.asdict(cxr_cfg),
        "text_max_tokens": text,
    }


# ---------------------------------------------------------------------------- export helpers
def _state_for_safetensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors; storage shared between keys is cloned (safetensors refuses it)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for k, v in model.state_dict().items():
        t = v.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (0, -1)
        if t.numel() and key in seen:
            t = t.clone()
        seen.add(key)
        out[k] = t
    return out


def _text_keys(model: MedclipModel) -> list[str]:
    return [k for k in model.towers if k.startswith("text")]


def _lora_state(model: MedclipModel) -> str:
    """``adapter`` (LoRA layers attached), ``merged`` (built with LoRA, already folded into the
    weights, e.g. a loaded bundle) or ``none`` (no LoRA in the text towers' configs)."""
    state = "none"
    for key in _text_keys(model):
        tower = model.towers[key]
        if getattr(tower, "has_lora", False):
            return "adapter"
        if getattr(getattr(tower, "config", None), "lora", False):
            state = "merged"  # load_bundle must merge the freshly built adapters before loading
    return state


def _strip_pretrained(tower: TowerConfig) -> TowerConfig:
    kwargs = {k: v for k, v in tower.kwargs.items() if k != "pretrained_path"}
    return TowerConfig(tower.name, kwargs, None)


def _text_model_dir(tower: nn.Module) -> bool:
    cfg = getattr(tower, "config", None)
    return getattr(cfg, "source", None) == "local"


def _save_hf_backbone(tower: nn.Module, folder: Path) -> None:
    """Write a text tower's plain Hugging Face backbone (no LoRA layers) with its tokenizer."""
    backbone: Any = copy.deepcopy(getattr(tower, "model"))  # noqa: B009
    if hasattr(backbone, "unload") and hasattr(backbone, "peft_config"):
        backbone = backbone.unload()
    backbone.save_pretrained(str(folder), safe_serialization=True)
    getattr(tower, "tokenizer").save_pretrained(str(folder))  # noqa: B009


def _training_data(cfg: MedclipConfig) -> str:
    d = cfg.data
    if d.dataset == "synthetic":
        return (
            f"SYNTHETIC DATA ({d.synth_n} generated studies, seed {d.synth_seed}) in the "
            "MIMIC-CXR / MIMIC-IV-ECG formats. The model has never seen a real patient; its "
            "outputs carry no clinical meaning."
        )
    names = {
        "mimic": "MIMIC-CXR + MIMIC-IV-ECG (real, credentialed PhysioNet data)",
        "ptbxl": "PTB-XL (real ECGs)",
        "chexpert": "CheXpert (real chest X-rays)",
    }
    return names.get(d.dataset, d.dataset)


def _labels_json(cfg: MedclipConfig, label_names: Sequence[str]) -> dict[str, Any]:
    from medclip import prompts as default_prompts
    from medclip.zeroshot import build_prompt_sets, prompt_sets_to_dict

    names = list(label_names)
    if not names:
        from datamodules.labels import ECG_LABELS, XRAY_LABELS

        names = [*XRAY_LABELS, *ECG_LABELS]
    modalities = {
        lab: list(
            cfg.zeroshot.label_modalities.get(lab)
            or default_prompts.DEFAULT_LABEL_MODALITIES.get(lab, ("xray", "ecg"))
        )
        for lab in names
    }
    sets: list[Any] = []
    for lab in names:
        try:
            sets.extend(build_prompt_sets([lab], cfg.zeroshot))
        except ValueError as exc:
            log.warning("no zero-shot prompts for %r: %s", lab, exc)
    return {
        "version": 1,
        "label_names": names,
        "xray": [lab for lab in names if "xray" in modalities[lab]],
        "ecg": [lab for lab in names if "ecg" in modalities[lab]],
        "label_modalities": modalities,
        "zeroshot": prompt_sets_to_dict(sets),
        "thresholds": {},
        "trained_on": _training_data(cfg),
    }


def _fmt_metric(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _card(
    cfg: MedclipConfig, meta: Mapping[str, Any], metrics: Mapping[str, Any], lora: str
) -> str:
    m = cfg.model
    pre = meta["preprocessing"]
    ecg, xray = pre["ecg"], pre["xray"]
    metric_lines = [f"| {k} | {_fmt_metric(v)} |" for k, v in sorted(metrics.items())]
    lora_text = {
        "merged": "LoRA adapters were merged into the text weights (a plain text model).",
        "adapter": "LoRA adapters are kept as separate tensors (`lora_*` keys).",
        "none": "The text tower has no LoRA adapters.",
    }[lora]
    lines = [
        f"# medclip model card: {cfg.name}",
        "",
        f"**{RESEARCH_NOTICE}** The outputs are similarity scores from a contrastive model, "
        "not diagnoses.",
        "",
        "## Model",
        f"- X-ray tower: `{m.xray.name}`; ECG tower: `{m.ecg.name}`; text tower: `{m.text.name}` "
        f"({m.text_towers}, text mode {m.text_mode})",
        f"- Shared space: {m.embed_dim}-d, head `{m.head}`, learned temperature "
        f"tau = {1.0 / meta['logit_scale']:.4f}",
        f"- {lora_text}",
        f"- medclip {__version__}; exported {meta['created']}",
        "",
        "## Preprocessing the model expects (applied by `medclip.inference`)",
        f"- ECG: {len(ecg['leads'])} leads ({', '.join(ecg['leads'])}), {ecg['fs_hz']} Hz, "
        f"{ecg['length']} samples ({ecg['length'] / ecg['fs_hz']:.1f} s), high-pass "
        f"{ecg['highpass_hz']} Hz, standardisation `{ecg['standardize']}`",
        f"- Chest X-ray: {xray['image_size']} px square (keep-aspect resize + pad), "
        f"normalised with mean {xray['mean']} and std {xray['std']}",
        "",
        "## Training data",
        f"- {_training_data(cfg)}",
        f"- Pairing window {cfg.data.pair_window_days} days ({cfg.data.pairing}); uncertain "
        f"labels: {cfg.data.uncertainty_policy}",
        f"- Loss weights: X-ray-text {cfg.loss.xray_text}, ECG-text {cfg.loss.ecg_text}, "
        f"X-ray-ECG {cfg.loss.xray_ecg}; soft targets {cfg.loss.soft_targets}",
        "",
        "## Metrics (end of training: train/* on training batches, val/* on the validation split)",
    ]
    if metric_lines:
        lines += ["| metric | value |", "|---|---|", *metric_lines]
    else:
        lines.append("No metrics were recorded for this export.")
    lines += [
        "",
        "## Intended use",
        "- Research on multimodal representation learning, zero-shot classification and "
        "case retrieval. Research use only.",
        "- Not for diagnosis, triage or any clinical decision; not a medical device.",
        "",
        "## Limitations",
        "- Zero-shot scores depend on the prompt sets in `labels.json`; they are not calibrated "
        "probabilities. Tune thresholds on validation data before reporting F1.",
        "- Performance outside the training distribution (other hospitals, devices, "
        "populations, lead sets or sampling rates) is unknown.",
        "- Reports and machine statements carry the biases of their authors and software.",
        "- A model trained on synthetic data has learnt synthetic patterns only.",
        "",
        "## Loading",
        "```python",
        "from medclip.bundle import load_bundle",
        "bundle = load_bundle('PATH')  # offline, safetensors + JSON, no pickle",
        "```",
        "",
    ]
    return "\n".join(lines)


def _resolve_source(
    source: Any, config: MedclipConfig | None, label_names: Sequence[str] | None
) -> tuple[MedclipModel, MedclipConfig, list[str]]:
    from medclip.training import with_text_max_length

    if config is not None:  # training gave the text tower data.max_text_tokens; keep it
        config = with_text_max_length(config)
    if isinstance(source, (str, Path)):
        from medclip.training import load_contrastive_checkpoint

        source = load_contrastive_checkpoint(source)
    if isinstance(source, Bundle):  # re-export a loaded bundle with its labels
        names = label_names or source.labels.get("label_names") or []
        return source.model, config or source.config, [str(n) for n in names]
    if isinstance(source, MedclipModel):
        if config is None:
            raise BundleError("export_bundle: a bare MedclipModel needs config=")
        return source, config, list(label_names or [])
    model = getattr(source, "model", None)
    cfg = config or getattr(source, "cfg", None)
    if not isinstance(model, MedclipModel) or not isinstance(cfg, MedclipConfig):
        raise BundleError(
            f"export_bundle: cannot export {type(source).__name__}; give a checkpoint path, a "
            "ContrastiveModule or a MedclipModel with config="
        )
    names = list(label_names or getattr(source, "label_names", None) or [])
    return model, cfg, names


def _with_model_text_length(model: MedclipModel, cfg: MedclipConfig) -> MedclipConfig:
    """The config with the text tower's ``max_length`` of the model being exported.

    The tokenizer length (and, for models that size position embeddings by it, the weights'
    shapes) must match the weights; ``data.max_text_tokens`` is only the training default.
    """
    tower_cfg = getattr(model.text_tower, "config", None)
    length = getattr(tower_cfg, "max_length", None)
    text = cfg.model.text
    if not isinstance(length, int) or text.kwargs.get("max_length") == length:
        return cfg
    tower = dataclasses.replace(text, kwargs={**text.kwargs, "max_length": length})
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, text=tower))


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def export_bundle(
    source: str | Path | nn.Module | Bundle,
    out: str | Path,
    *,
    config: MedclipConfig | None = None,
    label_names: Sequence[str] | None = None,
    metrics: Mapping[str, Any] | None = None,
    merge_lora: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a bundle folder atomically.

    Args:
        source: a Lightning checkpoint path (loaded weights-only), a ``ContrastiveModule``, a
            loaded :class:`Bundle` (its config and labels; not its prototypes) or a
            :class:`MedclipModel` (then ``config`` is required).
        out: the bundle folder to create.
        config: overrides the source's config (required for a bare model).
        label_names: label vocabulary (default: the module's, else CheXpert 14 + ECG labels).
        metrics: numbers for the card (e.g. the run's ``metrics.json`` metrics).
        merge_lora: merge LoRA adapters into the text weights (default) or keep them.
        overwrite: replace an existing ``out``.

    Returns:
        The bundle path.

    Raises:
        BundleError: ``out`` exists (without ``overwrite``) or the source cannot be exported.
        UnsafeCheckpointError: the checkpoint needs pickle objects.
        OutputWriteError: the disk is full (or read-only, ...); an existing ``out`` is unchanged
            and the temporary folder is removed.
    """
    from safetensors.torch import save_file

    target = Path(out).expanduser()
    if target.exists() and not overwrite:
        raise BundleError(f"{target}: already exists (pass overwrite=True / --overwrite)")
    model, cfg, names = _resolve_source(source, config, label_names)
    cfg = _with_model_text_length(model, cfg)
    model = copy.deepcopy(model).cpu().eval()
    lora = _lora_state(model)
    if merge_lora and lora == "adapter":
        for key in _text_keys(model):
            merge = getattr(model.towers[key], "merge_lora", None)
            if callable(merge):
                merge()
        lora = "merged"
    towers = {
        "xray": _strip_pretrained(cfg.model.xray),
        "ecg": _strip_pretrained(cfg.model.ecg),
        "text": _strip_pretrained(cfg.model.text),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        text_dirs: dict[str, str] = {}
        for key in _text_keys(model):
            tower = model.towers[key]
            tok = getattr(tower, "tokenizer", None)
            if tok is not None and hasattr(tok, "save_pretrained"):
                tok.save_pretrained(str(tmp / _TOKENIZER_DIRS[key]))
            if _text_model_dir(tower):
                rel = f"text_model/{key}"
                _save_hf_backbone(tower, tmp / rel)
                text_dirs[key] = rel
        if text_dirs:
            # every text tower is built from the same TowerConfig; point it into the bundle
            first = next(iter(text_dirs.values()))
            kw = {**towers["text"].kwargs, "model_path": first}
            towers["text"] = TowerConfig(towers["text"].name, kw, None)
        model_cfg = dataclasses.replace(cfg.model, **towers)  # type: ignore[arg-type]
        full_cfg = dataclasses.replace(cfg, model=model_cfg)
        save_file(
            _state_for_safetensors(model),
            str(tmp / "model.safetensors"),
            metadata={"format": "pt", "medclip_bundle_version": str(BUNDLE_VERSION)},
        )
        meta: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "medclip_version": __version__,
            "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
            "embed_dim": cfg.model.embed_dim,
            "towers": {
                key: {
                    "name": towers["text" if key.startswith("text") else key].name,
                    "output_dim": int(getattr(model.towers[key], "output_dim", 0)),
                    "tokenizer": _TOKENIZER_DIRS[key] if key.startswith("text") else None,
                }
                for key in model.towers
            },
            "text_model_dirs": text_dirs,
            "lora": lora,
            "logit_scale": float(model.scale().detach().exp()),
            "preprocessing": preprocessing_dict(model, cfg.data),
            "research_use_notice": RESEARCH_NOTICE,
            "config": full_cfg.to_dict(),
        }
        _write_json(tmp / "config.json", meta)
        _write_json(tmp / "labels.json", _labels_json(cfg, names))
        clean = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float, str))}
        (tmp / "card.md").write_text(_card(full_cfg, meta, clean, lora), encoding="utf-8")
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        # safetensors and torch report a full disk with their own error types
        error = OutputWriteError.from_exception(target, exc)
        if error is not None:
            raise error from exc
        raise
    log.info("bundle written to %s (LoRA %s)", target, lora)
    return target


# ---------------------------------------------------------------------------- loading
def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise BundleError(f"{path}: missing from the bundle")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from exc


def load_bundle(path: str | Path, map_location: str | torch.device = "cpu") -> Bundle:
    """Load a bundle folder offline (JSON + safetensors, never pickle).

    Raises:
        BundleError: a missing or malformed file, another format/version, or weights that do not
            match the towers named in ``config.json``.
    """
    from safetensors.torch import load_file

    root = Path(path).expanduser()
    if not root.is_dir():
        raise BundleError(f"{root}: bundle folder not found")
    meta = _read_json(root / "config.json")
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{root / 'config.json'}: not a medclip bundle")
    if int(meta.get("version", 0)) > BUNDLE_VERSION:
        raise BundleError(
            f"{root}: bundle version {meta.get('version')} is newer than this medclip "
            f"(supports {BUNDLE_VERSION}); upgrade medclip"
        )
    cfg = from_dict(MedclipConfig, meta["config"])
    text = cfg.model.text
    model_path = text.kwargs.get("model_path")
    if model_path and not Path(model_path).is_absolute():
        kw = {**text.kwargs, "model_path": str(root / model_path)}
        cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, text=TowerConfig(text.name, kw, None))
        )
    model = MedclipModel(cfg.model)
    if meta.get("lora") == "merged":
        for key in _text_keys(model):
            merge = getattr(model.towers[key], "merge_lora", None)
            if callable(merge):
                merge()
    weights = root / "model.safetensors"
    if not weights.is_file():
        raise BundleError(f"{weights}: missing from the bundle")
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise BundleError(f"{weights}: unreadable ({type(exc).__name__}: {exc})") from exc
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or bad:
        raise BundleError(
            f"{weights}: does not match the towers in config.json (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {bad[:5]})"
        )
    model.load_state_dict(state, strict=True)
    for key in _text_keys(model):
        folder = root / _TOKENIZER_DIRS[key]
        tower = model.towers[key]
        if folder.is_dir() and hasattr(tower, "tokenizer"):
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            setattr(tower, "tokenizer", tok)  # noqa: B010
    model.to(map_location).eval()
    labels = _read_json(root / "labels.json")
    card_path = root / "card.md"
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    prototypes = None
    if (root / "prototypes" / "config.json").is_file():
        from medclip.proto.bundle import load_proto_bundle

        prototypes = load_proto_bundle(root / "prototypes", map_location=map_location)
    return Bundle(
        model=model,
        config=cfg,
        labels=labels,
        card=card,
        path=root,
        prototypes=prototypes,
        meta=meta,
    )
