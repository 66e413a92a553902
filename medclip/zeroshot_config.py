"""Zero-shot prompt configuration: templates x synonyms, positive and negative per label."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ZeroShotConfig:
    """Prompt sets for zero-shot classification.

    Attributes:
        mode: ``multilabel`` (positive/negative softmax per label) or ``single`` (softmax over
            labels).
        templates_pos: templates with ``{}`` for a synonym, e.g. ``"{} is present"``.
        templates_neg: negated templates, e.g. ``"no {}"``.
        synonyms: label -> list of phrasings. Empty means the built-in default vocabulary.
        temperature: divides the pair logits (1.0 uses the model's logit scale).
    """

    mode: str = "multilabel"
    templates_pos: tuple[str, ...] = ("{}.", "findings consistent with {}.", "there is {}.")
    templates_neg: tuple[str, ...] = ("no {}.", "no evidence of {}.", "there is no {}.")
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    temperature: float = 1.0
