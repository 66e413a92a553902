"""Zero-shot classification from prompt sets (research use only).

Three published ideas, combined:

* **Prompt sets** are templates x synonyms per label (open_clip template ensembling), with
  positive and negated templates (CheXzero).
* **Prompt-set averaging before normalisation** (BioViL): a set's text embeddings are averaged,
  then L2-normalised. This needs the *raw* projected text embeddings; with
  ``ZeroShotConfig.average_raw_embeddings=False`` each prompt is normalised first instead
  (open_clip).
* **Positive/negative softmax per label** (CheXzero ``run_softmax_eval``):
  ``p = exp(s+) / (exp(s+) + exp(s-))`` with ``s = logit_scale * cos / temperature``, so labels
  are scored independently (multi-label safe). ``mode="single"`` instead takes a softmax over
  the labels' positive embeddings.

"Normal" labels (``No Finding``, ``NORM``) are not templated: their positive prompts describe a
normal study and their negative prompts describe abnormal findings (CheXzero issue #19).

X-ray and ECG are fused by averaging the per-modality probabilities (default). A label only
takes the modalities listed for it in ``label_modalities`` (CheXpert findings: X-ray; ECG
labels: ECG), so a fused probability never silently comes from an unrelated modality; it is
NaN when none of its modalities was given. ``fusion="embeddings"`` scores the renormalised mean
of the two image/ECG embeddings instead, for labels that both modalities may score.

The text encoder is injected: ``encode_text(list[str]) -> (N, E)``, so the module works with
any model and with fakes in tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medclip import prompts as default_prompts
from medclip.zeroshot_config import ZeroShotConfig

logger = logging.getLogger(__name__)

#: ``texts -> (N, E)`` text embeddings (raw projections or L2-normalised).
EncodeText = Callable[[list[str]], torch.Tensor]

RESEARCH_USE_NOTICE = (
    "Research use only: zero-shot scores from a contrastive model, not a diagnosis. "
    "Not a medical device; do not use for clinical decisions."
)

#: Modalities the classifier accepts as image/signal inputs.
INPUT_MODALITIES: tuple[str, ...] = ("xray", "ecg")


@dataclass(frozen=True)
class PromptSet:
    """The prompts of one label.

    Attributes:
        label: label name.
        positive: prompts asserting the label (for a normal label: describing a normal study).
        negative: negated prompts (for a normal label: describing abnormal findings).
        is_normal: True for normal labels such as ``No Finding``.
    """

    label: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    is_normal: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for a bundle's ``labels.json``)."""
        return {
            "label": self.label,
            "positive": list(self.positive),
            "negative": list(self.negative),
            "is_normal": self.is_normal,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptSet:
        """Inverse of :meth:`to_dict`."""
        return cls(
            label=str(data["label"]),
            positive=tuple(str(p) for p in data["positive"]),
            negative=tuple(str(p) for p in data["negative"]),
            is_normal=bool(data.get("is_normal", False)),
        )


def build_prompt_sets(
    labels: Sequence[str], cfg: ZeroShotConfig | None = None
) -> tuple[PromptSet, ...]:
    """Templates x synonyms for each label, with negated prompts (or, for labels in
    ``contrast_normal``, that normal label's normal-study prompts as the negatives).

    Config entries override the defaults of :mod:`medclip.prompts` label by label. A label with
    no synonyms anywhere uses its lower-cased name.

    Raises:
        ValueError: for an empty or duplicated label list, or a normal label without prompts.
    """
    cfg = cfg or ZeroShotConfig()
    if not labels:
        raise ValueError("zero-shot needs at least one label")
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate labels in {list(labels)}")
    sets = []
    for label in labels:
        if label in cfg.normal_labels:
            pos = cfg.normal_prompts.get(label) or default_prompts.DEFAULT_NORMAL_PROMPTS.get(label)
            neg = cfg.abnormal_prompts.get(label) or default_prompts.DEFAULT_ABNORMAL_PROMPTS.get(
                label
            )
            if not pos or not neg:
                raise ValueError(
                    f"normal label {label!r} needs zeroshot.normal_prompts and "
                    "zeroshot.abnormal_prompts (sentences describing normal and abnormal studies)"
                )
            sets.append(PromptSet(label, tuple(pos), tuple(neg), is_normal=True))
            continue
        syns = cfg.synonyms.get(label) or default_prompts.DEFAULT_SYNONYMS.get(label)
        if not syns:
            logger.info("no synonyms for label %r; using its name as the only phrase", label)
            syns = (label.lower(),)
        pos_t = tuple(dict.fromkeys(t.format(s) for t in cfg.templates_pos for s in syns))
        normal = cfg.contrast_normal.get(label, default_prompts.DEFAULT_CONTRAST_NORMAL.get(label))
        if normal and normal in cfg.normal_labels:
            neg_t = tuple(
                cfg.normal_prompts.get(normal)
                or default_prompts.DEFAULT_NORMAL_PROMPTS.get(normal)
                or ()
            )
            if not neg_t:
                raise ValueError(
                    f"label {label!r} is contrasted with {normal!r}, which has no "
                    "zeroshot.normal_prompts"
                )
        else:
            neg_t = tuple(dict.fromkeys(t.format(s) for t in cfg.templates_neg for s in syns))
        sets.append(PromptSet(label, pos_t, neg_t))
    return tuple(sets)


def prompt_sets_to_dict(sets: Sequence[PromptSet]) -> dict[str, Any]:
    """``{"version": 1, "prompt_sets": [...]}``: versioned with the model (R3)."""
    return {"version": 1, "prompt_sets": [s.to_dict() for s in sets]}


def prompt_sets_from_dict(data: Mapping[str, Any]) -> tuple[PromptSet, ...]:
    """Inverse of :func:`prompt_sets_to_dict`."""
    return tuple(PromptSet.from_dict(d) for d in data["prompt_sets"])


@torch.no_grad()
def _encode_unique(
    encode_text: EncodeText, texts: Sequence[str], batch_size: int
) -> dict[str, torch.Tensor]:
    """Encode each distinct text once, in chunks; returns text -> (E,) float32 on CPU."""
    unique = list(dict.fromkeys(texts))
    out: dict[str, torch.Tensor] = {}
    for i in range(0, len(unique), batch_size):
        chunk = unique[i : i + batch_size]
        emb = encode_text(chunk)
        if not isinstance(emb, torch.Tensor) or emb.ndim != 2 or emb.shape[0] != len(chunk):
            shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
            raise ValueError(f"encode_text must return ({len(chunk)}, E) tensor, got {shape}")
        emb = emb.detach().to("cpu", torch.float32)
        if not torch.isfinite(emb).all():
            raise ValueError("encode_text returned non-finite embeddings")
        out.update(zip(chunk, emb))
    return out


def pool_prompt_embeddings(emb: torch.Tensor, *, average_raw: bool = True) -> torch.Tensor:
    """One class embedding from a prompt set's embeddings.

    Args:
        emb: ``(P, E)`` embeddings of the set's prompts.
        average_raw: True (BioViL): mean of ``emb`` as given, then L2-normalise. False
            (open_clip): L2-normalise each row, average, renormalise.

    Returns:
        ``(E,)`` unit-norm embedding.
    """
    if not average_raw:
        emb = F.normalize(emb, dim=-1)
    return F.normalize(emb.mean(dim=0), dim=-1)


def class_embeddings(
    encode_text: EncodeText,
    sets: Sequence[PromptSet],
    *,
    average_raw: bool = True,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative class embeddings of each prompt set.

    Returns:
        ``(pos, neg)``, each ``(L, E)`` unit-norm float32 on CPU.
    """
    texts = [t for s in sets for t in (*s.positive, *s.negative)]
    table = _encode_unique(encode_text, texts, batch_size)

    def pooled(prompts: tuple[str, ...]) -> torch.Tensor:
        return pool_prompt_embeddings(
            torch.stack([table[p] for p in prompts]), average_raw=average_raw
        )

    pos = torch.stack([pooled(s.positive) for s in sets])
    neg = torch.stack([pooled(s.negative) for s in sets])
    return pos, neg


@dataclass(frozen=True, eq=False)
class ZeroShotResult:
    """Zero-shot scores of one study. Research use only.

    Attributes:
        labels: label names, in order.
        probabilities: ``(L,)`` fused probabilities in [0, 1]; NaN where none of the label's
            modalities was given.
        per_modality: modality (``xray``/``ecg``) -> ``(L,)`` probabilities from that input alone.
        mode: ``multilabel`` (independent per label) or ``single`` (sums to 1).
        fusion: ``probabilities`` or ``embeddings``.
        thresholds: ``(L,)`` decision thresholds tuned on validation data, if any.
        trained_on: what the model was trained on (from the bundle card).
        research_use_notice: shown with every result.
    """

    labels: tuple[str, ...]
    probabilities: np.ndarray
    per_modality: dict[str, np.ndarray]
    mode: str = "multilabel"
    fusion: str = "probabilities"
    thresholds: np.ndarray | None = None
    trained_on: str = "unknown"
    research_use_notice: str = RESEARCH_USE_NOTICE

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` highest fused probabilities as ``(label, probability)``, NaN skipped."""
        order = [i for i in np.argsort(-np.nan_to_num(self.probabilities, nan=-1.0))]
        hits = [(self.labels[i], float(self.probabilities[i])) for i in order]
        return [h for h in hits if not np.isnan(h[1])][:k]

    @property
    def predicted(self) -> tuple[str, ...]:
        """Labels at or above their validation-tuned threshold (empty without thresholds)."""
        if self.thresholds is None:
            return ()
        keep = np.nan_to_num(self.probabilities, nan=-1.0) >= self.thresholds
        return tuple(lab for lab, k in zip(self.labels, keep) if k)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (NaN becomes ``None``)."""

        def clean(a: np.ndarray) -> list[float | None]:
            return [None if np.isnan(v) else float(v) for v in a]

        return {
            "labels": list(self.labels),
            "probabilities": clean(self.probabilities),
            "per_modality": {m: clean(p) for m, p in self.per_modality.items()},
            "mode": self.mode,
            "fusion": self.fusion,
            "thresholds": None if self.thresholds is None else clean(self.thresholds),
            "predicted": list(self.predicted),
            "trained_on": self.trained_on,
            "research_use_notice": self.research_use_notice,
        }


@dataclass
class ZeroShotClassifier:
    """Scores ``(B, E)`` X-ray/ECG embeddings against positive/negative class embeddings.

    Build it with :meth:`from_encoder`. ``logit_scale`` is the model's (exponentiated) logit
    scale; 1.0 uses raw cosine similarities as CheXzero does (same AUROC, flatter
    probabilities).

    Attributes:
        prompt_sets: one per label.
        pos: ``(L, E)`` unit-norm positive class embeddings.
        neg: ``(L, E)`` unit-norm negative class embeddings.
        cfg: zero-shot settings (mode, temperature, fusion, label modalities).
        logit_scale: multiplies cosine similarities.
        thresholds: optional ``(L,)`` thresholds from :func:`medclip.metrics.fit_thresholds`.
        trained_on: copied into every result.
        modality_embeddings: per-modality ``(pos, neg)`` replacing ``pos``/``neg`` for that
            modality (models with separate radiology and cardiology text towers).
    """

    prompt_sets: tuple[PromptSet, ...]
    pos: torch.Tensor
    neg: torch.Tensor
    cfg: ZeroShotConfig = field(default_factory=ZeroShotConfig)
    logit_scale: float = 1.0
    thresholds: np.ndarray | None = None
    trained_on: str = "unknown"
    modality_embeddings: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.prompt_sets)
        pairs = [("default", (self.pos, self.neg)), *self.modality_embeddings.items()]
        for name, (pos, neg) in pairs:
            if pos.shape[0] != n or neg.shape != pos.shape or pos.shape[1] != self.pos.shape[1]:
                raise ValueError(
                    f"{name} class embeddings pos {tuple(pos.shape)} / neg {tuple(neg.shape)} "
                    f"must be ({n}, {self.pos.shape[1]})"
                )
        bad = set(self.modality_embeddings) - set(INPUT_MODALITIES)
        if bad:
            raise ValueError(f"modality_embeddings keys must be in {list(INPUT_MODALITIES)}")
        if not self.logit_scale > 0:
            raise ValueError("logit_scale must be positive")
        if self.thresholds is not None:
            self.thresholds = np.asarray(self.thresholds, dtype=np.float64)
            if self.thresholds.shape != (n,):
                raise ValueError(f"thresholds must have shape ({n},)")

    @classmethod
    def from_encoder(
        cls,
        encode_text: EncodeText | Mapping[str, EncodeText],
        labels: Sequence[str],
        cfg: ZeroShotConfig | None = None,
        *,
        prompt_sets: Sequence[PromptSet] | None = None,
        logit_scale: float = 1.0,
        trained_on: str = "unknown",
        batch_size: int = 256,
    ) -> ZeroShotClassifier:
        """Build prompt sets for ``labels`` and embed them with ``encode_text``.

        Args:
            encode_text: ``list[str] -> (N, E)``. With ``cfg.average_raw_embeddings`` (default)
                pass the model's raw projected text embeddings (before L2 normalisation). A
                mapping ``{"xray": fn, "ecg": fn}`` embeds the prompts once per modality (for
                separate text towers); the first entry gives ``pos``/``neg``.
            labels: label names, e.g. :data:`medclip.prompts.CHEXPERT_LABELS`.
            cfg: prompt configuration (defaults if None).
            prompt_sets: stored prompt sets (e.g. from a bundle) instead of building them.
            logit_scale: the model's exponentiated logit scale (1.0: raw cosine).
            trained_on: description of the training data, copied into results.
            batch_size: prompts per ``encode_text`` call.
        """
        cfg = cfg or ZeroShotConfig()
        sets = tuple(prompt_sets) if prompt_sets is not None else build_prompt_sets(labels, cfg)
        if [s.label for s in sets] != list(labels):
            raise ValueError("prompt_sets must follow the order of labels")
        encoders = dict(encode_text) if isinstance(encode_text, Mapping) else {"": encode_text}
        if not encoders or not set(encoders) <= {"", *INPUT_MODALITIES}:
            raise ValueError(f"encode_text mapping keys must be in {list(INPUT_MODALITIES)}")
        embs = {
            m: class_embeddings(
                fn, sets, average_raw=cfg.average_raw_embeddings, batch_size=batch_size
            )
            for m, fn in encoders.items()
        }
        first = next(iter(embs))
        pos, neg = embs[first]
        extra = {m: e for m, e in embs.items() if m and m != first}
        return cls(
            sets,
            pos,
            neg,
            cfg,
            logit_scale=logit_scale,
            trained_on=trained_on,
            modality_embeddings=extra,
        )

    @property
    def labels(self) -> tuple[str, ...]:
        """Label names, in order (cached while ``prompt_sets`` is the same object)."""
        hit = self.__dict__.get("_labels_cache")
        if hit is None or hit[0] is not self.prompt_sets:
            hit = (self.prompt_sets, tuple(s.label for s in self.prompt_sets))
            self.__dict__["_labels_cache"] = hit
        labels: tuple[str, ...] = hit[1]
        return labels

    def to(self, device: str | torch.device) -> ZeroShotClassifier:
        """Move the class embeddings to ``device`` (in place); returns self."""
        self.pos = self.pos.to(device)
        self.neg = self.neg.to(device)
        self.modality_embeddings = {
            m: (p.to(device), n.to(device)) for m, (p, n) in self.modality_embeddings.items()
        }
        return self

    def _prep(self, emb: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(emb).to(self.pos.device, torch.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.pos.shape[1]:
            raise ValueError(f"embeddings must be (B, {self.pos.shape[1]}), got {tuple(x.shape)}")
        return F.normalize(x, dim=-1)

    def _class_matrix(self, modality: str | None) -> torch.Tensor:
        """``(L, E)`` class directions of ``modality``, so that scoring is one matmul.

        Multilabel: ``scale * (pos - neg)`` (the positive/negative softmax of each label is the
        sigmoid of ``x . scale * (pos - neg)``); single: ``scale * pos``. Cached, and rebuilt
        when ``pos``/``neg`` (or the modality's pair), the scale or the mode change.
        """
        pos, neg = self.modality_embeddings.get(modality or "", (self.pos, self.neg))
        scale = self.logit_scale / self.cfg.temperature
        single = self.cfg.mode == "single"
        cache: dict[str, tuple[Any, ...]] = self.__dict__.setdefault("_matrix_cache", {})
        hit = cache.get(modality or "")
        if hit is not None and hit[0] is pos and hit[1] is neg and hit[2] == (scale, single):
            matrix: torch.Tensor = hit[3]
            return matrix
        with torch.no_grad():
            matrix = (scale * (pos if single else pos - neg)).contiguous()
        cache[modality or ""] = (pos, neg, (scale, single), matrix)
        return matrix

    def _proba(self, x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` probabilities of unit rows ``x`` against a :meth:`_class_matrix`."""
        s = x @ matrix.T
        return torch.softmax(s, dim=-1) if self.cfg.mode == "single" else torch.sigmoid(s)

    @torch.inference_mode()
    def predict_proba(
        self, emb: torch.Tensor | np.ndarray, modality: str | None = None
    ) -> torch.Tensor:
        """Probabilities of each label from one modality's embeddings.

        Args:
            emb: ``(B, E)`` or ``(E,)`` embeddings (normalised here).
            modality: ``xray``/``ecg`` selects that modality's class embeddings when
                ``modality_embeddings`` has them; None uses ``pos``/``neg``.

        Returns:
            ``(B, L)`` float32; independent per label (multilabel) or rows summing to 1 (single).
        """
        return self._proba(self._prep(emb), self._class_matrix(modality))

    def _relevance(self, modality: str) -> np.ndarray:
        """``(L,)`` bool: may ``modality`` score each label in the fused output?

        Cached per modality, labels and label-modality map (it is asked on every request).
        """
        key = (modality, tuple(self.labels), id(self.cfg.label_modalities))
        cache: dict[tuple[Any, ...], np.ndarray] = self.__dict__.setdefault("_relevance_cache", {})
        hit = cache.get(key)
        if hit is not None:
            return hit
        out = []
        for lab in self.labels:
            mods = self.cfg.label_modalities.get(
                lab
            ) or default_prompts.DEFAULT_LABEL_MODALITIES.get(lab, INPUT_MODALITIES)
            out.append(modality in mods)
        cache[key] = arr = np.asarray(out, dtype=bool)
        arr.flags.writeable = False
        return arr

    @torch.inference_mode()
    def classify(
        self,
        xray: torch.Tensor | np.ndarray | None = None,
        ecg: torch.Tensor | np.ndarray | None = None,
    ) -> list[ZeroShotResult]:
        """Per-study results from X-ray and/or ECG embeddings.

        Args:
            xray: ``(B, E)`` or ``(E,)`` X-ray embeddings, or None.
            ecg: ``(B, E)`` or ``(E,)`` ECG embeddings, or None.

        Returns:
            ``B`` results, with per-modality and fused probabilities.

        Raises:
            ValueError: if neither input is given or their batch sizes differ.
        """
        given = {m: self._prep(e) for m, e in (("xray", xray), ("ecg", ecg)) if e is not None}
        return self.classify_unit(**given)

    @torch.inference_mode()
    def classify_unit(
        self, xray: torch.Tensor | None = None, ecg: torch.Tensor | None = None
    ) -> list[ZeroShotResult]:
        """:meth:`classify` for embeddings that are already unit-norm ``(B, E)`` float32
        tensors on the class embeddings' device (e.g. straight from ``encode_xray``): skips
        the conversion and re-normalisation."""
        given = {m: e for m, e in (("xray", xray), ("ecg", ecg)) if e is not None}
        if not given:
            raise ValueError("zero-shot needs an X-ray and/or an ECG embedding")
        sizes = {x.shape[0] for x in given.values()}
        if len(sizes) != 1:
            raise ValueError(f"X-ray and ECG batch sizes differ: {sorted(sizes)}")
        per_mod, by_mean = self._score(given)
        fused = self._fuse(per_mod, by_mean)
        return [
            ZeroShotResult(
                labels=self.labels,
                probabilities=fused[i],
                per_modality={m: p[i] for m, p in per_mod.items()},
                mode=self.cfg.mode,
                fusion=self.cfg.fusion,
                thresholds=None if self.thresholds is None else self.thresholds.copy(),
                trained_on=self.trained_on,
            )
            for i in range(next(iter(sizes)))
        ]

    def _score(
        self, given: dict[str, torch.Tensor]
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Per-modality ``(B, L)`` probabilities, and those of the embeddings' mean.

        The mean (renormalised sum of the given unit embeddings) is scored only for
        ``fusion="embeddings"`` with more than one modality; with per-modality class
        embeddings it is scored against each given modality's and averaged. Rows that share
        class embeddings are scored in one matmul and copied to numpy once.
        """
        mods = list(given)
        b = next(iter(given.values())).shape[0]
        mean = None
        if self.cfg.fusion == "embeddings" and len(mods) > 1:
            mean = F.normalize(torch.stack(list(given.values())).sum(dim=0), dim=-1)
        # one matmul per class matrix: all modalities share it unless the towers are separate
        groups = [(None, mods)] if not self.modality_embeddings else [(m, [m]) for m in mods]
        per_mod, by_mean = {}, []
        for key, group in groups:
            rows = [given[m] for m in group] + ([] if mean is None else [mean])
            probs = self._proba(torch.cat(rows), self._class_matrix(key))
            out = probs.cpu().numpy().astype(np.float64)
            for i, m in enumerate(group):
                per_mod[m] = out[i * b : (i + 1) * b]
            by_mean.append(out[len(group) * b :])
        return per_mod, None if mean is None else np.mean(by_mean, axis=0)

    def _fusion_weights(self, mods: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """``(M, L)`` weights that average each label over its relevant given modalities
        (rows sum to 1 per label; 0 where none is relevant) and ``(L,)`` "none relevant".

        Cached per modality tuple (asked on every request).
        """
        key = (mods, tuple(self.labels), id(self.cfg.label_modalities))
        cache: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = self.__dict__.setdefault(
            "_weight_cache", {}
        )
        hit = cache.get(key)
        if hit is not None:
            return hit
        relevant = np.stack([self._relevance(m) for m in mods]).astype(np.float64)  # (M, L)
        total = relevant.sum(axis=0)
        none = total == 0
        weights = relevant / np.where(none, 1.0, total)
        for a in (weights, none):
            a.flags.writeable = False
        cache[key] = (weights, none)
        return weights, none

    def _fuse(self, per_mod: dict[str, np.ndarray], by_mean: np.ndarray | None) -> np.ndarray:
        """``(B, L)`` fused probabilities (see the module docstring)."""
        mods = tuple(per_mod)
        stacked = np.stack([per_mod[m] for m in mods])  # (M, B, L)
        if self.cfg.mode == "single":
            # closed-set choice over the labels: every given modality votes on every label.
            return by_mean.copy() if by_mean is not None else stacked.mean(axis=0)
        weights, none = self._fusion_weights(mods)
        fused = np.einsum("mbl,ml->bl", stacked, weights)
        fused[:, none] = np.nan
        if by_mean is not None:
            both = np.stack([self._relevance(m) for m in mods]).all(axis=0)
            fused[:, both] = by_mean[:, both]
        return fused
