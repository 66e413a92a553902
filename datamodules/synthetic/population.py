"""One seeded population of synthetic patients shared by every synthetic dataset.

Each patient has a clinical *profile* (healthy, heart failure, pneumonia, coronary disease, ICU,
conduction disease, pneumothorax, incidental findings) from which consistent ground truth is
drawn for all modalities:

* ECG conditions (names of ``datamodules.labels.ECG_LABELS``): exactly one rhythm (sinus, SBRAD,
  STACH, AFIB, AFLT, PACE) plus add-ons (LBBB/RBBB, MI, ISCH, LVH, 1AVB, LQT); ``NORM`` iff sinus
  rhythm at a normal rate without add-ons.
* Chest X-ray label *states* in CheXpert coding (``1.0`` positive, ``-1.0`` uncertain, ``0.0``
  mentioned as absent, ``None`` not mentioned) plus the details the painter and the report both
  use (side, zone, size, edema grade, devices). Positive findings are painted at full strength,
  uncertain ones at half strength, negative / unmentioned ones not at all.

All randomness comes from :func:`stream_rng`, keyed by (seed, stream name, patient index), so a
patient's data does not depend on the order in which datasets are written.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from datamodules.labels import XRAY_LABELS as CHEXPERT_14

__all__ = [
    "CHEXPERT_CSV_ORDER",
    "DEVICES",
    "ECG_ORDER",
    "FINDING_LABELS",
    "PROFILES",
    "XRAY_LABELS",
    "CxrFindings",
    "SyntheticPatient",
    "sample_population",
    "stream_rng",
]

#: CheXpert 14 observations in the alphabetical order of the MIMIC-CXR label CSVs.
XRAY_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)

#: The same 14 observations in the column order of CheXpert's ``train.csv``.
CHEXPERT_CSV_ORDER: tuple[str, ...] = CHEXPERT_14

#: Observations that are findings (everything but "No Finding").
FINDING_LABELS: tuple[str, ...] = tuple(x for x in XRAY_LABELS if x != "No Finding")

#: ECG condition order (matches ``datamodules.labels.ECG_LABELS``).
ECG_ORDER: tuple[str, ...] = (
    "NORM",
    "AFIB",
    "AFLT",
    "SBRAD",
    "STACH",
    "1AVB",
    "LBBB",
    "RBBB",
    "MI",
    "ISCH",
    "LVH",
    "LQT",
    "PACE",
)

#: Radiopaque devices the painter and the reports know.
DEVICES: tuple[str, ...] = ("ett", "ng", "cvc", "pacemaker", "chest_tube", "sternotomy")

Side = Literal["left", "right", "both"]
Zone = Literal["upper", "mid", "lower"]

PROFILES: dict[str, float] = {
    "healthy": 0.25,
    "heart_failure": 0.18,
    "pneumonia": 0.14,
    "coronary": 0.12,
    "icu": 0.10,
    "conduction": 0.12,
    "pneumothorax": 0.04,
    "incidental": 0.05,
}

# rhythm probabilities per profile: sinus, SBRAD, STACH, AFIB, AFLT, PACE
_RHYTHMS: tuple[str, ...] = ("sinus", "SBRAD", "STACH", "AFIB", "AFLT", "PACE")
_RHYTHM_P: dict[str, tuple[float, ...]] = {
    "healthy": (0.78, 0.11, 0.07, 0.04, 0.0, 0.0),
    "heart_failure": (0.30, 0.03, 0.12, 0.38, 0.05, 0.12),
    "pneumonia": (0.42, 0.02, 0.48, 0.08, 0.0, 0.0),
    "coronary": (0.66, 0.12, 0.07, 0.08, 0.02, 0.05),
    "icu": (0.42, 0.05, 0.36, 0.15, 0.02, 0.0),
    "conduction": (0.28, 0.26, 0.08, 0.20, 0.06, 0.12),
    "pneumothorax": (0.62, 0.0, 0.38, 0.0, 0.0, 0.0),
    "incidental": (0.8, 0.1, 0.05, 0.05, 0.0, 0.0),
}
# add-on probabilities per profile
_ADDONS: dict[str, dict[str, float]] = {
    "healthy": {"RBBB": 0.04, "1AVB": 0.04, "LVH": 0.05},
    "heart_failure": {"LVH": 0.45, "LBBB": 0.2, "ISCH": 0.2, "MI": 0.2, "LQT": 0.1},
    "pneumonia": {"RBBB": 0.06, "ISCH": 0.06},
    "coronary": {"MI": 0.6, "ISCH": 0.5, "LBBB": 0.1, "RBBB": 0.12, "LVH": 0.15, "1AVB": 0.1},
    "icu": {"ISCH": 0.15, "MI": 0.1, "LQT": 0.15},
    "conduction": {"LBBB": 0.25, "RBBB": 0.3, "1AVB": 0.2, "LQT": 0.1},
    "pneumothorax": {"RBBB": 0.05},
    "incidental": {"LVH": 0.08, "RBBB": 0.05},
}
# (positive, uncertain) probabilities of X-ray findings per profile
_XRAY_P: dict[str, dict[str, tuple[float, float]]] = {
    "healthy": {"Fracture": (0.03, 0.0), "Pleural Other": (0.02, 0.0)},
    "heart_failure": {
        "Cardiomegaly": (0.78, 0.1),
        "Pleural Effusion": (0.5, 0.1),
        "Enlarged Cardiomediastinum": (0.2, 0.05),
        "Atelectasis": (0.15, 0.05),
    },
    "pneumonia": {
        "Consolidation": (0.65, 0.05),
        "Pneumonia": (0.6, 0.3),
        "Pleural Effusion": (0.2, 0.05),
        "Atelectasis": (0.15, 0.05),
    },
    "coronary": {
        "Cardiomegaly": (0.3, 0.05),
        "Edema": (0.1, 0.05),
        "Pleural Effusion": (0.08, 0.0),
    },
    "icu": {
        "Atelectasis": (0.55, 0.1),
        "Pleural Effusion": (0.35, 0.05),
        "Edema": (0.25, 0.05),
        "Pneumothorax": (0.12, 0.0),
        "Consolidation": (0.15, 0.05),
        "Lung Opacity": (0.3, 0.0),
    },
    "conduction": {"Cardiomegaly": (0.15, 0.05)},
    "pneumothorax": {"Pneumothorax": (0.88, 0.12), "Fracture": (0.3, 0.0)},
    "incidental": {
        "Lung Lesion": (0.6, 0.1),
        "Fracture": (0.3, 0.05),
        "Pleural Other": (0.35, 0.0),
        "Enlarged Cardiomediastinum": (0.2, 0.0),
    },
}
# probability that an absent finding is mentioned as absent ("No pleural effusion.")
_NEGATION_P: dict[str, float] = {
    "Pleural Effusion": 0.7,
    "Pneumothorax": 0.7,
    "Consolidation": 0.6,
    "Edema": 0.45,
    "Cardiomegaly": 0.5,
    "Enlarged Cardiomediastinum": 0.3,
    "Pneumonia": 0.15,
    "Lung Opacity": 0.1,
    "Atelectasis": 0.05,
    "Fracture": 0.1,
    "Lung Lesion": 0.05,
    "Pleural Other": 0.02,
    "Support Devices": 0.0,
}
_AGES: dict[str, tuple[int, int]] = {
    "healthy": (19, 75),
    "heart_failure": (52, 96),
    "pneumonia": (25, 92),
    "coronary": (45, 90),
    "icu": (30, 90),
    "conduction": (40, 94),
    "pneumothorax": (18, 70),
    "incidental": (40, 88),
}


def stream_rng(seed: int, stream: str, *keys: int) -> np.random.Generator:
    """An independent generator for (seed, named stream, integer keys).

    The same arguments always give the same stream, whatever else was generated before.
    """
    entropy = [int(seed) & 0xFFFFFFFF, zlib.crc32(stream.encode("utf-8"))]
    entropy += [int(k) & 0xFFFFFFFF for k in keys]
    return np.random.default_rng(entropy)


@dataclass(frozen=True)
class CxrFindings:
    """Chest X-ray ground truth of one patient.

    Attributes:
        states: label -> ``1.0`` / ``-1.0`` / ``0.0`` / ``None`` for every name in
            :data:`FINDING_LABELS` (CheXpert coding; ``None`` = not mentioned).
        effusion_side, effusion_size: laterality and size in (0, 1] of a pleural effusion.
        edema_grade: 0 none, 1 vascular congestion, 2 interstitial, 3 alveolar edema.
        opacity_side, opacity_zone: location of consolidation / pneumonia / lung opacity.
        atelectasis_side: side of plate-like atelectasis ("both" = bibasilar).
        pneumothorax_side, pneumothorax_size: side (left/right) and size in (0, 1].
        lesion_side, lesion_zone, lesion_size: nodule location and radius factor in (0, 1].
        fracture_side, pleural_other_side: laterality.
        devices: subset of :data:`DEVICES`.
        cardiomegaly_size: heart enlargement factor in [0, 1] (0 normal).
    """

    states: Mapping[str, float | None] = field(default_factory=dict)
    effusion_side: Side = "right"
    effusion_size: float = 0.5
    edema_grade: int = 0
    opacity_side: Literal["left", "right"] = "right"
    opacity_zone: Zone = "lower"
    atelectasis_side: Side = "both"
    pneumothorax_side: Literal["left", "right"] = "right"
    pneumothorax_size: float = 0.5
    lesion_side: Literal["left", "right"] = "right"
    lesion_zone: Zone = "upper"
    lesion_size: float = 0.5
    fracture_side: Literal["left", "right"] = "left"
    pleural_other_side: Literal["left", "right"] = "right"
    devices: tuple[str, ...] = ()
    cardiomegaly_size: float = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.states) - set(FINDING_LABELS)
        if unknown:
            raise ValueError(f"unknown X-ray labels: {sorted(unknown)}")
        for name, value in self.states.items():
            if value not in (None, 1.0, 0.0, -1.0):
                raise ValueError(f"state of {name!r} must be 1.0/0.0/-1.0/None, got {value!r}")
        if not 0 <= self.edema_grade <= 3:
            raise ValueError(f"edema_grade must be 0..3, got {self.edema_grade}")
        bad = set(self.devices) - set(DEVICES)
        if bad:
            raise ValueError(f"unknown devices: {sorted(bad)}")

    def state(self, label: str) -> float | None:
        """CheXpert value of ``label`` (``No Finding`` derived from the others)."""
        if label == "No Finding":
            return self.no_finding()
        return self.states.get(label)

    def strength(self, label: str) -> float:
        """Painting strength: 1 positive, 0.5 uncertain, 0 otherwise."""
        value = self.states.get(label)
        return 1.0 if value == 1.0 else 0.5 if value == -1.0 else 0.0

    def no_finding(self) -> float | None:
        """``1.0`` when something was mentioned and nothing but devices is positive/uncertain."""
        mentioned = [v for v in self.states.values() if v is not None]
        if not mentioned:
            return None
        for name, value in self.states.items():
            if name != "Support Devices" and value in (1.0, -1.0):
                return None
        return 1.0

    def row(self) -> dict[str, float | None]:
        """All 14 CheXpert values, keyed by label."""
        return {label: self.state(label) for label in XRAY_LABELS}


@dataclass(frozen=True)
class SyntheticPatient:
    """One synthetic patient.

    Attributes:
        index: position in the population (0-based).
        subject_id: MIMIC-style 8-digit id starting with 1.
        sex: ``"M"`` or ``"F"``.
        age: years.
        profile: key of :data:`PROFILES`.
        ecg_conditions: ECG labels present (subset of :data:`ECG_ORDER`, in that order).
        mi_territory: ``"inferior"``, ``"anterior"`` or ``"none"``.
        cxr: X-ray ground truth.
        split: MIMIC-CXR split name (``train``, ``validate``, ``test``).
        special: role in the quirk set (``None`` for ordinary patients).
    """

    index: int
    subject_id: int
    sex: Literal["M", "F"]
    age: int
    profile: str
    ecg_conditions: tuple[str, ...]
    mi_territory: Literal["none", "inferior", "anterior"]
    cxr: CxrFindings
    split: str
    special: str | None = None


#: Quirk roles, assigned to distinct patients in this order when n allows.
SPECIAL_ROLES: tuple[str, ...] = (
    "no_sections",  # report without FINDINGS/IMPRESSION -> no chexpert row
    "empty_labels",  # report mentions nothing -> all-blank chexpert row
    "no_impression",  # report with FINDINGS only
    "lateral_only",  # study holds only a lateral image
    "ecg_nan",  # an extra ECG with NaN (-32768) samples
    "ecg_zero",  # an extra all-zero ECG
)


def _draw_ecg(profile: str, rng: np.random.Generator) -> tuple[tuple[str, ...], str]:
    rhythm = str(rng.choice(_RHYTHMS, p=np.asarray(_RHYTHM_P[profile]) / sum(_RHYTHM_P[profile])))
    cond: set[str] = set() if rhythm == "sinus" else {rhythm}
    for name, p in _ADDONS[profile].items():
        if rng.random() < p:
            cond.add(name)
    if "LBBB" in cond and "RBBB" in cond:
        cond.discard("RBBB" if rng.random() < 0.5 else "LBBB")
    if "PACE" in cond:  # paced rhythm: the machine reads no bundle branch block / LVH / 1AVB
        cond -= {"LBBB", "RBBB", "LVH", "1AVB"}
    if "LBBB" in cond:
        cond -= {"LVH", "MI"}
    if cond & {"AFIB", "AFLT"}:
        cond.discard("1AVB")
    if not cond:
        cond = {"NORM"}
    territory = "none"
    if "MI" in cond:
        territory = "inferior" if rng.random() < 0.6 else "anterior"
    return tuple(c for c in ECG_ORDER if c in cond), territory


def _state(rng: np.random.Generator, p_pos: float, p_unc: float) -> float | None:
    u = rng.random()
    if u < p_pos:
        return 1.0
    if u < p_pos + p_unc:
        return -1.0
    return None


def _draw_cxr(profile: str, ecg: tuple[str, ...], rng: np.random.Generator) -> CxrFindings:
    states: dict[str, float | None] = dict.fromkeys(FINDING_LABELS)
    for name, (p_pos, p_unc) in _XRAY_P[profile].items():
        states[name] = _state(rng, p_pos, p_unc)
    edema_grade = 0
    if profile == "heart_failure" or (profile in ("coronary", "icu") and states["Edema"]):
        edema_grade = int(rng.choice([0, 1, 2, 3], p=[0.2, 0.25, 0.35, 0.2]))
        if profile != "heart_failure":
            edema_grade = max(edema_grade, 1)
        states["Edema"] = None if edema_grade == 0 else (-1.0 if edema_grade == 1 else 1.0)
    if states["Edema"] == -1.0:
        edema_grade = 1
    if profile == "pneumonia" and states["Pneumonia"] is None and states["Consolidation"] is None:
        states["Consolidation"] = 1.0
    opacity_painted = states["Consolidation"] in (1.0, -1.0) or states["Pneumonia"] in (1.0, -1.0)
    if opacity_painted and rng.random() < 0.85:
        states["Lung Opacity"] = 1.0
    if profile == "incidental" and not any(states[k] for k in _XRAY_P["incidental"]):
        states["Lung Lesion"] = 1.0
    devices: list[str] = []
    if "PACE" in ecg:
        devices.append("pacemaker")
    if profile == "icu":
        devices += [d for d, p in (("ett", 0.7), ("ng", 0.6), ("cvc", 0.7)) if rng.random() < p]
        if not devices:
            devices.append("cvc")
    if profile == "coronary" and rng.random() < 0.25:
        devices.append("sternotomy")
    if profile == "heart_failure" and "pacemaker" not in devices and rng.random() < 0.1:
        devices.append("pacemaker")
    if states["Pneumothorax"] is not None and rng.random() < 0.45:
        devices.append("chest_tube")
    devices = sorted(set(devices), key=DEVICES.index)
    states["Support Devices"] = 1.0 if devices else None
    # mention some absent findings as absent
    for name, p in _NEGATION_P.items():
        if states[name] is None and rng.random() < p:
            states[name] = 0.0
    if all(v is None for v in states.values()):  # a normal study always says what is absent
        states["Pleural Effusion"] = 0.0
        states["Pneumothorax"] = 0.0
    sides: tuple[Literal["left", "right"], ...] = ("left", "right")
    eff_side: Side = "both" if rng.random() < 0.45 else sides[int(rng.integers(2))]
    return CxrFindings(
        states=states,
        effusion_side=eff_side,
        effusion_size=float(rng.uniform(0.35, 1.0)),
        edema_grade=edema_grade,
        opacity_side=sides[int(rng.integers(2))],
        opacity_zone=("upper", "mid", "lower")[int(rng.choice(3, p=[0.2, 0.3, 0.5]))],
        atelectasis_side=("left", "right", "both")[int(rng.integers(3))],
        pneumothorax_side=sides[int(rng.integers(2))],
        pneumothorax_size=float(rng.uniform(0.4, 1.0)),
        lesion_side=sides[int(rng.integers(2))],
        lesion_zone=("upper", "mid", "lower")[int(rng.integers(3))],
        lesion_size=float(rng.uniform(0.35, 1.0)),
        fracture_side=sides[int(rng.integers(2))],
        pleural_other_side=sides[int(rng.integers(2))],
        devices=tuple(devices),
        cardiomegaly_size=float(rng.uniform(0.6, 1.0)) if states["Cardiomegaly"] else 0.0,
    )


def _normal_cxr(findings: CxrFindings, mention_negatives: bool) -> CxrFindings:
    states: dict[str, float | None] = dict.fromkeys(FINDING_LABELS)
    if mention_negatives:
        for name in ("Pleural Effusion", "Pneumothorax", "Consolidation"):
            states[name] = 0.0
    return replace(findings, states=states, devices=(), edema_grade=0, cardiomegaly_size=0.0)


def _split_names(n: int, rng: np.random.Generator) -> list[str]:
    order = rng.permutation(n)
    n_test = max(1, round(0.1 * n)) if n >= 3 else 0
    n_val = max(1, round(0.1 * n)) if n >= 3 else 0
    split = ["train"] * n
    for rank, idx in enumerate(order):
        if rank < n_test:
            split[int(idx)] = "test"
        elif rank < n_test + n_val:
            split[int(idx)] = "validate"
    return split


def sample_population(n: int, seed: int) -> list[SyntheticPatient]:
    """Draw ``n`` patients (deterministic for a given ``seed``).

    Quirk roles (:data:`SPECIAL_ROLES`) go to distinct patients when ``n`` is large enough; the
    two report quirks without usable labels get an unremarkable X-ray.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = stream_rng(seed, "population")
    names = list(PROFILES)
    probs = np.asarray([PROFILES[k] for k in names])
    profiles = [names[int(i)] for i in rng.choice(len(names), size=n, p=probs / probs.sum())]
    # every profile at least once when n allows (so every label family shows up)
    if n >= len(names):
        missing = [p for p in names if p not in profiles]
        slots = [int(i) for i in rng.permutation(n)]
        counts = {p: profiles.count(p) for p in names}
        for prof in missing:
            for s in slots:
                if counts[profiles[s]] > 1:
                    counts[profiles[s]] -= 1
                    profiles[s] = prof
                    counts[prof] = 1
                    break
    subject_ids: list[int] = []
    seen: set[int] = set()
    while len(subject_ids) < n:
        sid = int(rng.integers(10_000_000, 20_000_000))
        if sid not in seen:
            seen.add(sid)
            subject_ids.append(sid)
    splits = _split_names(n, rng)
    drawn: list[tuple[tuple[str, ...], str, CxrFindings]] = []
    for i in range(n):
        prng = stream_rng(seed, "patient", i)
        ecg, territory = _draw_ecg(profiles[i], prng)
        drawn.append((ecg, territory, _draw_cxr(profiles[i], ecg, prng)))
    # the two label-less report quirks go to the most unremarkable patients, the rest at random
    tiebreak = rng.random(n)
    calm = sorted(
        range(n),
        key=lambda i: (
            "PACE" in drawn[i][0],
            sum(v in (1.0, -1.0) for v in drawn[i][2].states.values()),
            tiebreak[i],
        ),
    )
    roles: dict[int, str] = {}
    for role, idx in zip(SPECIAL_ROLES[:2], calm):
        roles[idx] = role
    rest = [int(i) for i in rng.permutation(n) if int(i) not in roles]
    for role, idx in zip(SPECIAL_ROLES[2:], rest):
        roles[idx] = role
    patients: list[SyntheticPatient] = []
    for i in range(n):
        prng = stream_rng(seed, "demographics", i)
        ecg, territory, cxr = drawn[i]
        special = roles.get(i)
        if special in ("no_sections", "empty_labels"):
            cxr = _normal_cxr(cxr, mention_negatives=False)
        lo, hi = _AGES[profiles[i]]
        patients.append(
            SyntheticPatient(
                index=i,
                subject_id=subject_ids[i],
                sex="F" if prng.random() < 0.47 else "M",
                age=int(prng.integers(lo, hi + 1)),
                profile=profiles[i],
                ecg_conditions=ecg,
                mi_territory=territory,  # type: ignore[arg-type]
                cxr=cxr,
                split=splits[i],
                special=special,
            )
        )
    return patients
