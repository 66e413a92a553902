"""Synthetic MIMIC-IV-ECG 1.0 (DATASETS.md §2): ``record_list.csv``,
``machine_measurements.csv`` (+ data dictionary), ``waveform_note_links.csv`` and
``files/pNNNN/pSUBJECT/sSTUDY/STUDY.hea|.dat`` (500 Hz, 5000 samples, gain 200, MIMIC lead order
with aVF before aVL, base time/date, ``# <subject_id>: ...`` comment)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from datamodules.synthetic._io import write_csv, write_wfdb
from datamodules.synthetic._render import Tick, patient_ecg_params
from datamodules.synthetic.ecg_sim import CANONICAL_LEADS, SimulatedEcg, simulate_ecg
from datamodules.synthetic.plan import EcgRecordPlan
from datamodules.synthetic.population import SyntheticPatient, stream_rng
from datamodules.synthetic.reports import ecg_statements

__all__ = [
    "MEASUREMENT_COLUMNS",
    "MIMIC_LEADS",
    "RECORD_LIST_COLUMNS",
    "ecg_record_path",
    "write_mimic_ecg",
]

#: MIMIC-IV-ECG lead order (note aVF before aVL).
MIMIC_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6",
)  # fmt: skip
RECORD_LIST_COLUMNS: tuple[str, ...] = ("subject_id", "study_id", "file_name", "ecg_time", "path")
MEASUREMENT_COLUMNS: tuple[str, ...] = (
    "subject_id", "study_id", "cart_id", "ecg_time", *(f"report_{k}" for k in range(18)),
    "bandwidth", "filtering", "rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end",
    "t_end", "p_axis", "qrs_axis", "t_axis",
)  # fmt: skip
NOTE_LINK_COLUMNS: tuple[str, ...] = (
    "subject_id", "study_id", "waveform_path", "note_id", "note_seq", "charttime",
)  # fmt: skip
_DICTIONARY: tuple[tuple[str, str], ...] = (
    ("subject_id", "Patient identifier shared with MIMIC-IV and MIMIC-CXR"),
    ("study_id", "ECG identifier, equal to the record name"),
    ("cart_id", "Identifier of the ECG cart"),
    ("ecg_time", "Time of the ECG from the cart clock"),
    ("report_#", "Machine-generated interpretation statement number #"),
    ("bandwidth", "Acquisition bandwidth"),
    ("filtering", "Filters applied by the cart"),
    ("rr_interval", "RR interval in ms"),
    ("p_onset", "P wave onset in ms"),
    ("p_end", "P wave end in ms"),
    ("qrs_onset", "QRS onset in ms"),
    ("qrs_end", "QRS end in ms"),
    ("t_end", "T wave end in ms"),
    ("p_axis", "P axis in degrees"),
    ("qrs_axis", "QRS axis in degrees"),
    ("t_axis", "T axis in degrees"),
)
_SENTINELS = (29999, 32767, -32768, 65535, 65534, 61440)
_CANON_TO_MIMIC = [CANONICAL_LEADS.index(name) for name in MIMIC_LEADS]


def ecg_record_path(subject_id: int, study_id: int) -> str:
    """``files/p1000/p10000032/s40689238/40689238`` (WFDB stem relative to the root)."""
    sid = f"{subject_id:08d}"
    return f"files/p{sid[:4]}/p{sid}/s{study_id}/{study_id}"


def _measurements(
    ecg: SimulatedEcg, kind: str, rng: np.random.Generator, force_sentinel: bool = False
) -> list[object]:
    if kind == "zero":
        return [None, None] + [29999] * 9
    p_onset = int(rng.integers(30, 60))
    if ecg.pr_ms is None:
        p_on: int = 29999
        p_end: int = 29999
        qrs_on = p_onset + 150
        p_axis: int = 29999
    else:
        p_on, p_end = p_onset, p_onset + int(rng.integers(95, 125))
        qrs_on = p_onset + round(ecg.pr_ms)
        p_axis = round(ecg.p_axis_deg or 0)
    vals: list[object] = [
        str(rng.choice(["0.005-150 Hz", "0.0005-150 Hz", "0.05-150 Hz"])),
        str(
            rng.choice(
                [
                    "60 Hz notch Baseline filter",
                    "Baseline filter",
                    "50 Hz notch Baseline filter",
                    "",
                ]
            )
        )
        or None,
        round(ecg.rr_ms),
        p_on,
        p_end,
        qrs_on,
        qrs_on + round(ecg.qrs_ms),
        qrs_on + round(ecg.qt_ms),
        p_axis,
        round(ecg.qrs_axis_deg),
        round(ecg.t_axis_deg),
    ]
    if force_sentinel or rng.random() < 0.04:  # a device sentinel in an interval/axis column
        vals[int(rng.integers(3, 11))] = int(rng.choice(_SENTINELS))
    return vals


def write_mimic_ecg(
    root: Path,
    patients: list[SyntheticPatient],
    records: tuple[EcgRecordPlan, ...],
    seed: int,
    tick: Tick,
) -> None:
    """Write the synthetic MIMIC-IV-ECG tree under ``root``."""
    by_index = {p.index: p for p in patients}
    record_rows: list[list[object]] = []
    measure_rows: list[list[object]] = []
    note_rows: list[list[object]] = []
    for i, rec in enumerate(records):
        p = by_index[rec.patient]
        rng = stream_rng(seed, "mimic-ecg", rec.study_id)
        ecg = simulate_ecg(patient_ecg_params(p, seed), rng, fs_hz=500.0, duration_s=10.0)
        sig = ecg.signal[_CANON_TO_MIMIC].T.copy()  # (5000, 12) in MIMIC order
        if rec.kind == "nan":  # a dead lead plus a dropout burst: stored as -32768
            sig[:, int(rng.integers(6, 12))] = np.nan
            start = int(rng.integers(0, 4000))
            sig[start : start + 400, :3] = np.nan
        elif rec.kind == "zero":
            sig[:] = 0.0
        rel = ecg_record_path(rec.subject_id, rec.study_id)
        write_wfdb(
            root / rel,
            sig,
            MIMIC_LEADS,
            fs_hz=500,
            gain=200.0,
            base_datetime=rec.time,
            comments=[f"<subject_id>: {rec.subject_id}"],
        )
        ecg_time = f"{rec.time:%Y-%m-%d %H:%M:%S}"
        record_rows.append([rec.subject_id, rec.study_id, rec.study_id, ecg_time, rel])
        statements = ecg_statements(p, rng)
        reports: list[object] = [*statements, *([None] * (18 - len(statements)))]
        mm_time = rec.time + dt.timedelta(minutes=rec.measurement_time_shift_min)
        measure_rows.append(
            [
                rec.subject_id,
                rec.study_id,
                rec.cart_id,
                f"{mm_time:%Y-%m-%d %H:%M:%S}",
                *reports,
                *_measurements(ecg, rec.kind, rng, force_sentinel=i == 0),
            ]
        )
        if rng.random() < 0.75:
            note_rows.append(
                [
                    rec.subject_id,
                    rec.study_id,
                    rel,
                    f"{rec.subject_id}-EK-{len(note_rows)}",
                    len(note_rows),
                    ecg_time,
                ]
            )
        tick(1)
    order = sorted(range(len(record_rows)), key=lambda i: (record_rows[i][0], record_rows[i][3]))
    write_csv(root / "record_list.csv", RECORD_LIST_COLUMNS, [record_rows[i] for i in order])
    write_csv(
        root / "machine_measurements.csv", MEASUREMENT_COLUMNS, [measure_rows[i] for i in order]
    )
    write_csv(
        root / "machine_measurements_data_dictionary.csv",
        ("field", "description"),
        [list(r) for r in _DICTIONARY],
    )
    write_csv(root / "waveform_note_links.csv", NOTE_LINK_COLUMNS, note_rows)
