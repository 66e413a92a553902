"""Zero-shot prompt configuration: templates x synonyms, positive and negative per label."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_MODES = ("multilabel", "single")
_FUSIONS = ("probabilities", "embeddings")
_MODALITIES = ("xray", "ecg")


@dataclass(frozen=True)
class ZeroShotConfig:
    """Prompt sets for zero-shot classification.

    Empty mappings mean the built-in defaults of :mod:`medclip.prompts`; a label given here
    replaces that label's default entry only.

    Attributes:
        mode: ``multilabel`` (positive/negative softmax per label, CheXzero) or ``single``
            (softmax over labels).
        templates_pos: templates with ``{}`` for a synonym, e.g. ``"{} is present"``.
        templates_neg: negated templates, e.g. ``"no {}"``. Never empty: every templated label
            gets negated prompts.
        synonyms: label -> list of phrasings. Empty means the built-in default vocabulary.
        temperature: divides the pair logits (1.0 uses the model's logit scale).
        normal_labels: labels such as ``No Finding`` whose positive prompts describe a normal
            study and whose negative prompts describe abnormal findings (not templated).
        normal_prompts: normal label -> sentences describing a normal study.
        abnormal_prompts: normal label -> sentences describing abnormal findings.
        average_raw_embeddings: True (BioViL): a prompt set's embeddings are averaged *before*
            L2 normalisation, so the text encoder should return raw projected embeddings;
            False (open_clip): each prompt embedding is normalised, then averaged.
        fusion: how X-ray and ECG combine: ``probabilities`` (mean of the per-modality
            probabilities, default) or ``embeddings`` (score the renormalised mean embedding).
        label_modalities: label -> modalities (``xray``/``ecg``) that may score it in the fused
            multi-label output; labels not listed use every modality given.
        contrast_normal: label -> a normal label whose normal-study prompts are this label's
            negative prompts instead of negations (``""``: negations). The default contrasts
            every ECG label with ``NORM``: machine ECG statements (PTB-XL, MIMIC-IV-ECG) state
            findings and never negate them, so "no atrial fibrillation." is outside the
            language the text tower was tuned on, while "sinus rhythm. normal ecg." is in it.
            Radiology reports do negate findings ("No pneumothorax."), so X-ray labels keep
            negated prompts (CheXzero).
    """

    mode: str = "multilabel"
    templates_pos: tuple[str, ...] = ("{}.", "findings consistent with {}.", "there is {}.")
    templates_neg: tuple[str, ...] = ("no {}.", "no evidence of {}.", "there is no {}.")
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    temperature: float = 1.0
    normal_labels: tuple[str, ...] = ("No Finding", "NORM")
    normal_prompts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    abnormal_prompts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    average_raw_embeddings: bool = True
    fusion: str = "probabilities"
    label_modalities: dict[str, tuple[str, ...]] = field(default_factory=dict)
    contrast_normal: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"zeroshot.mode: {self.mode!r} is not one of {list(_MODES)}")
        if self.fusion not in _FUSIONS:
            raise ValueError(f"zeroshot.fusion: {self.fusion!r} is not one of {list(_FUSIONS)}")
        if not self.temperature > 0:
            raise ValueError("zeroshot.temperature: must be positive")
        if not self.templates_pos:
            raise ValueError("zeroshot.templates_pos: needs at least one template")
        if not self.templates_neg:
            raise ValueError(
                "zeroshot.templates_neg: needs at least one negated template "
                "(multi-label zero-shot compares positive and negative prompts)"
            )
        for key in ("templates_pos", "templates_neg"):
            for t in getattr(self, key):
                if t.count("{}") != 1:
                    raise ValueError(f"zeroshot.{key}: template {t!r} must contain '{{}}' once")
        for key in ("synonyms", "normal_prompts", "abnormal_prompts", "label_modalities"):
            object.__setattr__(self, key, _tuple_values(key, getattr(self, key)))
        contrast = {
            str(k): "" if v is None else str(v) for k, v in dict(self.contrast_normal).items()
        }
        object.__setattr__(self, "contrast_normal", contrast)
        for label, normal in contrast.items():
            if normal and normal not in self.normal_labels:
                raise ValueError(
                    f"zeroshot.contrast_normal.{label}: {normal!r} is not one of the normal "
                    f"labels {list(self.normal_labels)} (use '' for negated prompts)"
                )
        for label, mods in self.label_modalities.items():
            bad = [m for m in mods if m not in _MODALITIES]
            if bad or not mods:
                raise ValueError(
                    f"zeroshot.label_modalities.{label}: {list(mods)} must be a non-empty "
                    f"subset of {list(_MODALITIES)}"
                )


def _tuple_values(key: str, mapping: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Copy a ``label -> phrases`` mapping with tuple values (YAML gives lists)."""
    out: dict[str, tuple[str, ...]] = {}
    for label, values in dict(mapping).items():
        if isinstance(values, str):
            values = (values,)
        vals = tuple(str(v) for v in values)
        if not vals:
            raise ValueError(f"zeroshot.{key}.{label}: needs at least one entry")
        out[str(label)] = vals
    return out
