"""Default zero-shot prompt vocabularies (research use only).

Each finding has clinical synonyms; :mod:`medclip.zeroshot` crosses them with the positive and
negated templates of :class:`~medclip.zeroshot_config.ZeroShotConfig`. "Normal" labels
(``No Finding``, ``NORM``) are not templated: their positive prompts describe a normal study and
their negative prompts describe abnormal findings, so "no no finding" never appears (CheXzero
issue #19, where a templated "No Finding" reached an AUROC of 0.07).

Vocabularies:

* :data:`CHEXPERT_LABELS`: the 14 CheXpert observations.
* :data:`ECG_LABELS`: NORM, AFIB, SBRAD, STACH, LBBB, RBBB, MI, ISCH, LVH.
* :data:`PTBXL_SUPERCLASS_LABELS`: the five PTB-XL diagnostic superclasses.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from datamodules.labels import XRAY_LABELS

#: The 14 CheXpert observations, in the CheXpert CSV column order.
CHEXPERT_LABELS: tuple[str, ...] = XRAY_LABELS

#: The ECG vocabulary of medclip's zero-shot defaults.
ECG_LABELS: tuple[str, ...] = (
    "NORM",
    "AFIB",
    "SBRAD",
    "STACH",
    "LBBB",
    "RBBB",
    "MI",
    "ISCH",
    "LVH",
)

#: Further ECG labels of ``datamodules.labels.ECG_LABELS`` that have default prompts too.
EXTRA_ECG_LABELS: tuple[str, ...] = ("AFLT", "1AVB", "LQT", "PACE")

#: PTB-XL diagnostic superclasses (Strodthoff et al. 2021).
PTBXL_SUPERCLASS_LABELS: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")

#: Labels whose prompts describe a normal study rather than a templated finding.
NORMAL_LABELS: tuple[str, ...] = ("No Finding", "NORM")

_SYNONYMS: dict[str, tuple[str, ...]] = {
    # Chest X-ray (CheXpert). The first synonym is the canonical phrase.
    "Enlarged Cardiomediastinum": (
        "enlarged cardiomediastinum",
        "widened mediastinum",
        "mediastinal widening",
    ),
    "Cardiomegaly": ("cardiomegaly", "enlarged heart", "enlarged cardiac silhouette"),
    "Lung Opacity": ("lung opacity", "airspace opacity", "pulmonary opacities"),
    "Lung Lesion": ("lung lesion", "pulmonary nodule", "lung mass"),
    "Edema": ("pulmonary edema", "interstitial edema", "pulmonary vascular congestion"),
    "Consolidation": ("consolidation", "airspace consolidation", "lobar consolidation"),
    "Pneumonia": ("pneumonia", "infectious pneumonic process", "pneumonic infiltrate"),
    "Atelectasis": ("atelectasis", "bibasilar atelectasis", "subsegmental atelectasis"),
    "Pneumothorax": ("pneumothorax", "apical pneumothorax", "pleural air collection"),
    "Pleural Effusion": (
        "pleural effusion",
        "layering pleural fluid",
        "blunting of the costophrenic angle",
    ),
    "Pleural Other": ("pleural thickening", "pleural plaques", "fibrothorax"),
    "Fracture": ("fracture", "rib fracture", "displaced fracture"),
    "Support Devices": (
        "support devices",
        "endotracheal tube",
        "central venous catheter",
        "pacemaker leads",
    ),
    # ECG.
    "AFIB": ("atrial fibrillation", "afib", "irregularly irregular rhythm without p waves"),
    "SBRAD": ("sinus bradycardia", "slow sinus rhythm"),
    "STACH": ("sinus tachycardia", "fast sinus rhythm"),
    "LBBB": ("left bundle branch block", "complete left bundle branch block"),
    "RBBB": ("right bundle branch block", "complete right bundle branch block"),
    "MI": ("myocardial infarction", "infarction", "pathological q waves"),
    "ISCH": ("myocardial ischemia", "ischemic st-t changes", "st segment depression"),
    "LVH": ("left ventricular hypertrophy", "increased qrs voltage with strain"),
    "AFLT": ("atrial flutter", "flutter waves", "sawtooth flutter waves"),
    "1AVB": ("first degree av block", "prolonged pr interval", "first degree heart block"),
    "LQT": ("long qt interval", "prolonged qt interval", "qt prolongation"),
    "PACE": ("paced rhythm", "ventricular pacing", "pacemaker spikes"),
    # PTB-XL superclasses (NORM and MI shared with the ECG vocabulary).
    "STTC": ("st-t changes", "st segment and t wave abnormality", "nonspecific st-t changes"),
    "CD": ("conduction disturbance", "bundle branch block", "atrioventricular block"),
    "HYP": ("hypertrophy", "ventricular hypertrophy", "atrial enlargement"),
}

_XRAY_ABNORMAL = (
    "abnormal chest radiograph.",
    "acute cardiopulmonary abnormality.",
)
_ECG_ABNORMAL = (
    "abnormal ecg.",
    "abnormal electrocardiogram.",
)

_NORMAL_PROMPTS: dict[str, tuple[str, ...]] = {
    "No Finding": (
        "no acute cardiopulmonary process.",
        "normal chest radiograph.",
        "the lungs are clear.",
        "heart size is normal and the lungs are clear.",
        "no acute abnormality.",
    ),
    "NORM": (
        "normal ecg.",
        "normal electrocardiogram.",
        "sinus rhythm. normal ecg.",
        "normal sinus rhythm without abnormality.",
    ),
}

_ABNORMAL_PROMPTS: dict[str, tuple[str, ...]] = {
    "No Finding": _XRAY_ABNORMAL
    + tuple(f"{_SYNONYMS[lab][0]}." for lab in CHEXPERT_LABELS if lab != "No Finding"),
    "NORM": _ECG_ABNORMAL
    + tuple(
        f"{_SYNONYMS[lab][0]}."
        for lab in dict.fromkeys(ECG_LABELS + EXTRA_ECG_LABELS + PTBXL_SUPERCLASS_LABELS)
        if lab != "NORM"
    ),
}

_LABEL_MODALITIES: dict[str, tuple[str, ...]] = {
    **{lab: ("xray",) for lab in CHEXPERT_LABELS},
    **{lab: ("ecg",) for lab in ECG_LABELS + EXTRA_ECG_LABELS + PTBXL_SUPERCLASS_LABELS},
}

#: label -> the normal label whose normal-study prompts are its negatives (see
#: ``ZeroShotConfig.contrast_normal``): every ECG label against ``NORM``.
_CONTRAST_NORMAL: dict[str, str] = {
    lab: "NORM"
    for lab in ECG_LABELS + EXTRA_ECG_LABELS + PTBXL_SUPERCLASS_LABELS
    if lab not in NORMAL_LABELS
}

#: label -> clinical synonyms (the first is the canonical phrase).
DEFAULT_SYNONYMS: Mapping[str, tuple[str, ...]] = MappingProxyType(_SYNONYMS)
#: normal label -> sentences describing a normal study (its positive prompts).
DEFAULT_NORMAL_PROMPTS: Mapping[str, tuple[str, ...]] = MappingProxyType(_NORMAL_PROMPTS)
#: normal label -> sentences describing abnormal findings (its negative prompts).
DEFAULT_ABNORMAL_PROMPTS: Mapping[str, tuple[str, ...]] = MappingProxyType(_ABNORMAL_PROMPTS)
#: label -> normal label whose normal prompts are the label's negatives (ECG labels: NORM).
DEFAULT_CONTRAST_NORMAL: Mapping[str, str] = MappingProxyType(_CONTRAST_NORMAL)
#: label -> modalities whose embeddings the fused probability uses (see ``ZeroShotConfig``).
DEFAULT_LABEL_MODALITIES: Mapping[str, tuple[str, ...]] = MappingProxyType(_LABEL_MODALITIES)

#: Named vocabularies for the CLI and the demo.
VOCABULARIES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "chexpert": CHEXPERT_LABELS,
        "ecg": ECG_LABELS,
        "ptbxl_superclass": PTBXL_SUPERCLASS_LABELS,
    }
)


def vocabulary(name: str) -> tuple[str, ...]:
    """Label names of a named vocabulary (``chexpert``, ``ecg``, ``ptbxl_superclass``).

    Raises:
        KeyError: for an unknown name (the message lists the known ones).
    """
    try:
        return VOCABULARIES[name]
    except KeyError:
        raise KeyError(
            f"unknown vocabulary {name!r}; choose one of {sorted(VOCABULARIES)}"
        ) from None
