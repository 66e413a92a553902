"""Identifiers, timelines and acquisitions of every synthetic dataset, drawn up front.

The plan fixes which studies, images and ECG records exist, their ids, times, views and storage
choices, so each writer only renders and serialises. MIMIC-CXR and MIMIC-IV-ECG share
``subject_id`` and a timeline: every CXR study has an ECG within a few hours (the pairing
window), some patients have a follow-up study, a remote ECG (months away) or one of the two
signal quirks (an ECG with NaN samples, an all-zero ECG) a few days after the index study.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from datamodules.synthetic.population import SyntheticPatient, stream_rng

__all__ = [
    "ChexpertImagePlan",
    "ChexpertStudyPlan",
    "CxrImagePlan",
    "CxrStudyPlan",
    "EcgRecordPlan",
    "Plan",
    "PtbxlRecordPlan",
    "build_plan",
]

ViewName = Literal["PA", "AP", "LATERAL"]

#: Width / height of the images per view (real MIMIC-CXR: PA 2544x3056, portable AP 2539x2705).
ASPECT: dict[str, float] = {"PA": 0.83, "AP": 0.94, "LATERAL": 0.83}


@dataclass(frozen=True)
class CxrImagePlan:
    """One MIMIC-CXR image (DICOM + JPG)."""

    dicom_id: str
    view: ViewName
    view_position: str  # metadata value: PA, AP, LATERAL, LL
    rows: int
    columns: int
    monochrome1: bool
    voi_lut: bool
    sop_uid: str
    series_uid: str


@dataclass(frozen=True)
class CxrStudyPlan:
    """One MIMIC-CXR study (one report)."""

    patient: int
    subject_id: int
    study_id: int
    time: dt.datetime
    procedure: str
    orientation: str  # Erect / Recumbent / ""
    images: tuple[CxrImagePlan, ...]
    report_style: str  # full / no_impression / no_sections / empty_labels
    study_uid: str
    followup: bool


@dataclass(frozen=True)
class EcgRecordPlan:
    """One MIMIC-IV-ECG record."""

    patient: int
    subject_id: int
    study_id: int
    time: dt.datetime
    kind: str  # paired / followup / remote / nan / zero
    cart_id: int
    measurement_time_shift_min: int  # machine_measurements.ecg_time - record_list.ecg_time


@dataclass(frozen=True)
class PtbxlRecordPlan:
    """One PTB-XL ECG."""

    ecg_id: int
    patient: int
    patient_id: int
    strat_fold: int
    recording_date: dt.datetime
    repeat: int  # 0 first ECG of the patient, 1 second


@dataclass(frozen=True)
class ChexpertImagePlan:
    """One CheXpert image."""

    path: str  # CheXpert-v1.0-small/<split>/patientNNNNN/studyK/viewJ_<frontal|lateral>.jpg
    view: ViewName
    ap_pa: str  # AP / PA / LL / ""
    rows: int
    columns: int


@dataclass(frozen=True)
class ChexpertStudyPlan:
    """One CheXpert study."""

    patient: int
    split: str  # train / valid
    images: tuple[ChexpertImagePlan, ...]


@dataclass(frozen=True)
class Plan:
    """Everything the writers produce."""

    cxr_studies: tuple[CxrStudyPlan, ...]
    ecg_records: tuple[EcgRecordPlan, ...]
    ptbxl_records: tuple[PtbxlRecordPlan, ...]
    chexpert_studies: tuple[ChexpertStudyPlan, ...]


def _uid(rng: np.random.Generator) -> str:
    """A DICOM UID of the form ``2.25.<integer>`` (as in MIMIC-CXR)."""
    value = int.from_bytes(rng.bytes(15), "big")
    return f"2.25.{value}"


def _dicom_id(rng: np.random.Generator) -> str:
    return "-".join(rng.bytes(4).hex() for _ in range(5))


class _Unique:
    def __init__(self, rng: np.random.Generator, lo: int, hi: int) -> None:
        self.rng, self.lo, self.hi, self.seen = rng, lo, hi, set[int]()

    def __call__(self) -> int:
        while True:
            v = int(self.rng.integers(self.lo, self.hi))
            if v not in self.seen:
                self.seen.add(v)
                return v


def _size(image_size: int, view: str) -> tuple[int, int]:
    return image_size, max(16, round(image_size * ASPECT[view]))


def _cxr_images(
    rng: np.random.Generator, image_size: int, lateral_only: bool, portable: bool, mono1: bool
) -> tuple[tuple[CxrImagePlan, ...], str, str]:
    series = _uid(rng)
    views: list[tuple[ViewName, str]]
    if lateral_only:
        views = [("LATERAL", "LATERAL")]
        procedure, orientation = "CHEST (PA AND LAT)", "Erect"
    elif portable:
        views = [("AP", "AP")]
        procedure, orientation = "CHEST (PORTABLE AP)", "Recumbent" if rng.random() < 0.6 else ""
    else:
        lat_name = "LL" if rng.random() < 0.15 else "LATERAL"
        u = rng.random()
        if u < 0.08:
            views = [("PA", "PA")]
        elif u < 0.9:
            views = [("PA", "PA"), ("LATERAL", lat_name)]
        else:
            views = [("PA", "PA"), ("LATERAL", lat_name), ("LATERAL", "LATERAL")]
        procedure, orientation = "CHEST (PA AND LAT)", "Erect"
    images = []
    for view, position in views:
        rows, cols = _size(image_size, view)
        images.append(
            CxrImagePlan(
                dicom_id=_dicom_id(rng),
                view=view,
                view_position=position,
                rows=rows,
                columns=cols,
                monochrome1=mono1,
                voi_lut=bool(rng.random() < 0.25),
                sop_uid=_uid(rng),
                series_uid=series,
            )
        )
    return tuple(images), procedure, orientation


def build_plan(patients: list[SyntheticPatient], seed: int, image_size: int) -> Plan:
    """Draw ids, times and acquisitions for every dataset (deterministic in ``seed``)."""
    rng = stream_rng(seed, "plan")
    cxr_ids = _Unique(rng, 50_000_000, 60_000_000)
    ecg_ids = _Unique(rng, 40_000_000, 50_000_000)
    cxr_studies: list[CxrStudyPlan] = []
    ecgs: list[EcgRecordPlan] = []
    carts = [int(c) for c in rng.integers(6000, 9999, size=12)]
    for p in patients:
        prng = stream_rng(seed, "timeline", p.index)
        start = dt.datetime(int(prng.integers(2110, 2195)), 1, 1) + dt.timedelta(
            days=int(prng.integers(0, 360)), seconds=int(prng.integers(0, 86400))
        )
        portable = p.profile == "icu" or prng.random() < 0.2
        times = [start]
        if prng.random() < 0.1 and p.special is None:
            times.append(
                start
                + dt.timedelta(
                    days=int(prng.integers(20, 300)), seconds=int(prng.integers(-20000, 20000))
                )
            )
        for j, t in enumerate(times):
            # both photometric interpretations in every dataset with >= 2 studies
            mono1 = not cxr_studies if len(cxr_studies) < 2 else bool(prng.random() < 0.35)
            images, procedure, orientation = _cxr_images(
                prng, image_size, p.special == "lateral_only" and j == 0, portable, mono1
            )
            style = "full"
            if j == 0 and p.special in ("no_sections", "empty_labels", "no_impression"):
                style = str(p.special)
            t_cxr = t.replace(microsecond=int(prng.integers(0, 1000)) * 1000)
            cxr_studies.append(
                CxrStudyPlan(
                    patient=p.index,
                    subject_id=p.subject_id,
                    study_id=cxr_ids(),
                    time=t_cxr,
                    procedure=procedure,
                    orientation=orientation,
                    images=images,
                    report_style=style,
                    study_uid=_uid(prng),
                    followup=j > 0,
                )
            )
            dt_min = int(prng.integers(-180, 181))
            ecgs.append(
                _ecg(
                    p,
                    ecg_ids(),
                    t + dt.timedelta(minutes=dt_min),
                    "paired" if j == 0 else "followup",
                    carts,
                    prng,
                )
            )
        if prng.random() < 0.15:
            back = dt.timedelta(days=int(prng.integers(60, 700)))
            ecgs.append(_ecg(p, ecg_ids(), start - back, "remote", carts, prng))
        if p.special in ("ecg_nan", "ecg_zero"):
            later = dt.timedelta(days=int(prng.integers(5, 30)))
            ecgs.append(_ecg(p, ecg_ids(), start + later, p.special[4:], carts, prng))
    if len(ecgs) >= 3 and not any(e.measurement_time_shift_min for e in ecgs):
        ecgs[1] = replace(ecgs[1], measurement_time_shift_min=60)  # at least one clock mismatch
    ptbxl = _ptbxl_plan(patients, seed)
    chexpert = _chexpert_plan(patients, seed, image_size)
    return Plan(tuple(cxr_studies), tuple(ecgs), ptbxl, chexpert)


def _ecg(
    p: SyntheticPatient,
    study_id: int,
    time: dt.datetime,
    kind: str,
    carts: list[int],
    rng: np.random.Generator,
) -> EcgRecordPlan:
    shift = int(rng.choice([-120, -7, 3, 60])) if rng.random() < 0.05 else 0
    return EcgRecordPlan(
        patient=p.index,
        subject_id=p.subject_id,
        study_id=study_id,
        time=time.replace(second=0, microsecond=0),
        kind=kind,
        cart_id=carts[int(rng.integers(len(carts)))],
        measurement_time_shift_min=shift,
    )


def _ptbxl_plan(patients: list[SyntheticPatient], seed: int) -> tuple[PtbxlRecordPlan, ...]:
    rng = stream_rng(seed, "ptbxl-plan")
    pids = _Unique(rng, 1, 21_800)
    order = [int(i) for i in rng.permutation(len(patients))]
    folds = {idx: 1 + rank % 10 for rank, idx in enumerate(order)}
    entries: list[tuple[int, int, int]] = []  # (patient, patient_id, repeat)
    for p in patients:
        pid = pids()
        entries.append((p.index, pid, 0))
        if rng.random() < 0.12:
            entries.append((p.index, pid, 1))
    entries = [entries[int(i)] for i in rng.permutation(len(entries))]
    records: list[PtbxlRecordPlan] = []
    ecg_id = 0
    date = dt.datetime(1984, 11, 9, 9, 0, 0)
    span = (dt.datetime(2001, 6, 1) - date).total_seconds()
    step = span / max(1, len(entries))
    for patient, pid, repeat in entries:
        ecg_id += int(rng.integers(1, 4))  # ids are not contiguous in 1.0.3
        date = date + dt.timedelta(seconds=float(rng.uniform(0.2, 1.8)) * step)
        records.append(
            PtbxlRecordPlan(
                ecg_id=ecg_id,
                patient=patient,
                patient_id=pid,
                strat_fold=folds[patient],
                recording_date=date.replace(microsecond=0),
                repeat=repeat,
            )
        )
    return tuple(records)


def _chexpert_plan(
    patients: list[SyntheticPatient], seed: int, image_size: int
) -> tuple[ChexpertStudyPlan, ...]:
    rng = stream_rng(seed, "chexpert-plan")
    n = len(patients)
    n_valid = max(1, round(0.1 * n)) if n >= 4 else 0
    studies: list[ChexpertStudyPlan] = []
    train_no, valid_no = 0, 64_540
    for p in patients:
        valid = p.index >= n - n_valid
        if valid:
            valid_no += 1
            folder, number = "valid", valid_no
        else:
            train_no += 1
            folder, number = "train", train_no
        n_studies = 2 if (not valid and rng.random() < 0.1) else 1
        for s in range(1, n_studies + 1):
            images: list[ChexpertImagePlan] = []
            base = f"CheXpert-v1.0-small/{folder}/patient{number:05d}/study{s}"
            rows, cols = image_size, max(16, round(image_size * 0.82))
            images.append(
                ChexpertImagePlan(
                    f"{base}/view1_frontal.jpg",
                    "AP" if rng.random() < 0.7 else "PA",
                    "",
                    rows,
                    cols,
                )
            )
            if rng.random() < 0.3:
                images.append(
                    ChexpertImagePlan(f"{base}/view2_lateral.jpg", "LATERAL", "", rows, cols)
                )
            images = [
                ChexpertImagePlan(
                    im.path,
                    im.view,
                    im.view if im.view != "LATERAL" else ("LL" if rng.random() < 0.1 else ""),
                    im.rows,
                    im.columns,
                )
                for im in images
            ]
            studies.append(ChexpertStudyPlan(p.index, folder, tuple(images)))
    return tuple(studies)
