"""Text of the synthetic datasets: CXR reports, ECG machine statements, PTB-XL reports/codes.

Every sentence is chosen to express exactly the ground-truth label *states* of the patient
(positive, uncertain, mentioned-absent, not mentioned), so the label CSVs, the images and the
text agree by construction.

:data:`MIMIC_STATEMENT_LABELS` is the exact phrase -> ECG label table of the machine statements
written into ``machine_measurements.csv`` (match whole statements; note that "Abnormal ECG"
contains the substring "normal ECG"). :data:`PTBXL_CODE_LABELS` maps the SCP codes written into
``ptbxl_database.csv`` to the same labels.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np

from datamodules.synthetic.population import CxrFindings, SyntheticPatient

__all__ = [
    "MIMIC_STATEMENT_LABELS",
    "PTBXL_CODE_LABELS",
    "cxr_report",
    "ecg_statements",
    "ptbxl_report",
    "ptbxl_scp_codes",
]

#: Every machine statement the generator writes -> ECG label it expresses (None = no label).
MIMIC_STATEMENT_LABELS: dict[str, str | None] = {
    "Sinus rhythm": None,
    "Normal ECG": "NORM",
    "Borderline ECG": None,
    "Abnormal ECG": None,
    "Sinus bradycardia": "SBRAD",
    "Marked sinus bradycardia": "SBRAD",
    "Sinus tachycardia": "STACH",
    "Atrial fibrillation": "AFIB",
    "Atrial fibrillation with rapid ventricular response": "AFIB",
    "Atrial flutter with 2:1 A-V conduction": "AFLT",
    "Atrial flutter with variable A-V block": "AFLT",
    "1st degree A-V block": "1AVB",
    "Left bundle branch block": "LBBB",
    "Right bundle branch block": "RBBB",
    "Inferior infarct - age undetermined": "MI",
    "Inferior infarct, possibly acute": "MI",
    "Anteroseptal infarct - age undetermined": "MI",
    "Anterior infarct, possibly acute": "MI",
    "ST depression, consider ischemia": "ISCH",
    "Lateral ST-T changes may be due to myocardial ischemia": "ISCH",
    "Left ventricular hypertrophy": "LVH",
    "Left ventricular hypertrophy with repolarization abnormality": "LVH",
    "Prolonged QT interval": "LQT",
    "Ventricular-paced rhythm": "PACE",
    "Left axis deviation": None,
    "Possible left atrial enlargement": None,
    "***": None,
}

#: SCP codes the generator writes -> ECG label (None = no label; SR/form codes).
PTBXL_CODE_LABELS: dict[str, str | None] = {
    "NORM": "NORM",
    "SR": None,
    "SBRAD": "SBRAD",
    "STACH": "STACH",
    "AFIB": "AFIB",
    "AFLT": "AFLT",
    "PACE": "PACE",
    "1AVB": "1AVB",
    "CLBBB": "LBBB",
    "CRBBB": "RBBB",
    "IMI": "MI",
    "ILMI": "MI",
    "ASMI": "MI",
    "AMI": "MI",
    "ISC_": "ISCH",
    "ISCAL": "ISCH",
    "ISCIN": "ISCH",
    "STD_": "ISCH",
    "LVH": "LVH",
    "VCLVH": "LVH",
    "LNGQT": "LQT",
    "QWAVE": None,
    "ABQRS": None,
    "INVT": None,
    "LAD": None,
}


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


# --------------------------------------------------------------------------------------------
# ECG: MIMIC-IV-ECG machine statements
# --------------------------------------------------------------------------------------------


def ecg_statements(patient: SyntheticPatient, rng: np.random.Generator) -> list[str]:
    """Machine statements (``report_0..``) of one ECG of ``patient``; every one is a key of
    :data:`MIMIC_STATEMENT_LABELS`."""
    c = set(patient.ecg_conditions)
    out: list[str] = []
    if "AFIB" in c:
        out.append(
            _pick(
                rng, ["Atrial fibrillation", "Atrial fibrillation with rapid ventricular response"]
            )
        )
    elif "AFLT" in c:
        out.append(
            _pick(
                rng,
                [
                    "Atrial flutter with 2:1 A-V conduction",
                    "Atrial flutter with variable A-V block",
                ],
            )
        )
    elif "PACE" in c:
        out.append("Ventricular-paced rhythm")
    elif "SBRAD" in c:
        out.append(
            _pick(rng, ["Sinus bradycardia", "Sinus bradycardia", "Marked sinus bradycardia"])
        )
    elif "STACH" in c:
        out.append("Sinus tachycardia")
    else:
        out.append("Sinus rhythm")
    if "1AVB" in c:
        out.append("1st degree A-V block")
    if "LBBB" in c:
        out.append("Left bundle branch block")
    if "RBBB" in c:
        out.append("Right bundle branch block")
    if ("LBBB" in c or "PACE" in c) and rng.random() < 0.4:
        out.append("Left axis deviation")
    if "LVH" in c:
        out.append(
            _pick(
                rng,
                [
                    "Left ventricular hypertrophy",
                    "Left ventricular hypertrophy with repolarization abnormality",
                ],
            )
        )
    if "MI" in c:
        if patient.mi_territory == "anterior":
            out.append(
                _pick(
                    rng,
                    ["Anteroseptal infarct - age undetermined", "Anterior infarct, possibly acute"],
                )
            )
        else:
            out.append(
                _pick(
                    rng, ["Inferior infarct - age undetermined", "Inferior infarct, possibly acute"]
                )
            )
    if "ISCH" in c:
        out.append(
            _pick(
                rng,
                [
                    "ST depression, consider ischemia",
                    "Lateral ST-T changes may be due to myocardial ischemia",
                ],
            )
        )
    if "LQT" in c:
        out.append("Prolonged QT interval")
    if c == {"NORM"}:
        out.append("Normal ECG")
    else:
        if "AFIB" in c and rng.random() < 0.25:
            out.append("Possible left atrial enlargement")
        benign_rate = c <= {"SBRAD", "STACH", "1AVB"}
        out.append("Borderline ECG" if benign_rate else "Abnormal ECG")
    if rng.random() < 0.04:
        out.append("***")
    return out


# --------------------------------------------------------------------------------------------
# PTB-XL
# --------------------------------------------------------------------------------------------


def ptbxl_scp_codes(patient: SyntheticPatient, rng: np.random.Generator) -> dict[str, float]:
    """``scp_codes`` dict (likelihoods in %, ``0.0`` = unknown likelihood) for one PTB-XL ECG."""
    c = set(patient.ecg_conditions)
    codes: dict[str, float] = {}
    lik = (100.0, 100.0, 80.0, 50.0, 35.0, 15.0)
    if c == {"NORM"}:
        codes["NORM"] = float(_pick(rng, ["100.0", "100.0", "80.0"]))
    for cond, code in (("1AVB", "1AVB"), ("LBBB", "CLBBB"), ("RBBB", "CRBBB"), ("LQT", "LNGQT")):
        if cond in c:
            codes[code] = 100.0
    if "MI" in c:
        if patient.mi_territory == "anterior":
            codes[_pick(rng, ["ASMI", "ASMI", "AMI"])] = float(lik[int(rng.integers(5))])
        else:
            codes[_pick(rng, ["IMI", "IMI", "ILMI"])] = float(lik[int(rng.integers(5))])
        if rng.random() < 0.4:
            codes["QWAVE"] = 0.0
    if "ISCH" in c:
        codes[_pick(rng, ["ISC_", "ISCAL", "ISCIN"])] = float(_pick(rng, ["100.0", "50.0"]))
        if rng.random() < 0.4:
            codes["STD_"] = 0.0
    if "LVH" in c:
        codes["LVH"] = float(_pick(rng, ["100.0", "50.0"]))
        if rng.random() < 0.3:
            codes["VCLVH"] = 0.0
    if "LBBB" in c and rng.random() < 0.3:
        codes["ABQRS"] = 0.0
    for cond in ("SBRAD", "STACH", "AFIB", "AFLT", "PACE"):
        if cond in c:
            codes[cond] = 0.0
    if not c & {"SBRAD", "STACH", "AFIB", "AFLT", "PACE"}:
        codes["SR"] = 0.0
    return codes


_GERMAN = {
    "sinus": "sinusrhythmus",
    "NORM": "normales ekg",
    "SBRAD": "sinusbradykardie",
    "STACH": "sinustachykardie",
    "AFIB": "vorhofflimmern",
    "AFLT": "vorhofflattern",
    "PACE": "ventrikulÄrer schrittmacherrhythmus",
    "1AVB": "av-block i. grades",
    "LBBB": "linksschenkelblock",
    "RBBB": "rechtsschenkelblock",
    "MI_inferior": "inferiorer infarkt alter unbestimmt",
    "MI_anterior": "anteroseptaler infarkt alter unbestimmt",
    "ISCH": "st-senkung, ischÄmie mÖglich",
    "LVH": "linksventrikulÄre hypertrophie",
    "LQT": "verlÄngerte qt-zeit",
}
_ENGLISH = {
    "sinus": "sinus rhythm.",
    "NORM": "normal ecg.",
    "SBRAD": "sinus bradycardia.",
    "STACH": "sinus tachycardia.",
    "AFIB": "atrial fibrillation.",
    "AFLT": "atrial flutter.",
    "PACE": "ventricular pacing.",
    "1AVB": "first degree av block.",
    "LBBB": "left bundle branch block.",
    "RBBB": "right bundle branch block.",
    "MI_inferior": "inferior myocardial infarction, age undetermined.",
    "MI_anterior": "anteroseptal myocardial infarction, age undetermined.",
    "ISCH": "st depression, possible ischemia.",
    "LVH": "left ventricular hypertrophy.",
    "LQT": "prolonged qt interval.",
}
_SWEDISH = {
    "sinus": "sinusrytm",
    "NORM": "normalt ekg",
    "SBRAD": "sinusbradykardi",
    "STACH": "sinustakykardi",
    "AFIB": "fÖrmaksflimmer",
    "AFLT": "fÖrmaksfladder",
    "PACE": "pacemakerrytm",
    "1AVB": "av-block i",
    "LBBB": "vÄnstersidigt skÄnkelblock",
    "RBBB": "hÖgersidigt skÄnkelblock",
    "MI_inferior": "inferior infarkt",
    "MI_anterior": "anteroseptal infarkt",
    "ISCH": "st-sÄnkning, misstÄnkt ischemi",
    "LVH": "vÄnster kammarhypertrofi",
    "LQT": "fÖrlÄngd qt-tid",
}


def ptbxl_report(patient: SyntheticPatient, rng: np.random.Generator) -> str:
    """Lower-case free-text PTB-XL report (German, English or Swedish, with the ``Ä/Ö/Ü``
    encoding artefact)."""
    c = patient.ecg_conditions
    u = rng.random()
    table = _GERMAN if u < 0.6 else _ENGLISH if u < 0.92 else _SWEDISH
    keys: list[str] = []
    if not set(c) & {"SBRAD", "STACH", "AFIB", "AFLT", "PACE"}:
        keys.append("sinus")
    for cond in c:
        keys.append(f"MI_{patient.mi_territory}" if cond == "MI" else cond)
    text = " ".join(table[k] for k in keys)
    if table is _GERMAN and rng.random() < 0.35:
        text += " 4.46   unbestÄtigter bericht"
    if table is _ENGLISH and rng.random() < 0.1:
        text += " edit: " + ", ".join(k.lower() for k in c)
    return text


# --------------------------------------------------------------------------------------------
# CXR reports
# --------------------------------------------------------------------------------------------

_LOBE = {
    ("right", "upper"): "right upper lobe",
    ("right", "mid"): "right middle lobe",
    ("right", "lower"): "right lower lobe",
    ("left", "upper"): "left upper lobe",
    ("left", "mid"): "lingula",
    ("left", "lower"): "left lower lobe",
}

_DEVICE_TEXT: dict[str, tuple[str, ...]] = {
    "ett": (
        "Endotracheal tube terminates approximately 4 cm above the carina.",
        "The endotracheal tube is in standard position.",
    ),
    "ng": (
        "Enteric tube courses below the diaphragm with the tip in the stomach.",
        "Nasogastric tube terminates in the stomach.",
    ),
    "cvc": (
        "Right internal jugular central venous catheter terminates in the mid SVC.",
        "Right IJ central line tip projects over the lower SVC.",
    ),
    "pacemaker": (
        "Left chest wall pacemaker with leads in the right atrium and right ventricle.",
        "Dual-lead pacemaker device is unchanged in position.",
    ),
    "chest_tube": ("{Side} chest tube in place.", "A {side} pigtail chest tube is present."),
    "sternotomy": ("Median sternotomy wires are intact.", "Status post median sternotomy."),
}


def _size_word(x: float) -> str:
    return "small" if x < 0.55 else "moderate" if x < 0.85 else "large"


def _finding_sentences(
    label: str, value: float, f: CxrFindings, rng: np.random.Generator
) -> tuple[str, ...]:
    """Candidate sentences expressing ``label`` with CheXpert ``value`` (1, -1, 0)."""
    lobe = _LOBE[(f.opacity_side, f.opacity_zone)]
    if label == "Cardiomegaly":
        sev = (
            "mildly"
            if f.cardiomegaly_size < 0.7
            else "moderately"
            if f.cardiomegaly_size < 0.9
            else "markedly"
        )
        sev_adj = {"mildly": "Mild", "moderately": "Moderate", "markedly": "Marked"}[sev]
        return {
            1.0: (
                f"The heart is {sev} enlarged.",
                f"{sev_adj} cardiomegaly.",
                "The cardiac silhouette is enlarged.",
            ),
            -1.0: ("Heart size is borderline enlarged.", "Possible mild cardiomegaly."),
            0.0: ("Heart size is normal.", "The heart is normal in size.", "No cardiomegaly."),
        }[value]
    if label == "Enlarged Cardiomediastinum":
        return {
            1.0: ("The mediastinum is widened.", "Enlarged cardiomediastinal silhouette."),
            -1.0: ("Possible mediastinal widening, which may be due to technique.",),
            0.0: (
                "Normal cardiomediastinal silhouette.",
                "Mediastinal and hilar contours are normal.",
            ),
        }[value]
    if label == "Edema":
        if value == 1.0 and f.edema_grade >= 3:
            return (
                "Severe alveolar pulmonary edema.",
                "Diffuse perihilar airspace edema in a bat-wing distribution.",
            )
        return {
            1.0: (
                "Moderate interstitial pulmonary edema.",
                "Interstitial pulmonary edema with Kerley B lines.",
            ),
            -1.0: (
                "Mild pulmonary vascular congestion, possibly early interstitial edema.",
                "Cannot exclude mild pulmonary edema.",
            ),
            0.0: ("No pulmonary edema.", "There is no pulmonary edema."),
        }[value]
    if label == "Consolidation":
        return {
            1.0: (f"Focal consolidation in the {lobe}.", f"Dense consolidation in the {lobe}."),
            -1.0: (f"Possible early consolidation in the {lobe}.",),
            0.0: ("No focal consolidation.", "There is no consolidation."),
        }[value]
    if label == "Pneumonia":
        return {
            1.0: ("Findings are concerning for pneumonia.", f"Consistent with {lobe} pneumonia."),
            -1.0: (
                "This could represent pneumonia in the appropriate clinical setting.",
                "Pneumonia cannot be excluded.",
            ),
            0.0: ("No evidence of pneumonia.",),
        }[value]
    if label == "Lung Opacity":
        return {
            1.0: (f"Patchy opacity in the {lobe}.", f"Airspace opacity in the {lobe}."),
            -1.0: (f"Possible faint opacity in the {lobe}.",),
            0.0: ("No focal airspace opacity.",),
        }[value]
    if label == "Atelectasis":
        side = f.atelectasis_side
        if side == "both":
            pos: tuple[str, ...] = ("Bibasilar atelectasis.", "Bibasilar plate-like atelectasis.")
            unc: tuple[str, ...] = ("Possible mild bibasilar atelectasis.",)
        else:
            pos = (
                f"Plate-like atelectasis at the {side} lung base.",
                f"Linear atelectasis in the {side} lower lobe.",
            )
            unc = (f"Possible subsegmental atelectasis at the {side} base.",)
        return {1.0: pos, -1.0: unc, 0.0: ("No atelectasis.",)}[value]
    if label == "Pleural Effusion":
        size = _size_word(f.effusion_size)
        if f.effusion_side == "both":
            pos = (
                f"{size.capitalize()} bilateral pleural effusions.",
                f"There are {size} bilateral pleural effusions.",
            )
            unc = ("Possible trace bilateral pleural effusions.",)
        else:
            s = f.effusion_side
            pos = (
                f"{size.capitalize()} {s} pleural effusion.",
                f"Blunting of the {s} costophrenic angle consistent with a {size} pleural "
                "effusion.",
            )
            unc = (f"Possible trace {s} pleural effusion.",)
        return {
            1.0: pos,
            -1.0: unc,
            0.0: ("No pleural effusion.", "There is no pleural effusion."),
        }[value]
    if label == "Pneumothorax":
        s = f.pneumothorax_side
        size = _size_word(f.pneumothorax_size)
        return {
            1.0: (
                f"{size.capitalize()} {s} apical pneumothorax.",
                f"There is a {size} {s} pneumothorax.",
            ),
            -1.0: (f"Possible small {s} apical pneumothorax.",),
            0.0: ("No pneumothorax.", "There is no pneumothorax."),
        }[value]
    if label == "Lung Lesion":
        cm = round(1.0 + 3.0 * f.lesion_size, 1)
        where = f"{f.lesion_side} {f.lesion_zone} lung"
        return {
            1.0: (f"A {cm} cm nodule in the {where}.", f"{cm} cm mass in the {where}."),
            -1.0: (f"Possible nodular density in the {where}; recommend chest CT.",),
            0.0: ("No suspicious pulmonary nodules.",),
        }[value]
    if label == "Pleural Other":
        s = f.pleural_other_side
        return {
            1.0: (
                f"Apical pleural thickening on the {s}.",
                f"{s.capitalize()} apical pleural cap.",
            ),
            -1.0: (f"Possible {s} apical pleural thickening.",),
            0.0: ("No pleural thickening.",),
        }[value]
    if label == "Fracture":
        s = f.fracture_side
        return {
            1.0: (f"Fracture of a {s} lateral rib.", f"Displaced {s} lateral rib fracture."),
            -1.0: (f"Possible nondisplaced {s} rib fracture.",),
            0.0: ("No displaced rib fracture.", "No acute fracture."),
        }[value]
    if label == "Support Devices":
        side = f.pneumothorax_side
        texts = []
        for dev in f.devices:
            t = _pick(rng, _DEVICE_TEXT[dev])
            texts.append(t.format(Side=side.capitalize(), side=side))
        return (" ".join(texts),)
    raise ValueError(f"no sentences for label {label!r}")


_FINDINGS_ORDER: tuple[str, ...] = (
    "Support Devices",
    "Cardiomegaly",
    "Enlarged Cardiomediastinum",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Lung Opacity",
    "Atelectasis",
    "Lung Lesion",
    "Pleural Effusion",
    "Pneumothorax",
    "Pleural Other",
    "Fracture",
)

_INDICATION = {
    "healthy": ("cough", "chest pain", "preoperative evaluation"),
    "heart_failure": (
        "dyspnea, history of CHF  // eval for edema",
        "shortness of breath, leg swelling",
    ),
    "pneumonia": ("fever and productive cough  // ?pneumonia", "cough, hypoxia  // ?pna"),
    "coronary": ("chest pain  // eval", "chest pain, known CAD"),
    "icu": ("intubated patient  // line placement", "respiratory failure  // eval"),
    "conduction": ("syncope  // eval", "dizziness, bradycardia"),
    "pneumothorax": ("s/p fall with chest pain  // ?ptx", "sudden dyspnea  // ?pneumothorax"),
    "incidental": ("chronic cough  // eval", "weight loss  // eval"),
}

_NORMAL_IMPRESSION = (
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "Normal chest radiograph.",
)


def _body_sentences(f: CxrFindings, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """(findings sentences, impression sentences) covering every mentioned label once."""
    states = {k: f.states.get(k) for k in _FINDINGS_ORDER}
    covered: set[str] = set()
    findings: list[str] = []
    # joint negations
    trio = ("Consolidation", "Pleural Effusion", "Pneumothorax")
    if all(states[k] == 0.0 for k in trio) and rng.random() < 0.6:
        findings_tail = "No focal consolidation, pleural effusion, or pneumothorax."
        covered.update(trio)
    elif states["Pleural Effusion"] == 0.0 and states["Pneumothorax"] == 0.0 and rng.random() < 0.6:
        findings_tail = "No pleural effusion or pneumothorax."
        covered.update(("Pleural Effusion", "Pneumothorax"))
    else:
        findings_tail = ""
    positives: list[str] = []
    for label in _FINDINGS_ORDER:
        value = states[label]
        if value is None or label in covered:
            continue
        sentence = _pick(rng, _finding_sentences(label, value, f, rng))
        findings.append(sentence)
        covered.add(label)
        if value in (1.0, -1.0) and label != "Support Devices":
            positives.append(label)
    if findings_tail:
        findings.append(findings_tail)
    # "..., without pneumothorax." folded into the preceding positive sentence
    if states["Pneumothorax"] == 0.0 and "No pneumothorax." in findings and positives:
        i = findings.index("No pneumothorax.")
        if i > 0 and rng.random() < 0.5 and findings[i - 1].endswith("."):
            findings[i - 1] = findings[i - 1][:-1] + ", without pneumothorax."
            del findings[i]
    impression: list[str] = []
    if positives:
        for label in positives:
            options = _finding_sentences(label, float(states[label]), f, rng)  # type: ignore[arg-type]
            impression.append(_pick(rng, options))
    elif f.no_finding() == 1.0:
        impression.append(_pick(rng, _NORMAL_IMPRESSION))
        if states["Support Devices"] == 1.0:
            impression.append("Support devices as described.")
    if not impression and states["Support Devices"] == 1.0:
        impression.append("Support devices as described.")
    return findings, impression


def _wrap(text: str) -> list[str]:
    return [" " + line for line in textwrap.wrap(text, width=77)] or [" "]


def cxr_report(
    patient: SyntheticPatient,
    *,
    examination: str,
    technique: str,
    rng: np.random.Generator,
    style: str = "full",
) -> str:
    """One MIMIC-CXR style report (``FINAL REPORT`` skeleton, every line starting with a space).

    Args:
        patient: whose findings to describe.
        examination: e.g. ``CHEST (PA AND LAT)``.
        technique: e.g. ``Chest PA and lateral``.
        rng: text stream.
        style: ``full``, ``no_impression`` (FINDINGS only), ``no_sections`` (neither FINDINGS nor
            IMPRESSION: no labels) or ``empty_labels`` (sections that mention no finding).
    """
    f = patient.cxr
    who = "woman" if patient.sex == "F" else "man"
    indication = _pick(rng, _INDICATION[patient.profile])
    lines: list[str] = [" " * 33 + "FINAL REPORT"]
    lines += _wrap(f"EXAMINATION:  {examination}")
    lines.append(" ")
    lines += _wrap(f"INDICATION:  ___ year old {who} with {indication}")
    lines.append(" ")
    lines += _wrap(f"TECHNIQUE:  {technique}")
    lines.append(" ")
    lines += _wrap(f"COMPARISON:  {_pick(rng, ['___', 'None.', 'Chest radiograph from ___.'])}")
    if style == "no_sections":
        return "\n".join(lines) + "\n"
    if style == "empty_labels":
        findings = [
            "Portable view of the chest was obtained with the patient rotated.",
            "Comparison is made to the prior study.",
        ]
        impression = ["Please refer to the subsequent study for further evaluation."]
    else:
        findings, impression = _body_sentences(f, rng)
    lines += [" ", " FINDINGS: ", " "]
    lines += _wrap("  ".join(findings))
    if style != "no_impression" and impression:
        lines += [" ", " IMPRESSION: ", " "]
        if len(impression) > 1:
            for k, sentence in enumerate(impression, start=1):
                lines += _wrap(f"{k}. {sentence}")
        else:
            lines += _wrap(impression[0])
    return "\n".join(lines) + "\n"
