"""Inference over a model bundle: embeddings and zero-shot diagnosis (research use only).

Plain torch, no Lightning. Preprocessing follows the bundle (DESIGN.md §3): ECG sampling rate and
length and CXR size and normalisation come from the model's tower input specs, else from the
bundle config's ``data`` section, never from the caller.

    from medclip.inference import Predictor
    pred = Predictor.from_path("runs/demo/bundle")
    result = pred.zeroshot(xray="cxr.dcm", ecg="records100/00000/00001_lr")
    result.top(5), result.research_use_notice

Written against the agreed bundle API (``medclip.bundle.load_bundle(path) -> Bundle`` with
``model``, ``config``, ``labels``, ``card``, ``path``); :class:`Predictor` takes any object with
those attributes. What it reads from ``bundle.labels`` (all optional):

* ``"zeroshot"``: prompt sets in :func:`medclip.zeroshot.prompt_sets_to_dict` form (versioned
  with the model); their labels become the zero-shot labels.
* ``"xray"`` / ``"ecg"``: label vocabularies (used when no prompt sets are stored).
* ``"thresholds"``: ``{label: threshold}`` tuned on validation data.
* ``"trained_on"``: a short description of the training data.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.cxr_io import read_cxr
from datamodules.ecg_io import read_ecg
from datamodules.errors import CxrReadError, EcgReadError
from datamodules.transforms import (
    CxrTransformConfig,
    EcgTransformConfig,
    preprocess_cxr,
    preprocess_ecg,
)
from datamodules.types import CANONICAL_LEADS, Cxr, Ecg
from medclip import prompts as default_prompts
from medclip.zeroshot import (
    EncodeText,
    ZeroShotClassifier,
    ZeroShotResult,
    prompt_sets_from_dict,
)
from medclip.zeroshot_config import ZeroShotConfig

logger = logging.getLogger(__name__)

#: A chest X-ray: file path, :class:`Cxr`, or pixels ``(H, W)`` (``(H, W, 3)`` RGB is averaged).
XrayInput = str | Path | Cxr | np.ndarray | torch.Tensor
#: An ECG: record path, :class:`Ecg`, or ``(12, T)`` mV at the model's sampling rate.
EcgInput = str | Path | Ecg | np.ndarray | torch.Tensor


def preprocessing_from_bundle(bundle: Any) -> tuple[EcgTransformConfig, CxrTransformConfig]:
    """``(EcgTransformConfig, CxrTransformConfig)`` the bundle's model expects.

    Order: the model's tower input specs, then the bundle config's ``data`` section (the rule
    that training uses).
    """
    data = getattr(bundle.config, "data", None)
    specs: dict[str, Any] = {}
    if hasattr(bundle.model, "input_specs"):
        specs = dict(bundle.model.input_specs())
    ecg, xray = specs.get("ecg"), specs.get("xray")

    def pick(spec: Any, name: str, data_name: str, default: Any) -> Any:
        value = getattr(spec, name, None) if spec is not None else None
        if value is None:
            value = getattr(data, data_name, None) if data is not None else None
        return default if value is None else value

    ecg_cfg = EcgTransformConfig(
        fs_hz=float(pick(ecg, "fs_hz", "ecg_fs_hz", 100.0)),
        length=int(pick(ecg, "length", "ecg_length", 1000)),
    )
    cxr_cfg = CxrTransformConfig(
        image_size=int(pick(xray, "image_size", "image_size", 224)),
        mean=float(pick(xray, "mean", "image_mean", 0.5)),
        std=float(pick(xray, "std", "image_std", 0.25)),
    )
    return ecg_cfg, cxr_cfg


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def cxr_from_array(pixels: np.ndarray | torch.Tensor) -> Cxr:
    """Wrap an in-memory image as a :class:`Cxr` in [0, 1] (bright = dense).

    ``uint8`` is divided by 255; ``(H, W, 3|4)`` RGB(A) is averaged over colour channels; float
    values outside [0, 1] are min-max rescaled with a warning (wrong input range, R7).

    Raises:
        CxrReadError: for a shape that is not an image or non-finite values.
    """
    a = _as_numpy(pixels)
    is_uint8 = a.dtype == np.uint8
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3].astype(np.float32).mean(axis=-1)
    if a.ndim != 2 or min(a.shape) < 2:
        raise CxrReadError("<array>", f"expected an image (H, W) or (H, W, 3), got {a.shape}")
    a = a.astype(np.float32)
    if is_uint8:
        a /= 255.0
    if not np.isfinite(a).all():
        raise CxrReadError("<array>", "image contains NaN or inf")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:
        warnings.warn(
            f"X-ray pixels span [{lo:.3g}, {hi:.3g}], expected [0, 1]; rescaling min-max",
            UserWarning,
            stacklevel=3,
        )
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return Cxr(pixels=a, source=None, meta={"source": "array"})


def ecg_from_array(signal: np.ndarray | torch.Tensor, fs_hz: float) -> Ecg:
    """Wrap ``(12, T)`` (or ``(T, 12)``) mV samples in canonical lead order as an :class:`Ecg`.

    All-NaN rows are treated as missing leads.

    Raises:
        EcgReadError: for a shape that is not 12 leads.
    """
    a = _as_numpy(signal).astype(np.float32)
    if a.ndim == 2 and a.shape[0] != 12 and a.shape[1] == 12:
        a = a.T
    if a.ndim != 2 or a.shape[0] != 12 or a.shape[1] < 2:
        raise EcgReadError(
            "<array>", f"expected (12, T) mV in lead order {list(CANONICAL_LEADS)}, got {a.shape}"
        )
    mask = np.asarray(~np.isnan(a).all(axis=1), dtype=bool)
    return Ecg(signal=a, fs=float(fs_hz), lead_mask=mask, meta={"source": "array"})


def _items(x: Any) -> tuple[list[Any], bool]:
    """``([inputs], True)`` for a list/tuple, ``([x], False)`` for one input."""
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError("no inputs given")
        return list(x), True
    return [x], False


def _accepts_kw(fn: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False


class Predictor:
    """Embeddings and zero-shot diagnosis from a bundle. Research use only.

    Args:
        bundle: a loaded bundle (``model``, ``config``, ``labels``, ``card``, ``path``).
        device: torch device for the model.
        labels: zero-shot labels (default: the bundle's, else CheXpert 14 + the ECG labels).
        zeroshot_config: prompt settings (default: ``bundle.config.zeroshot``).
        text_batch_size: prompts per text-encoder call.
    """

    def __init__(
        self,
        bundle: Any,
        *,
        device: str | torch.device = "cpu",
        labels: Sequence[str] | None = None,
        zeroshot_config: ZeroShotConfig | None = None,
        text_batch_size: int = 64,
    ) -> None:
        self.bundle = bundle
        self.device = torch.device(device)
        self.model = bundle.model.to(self.device).eval()
        self.config = bundle.config
        self.ecg_cfg, self.cxr_cfg = preprocessing_from_bundle(bundle)
        self.zeroshot_config: ZeroShotConfig = (
            zeroshot_config or getattr(self.config, "zeroshot", None) or ZeroShotConfig()
        )
        self._labels = tuple(labels) if labels is not None else None
        self._text_batch_size = text_batch_size
        self._classifier: ZeroShotClassifier | None = None

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: Any) -> Predictor:
        """Load a bundle folder with ``medclip.bundle.load_bundle`` (no pickle, no network)."""
        from medclip.bundle import load_bundle  # type: ignore[import-not-found,unused-ignore]

        return cls(load_bundle(path), **kwargs)

    # ------------------------------------------------------------------ labels
    @property
    def bundle_labels(self) -> dict[str, Any]:
        """The bundle's ``labels.json`` content (empty dict if absent)."""
        labels = getattr(self.bundle, "labels", None)
        return dict(labels) if isinstance(labels, dict) else {}

    @property
    def labels(self) -> tuple[str, ...]:
        """Zero-shot label names."""
        if self._labels is not None:
            return self._labels
        stored = self.bundle_labels.get("zeroshot")
        if stored:
            return tuple(s.label for s in prompt_sets_from_dict(stored))
        xray = self.bundle_labels.get("xray") or default_prompts.CHEXPERT_LABELS
        ecg = self.bundle_labels.get("ecg") or default_prompts.ECG_LABELS
        return tuple(dict.fromkeys([*xray, *ecg]))

    @property
    def trained_on(self) -> str:
        """What the model was trained on (from the bundle)."""
        text = self.bundle_labels.get("trained_on")
        if text:
            return str(text)
        dataset = getattr(getattr(self.config, "data", None), "dataset", None)
        if dataset == "synthetic":
            return "SYNTHETIC data only (medclip demo); scores carry no clinical meaning"
        return f"{dataset} data" if dataset else "unknown"

    # ------------------------------------------------------------------ embeddings
    @torch.inference_mode()
    def embed_xray(self, xray: XrayInput | Sequence[XrayInput]) -> np.ndarray:
        """X-ray embedding(s): one input -> ``(E,)``, a list -> ``(N, E)`` float32, unit norm."""
        items, many = _items(xray)
        batch = np.stack([self._prep_xray(x) for x in items])[:, None]  # (N, 1, S, S)
        emb = self.model.encode_xray(torch.from_numpy(batch).to(self.device))
        out = emb.float().cpu().numpy()
        return out if many else out[0]

    @torch.inference_mode()
    def embed_ecg(self, ecg: EcgInput | Sequence[EcgInput]) -> np.ndarray:
        """ECG embedding(s): one input -> ``(E,)``, a list -> ``(N, E)`` float32, unit norm."""
        items, many = _items(ecg)
        batch = np.stack([self._prep_ecg(x) for x in items])  # (N, 12, T)
        emb = self.model.encode_ecg(torch.from_numpy(batch).to(self.device))
        out = emb.float().cpu().numpy()
        return out if many else out[0]

    @torch.inference_mode()
    def embed_text(self, texts: str | Sequence[str], target: str = "xray") -> np.ndarray:
        """Text embedding(s): one string -> ``(E,)``, a list -> ``(N, E)`` float32, unit norm.

        Args:
            texts: report text(s) or queries.
            target: ``xray`` (radiology) or ``ecg`` (cardiology) tower when the model has
                separate text towers.
        """
        many = not isinstance(texts, str)
        items = [str(t) for t in texts] if many else [str(texts)]
        emb = self._encode_text(items, target, normalize=True)
        out = emb.float().cpu().numpy()
        return out if many else out[0]

    def _encode_text(self, texts: list[str], target: str, normalize: bool) -> torch.Tensor:
        fn = self.model.encode_text
        kwargs: dict[str, Any] = {}
        if _accepts_kw(fn, "target"):
            kwargs["target"] = target
        if _accepts_kw(fn, "normalize"):
            kwargs["normalize"] = normalize
        elif not normalize:
            logger.warning(
                "model.encode_text has no normalize flag; prompt sets are averaged after "
                "normalisation (open_clip style) instead of before (BioViL)"
            )
        out: torch.Tensor = fn(texts, **kwargs)
        return out

    def _prep_xray(self, x: XrayInput) -> np.ndarray:
        if isinstance(x, (str, Path)):
            x = read_cxr(x)
        elif not isinstance(x, Cxr):
            x = cxr_from_array(x)
        return preprocess_cxr(x, self.cxr_cfg)

    def _prep_ecg(self, x: EcgInput) -> np.ndarray:
        if isinstance(x, (str, Path)):
            x = read_ecg(x)
        elif not isinstance(x, Ecg):
            x = ecg_from_array(x, self.ecg_cfg.fs_hz)
        return preprocess_ecg(x, self.ecg_cfg)

    # ------------------------------------------------------------------ zero-shot
    @property
    def classifier(self) -> ZeroShotClassifier:
        """The zero-shot classifier (class embeddings computed on first use)."""
        if self._classifier is None:
            self._classifier = self._build_classifier()
        return self._classifier

    def _logit_scale(self) -> float:
        scale = getattr(self.model, "scale", None)
        value = scale() if callable(scale) else getattr(self.model, "logit_scale", None)
        if value is None:
            return 1.0
        return float(torch.as_tensor(value).detach().float().exp().cpu())

    @torch.no_grad()
    def _build_classifier(self) -> ZeroShotClassifier:
        cfg = self.zeroshot_config
        labels = self.labels
        stored = self.bundle_labels.get("zeroshot")
        sets = prompt_sets_from_dict(stored) if stored else None
        if sets is not None and tuple(s.label for s in sets) != labels:
            sets = None  # caller chose other labels: build their prompts from the config
        raw = cfg.average_raw_embeddings

        def encoder(target: str) -> EncodeText:
            return lambda texts: self._encode_text(texts, target, normalize=not raw)

        separate = getattr(getattr(self.config, "model", None), "text_towers", "") == "separate"
        encode: EncodeText | dict[str, EncodeText] = (
            {"xray": encoder("xray"), "ecg": encoder("ecg")} if separate else encoder("xray")
        )
        clf = ZeroShotClassifier.from_encoder(
            encode,
            labels,
            cfg,
            prompt_sets=sets,
            logit_scale=self._logit_scale(),
            trained_on=self.trained_on,
            batch_size=self._text_batch_size,
        )
        thr = self.bundle_labels.get("thresholds") or {}
        if thr and all(lab in thr for lab in labels):
            clf.thresholds = np.array([float(thr[lab]) for lab in labels])
        return clf.to(self.device)

    def zeroshot(
        self, xray: XrayInput | None = None, ecg: EcgInput | None = None
    ) -> ZeroShotResult:
        """Zero-shot label probabilities for one study (an X-ray, an ECG, or both).

        Returns:
            A :class:`~medclip.zeroshot.ZeroShotResult` with fused and per-modality
            probabilities and the research-use notice.

        Raises:
            ValueError: when neither input is given.
            datamodules.errors.MedclipDataError: for an unreadable or invalid input file.
        """
        if xray is None and ecg is None:
            raise ValueError("zeroshot needs an X-ray and/or an ECG")
        # all numpy preprocessing first, then the towers back to back, and the embeddings stay
        # tensors into the classifier: interleaving numpy and torch work costs more than either
        # (the torch thread pool goes idle in between).
        px = self._prep_xray(xray) if xray is not None else None
        pe = self._prep_ecg(ecg) if ecg is not None else None
        clf = self.classifier
        model = self.model
        with torch.inference_mode():
            fx = fe = ex = ee = None
            if px is not None:
                fx = model.towers["xray"](torch.from_numpy(px)[None, None].to(self.device))
            if pe is not None:
                fe = model.towers["ecg"](torch.from_numpy(pe)[None].to(self.device))
            if fx is not None:
                ex = model.project("xray", fx)
            if fe is not None:
                ee = model.project("ecg", fe)
            return clf.classify_unit(xray=ex, ecg=ee)[0]
