"""Per-patient rendering parameters shared by the writers (same patient = same morphology)."""

from __future__ import annotations

from collections.abc import Callable

from datamodules.synthetic.cxr_sim import Anatomy, sample_anatomy
from datamodules.synthetic.ecg_sim import EcgParams, sample_ecg_params
from datamodules.synthetic.population import SyntheticPatient, stream_rng

__all__ = ["Tick", "patient_anatomy", "patient_ecg_params"]

#: Progress callback: called with the number of finished work units.
Tick = Callable[[int], object]


def patient_ecg_params(patient: SyntheticPatient, seed: int) -> EcgParams:
    """ECG morphology of ``patient`` (identical in MIMIC-IV-ECG and PTB-XL)."""
    rng = stream_rng(seed, "ecg-params", patient.index)
    territory = None if patient.mi_territory == "none" else patient.mi_territory
    return sample_ecg_params(patient.ecg_conditions, rng, mi_territory=territory)


def patient_anatomy(patient: SyntheticPatient, seed: int) -> Anatomy:
    """Chest habitus of ``patient`` (identical in every view and dataset)."""
    return sample_anatomy(patient.sex, stream_rng(seed, "anatomy", patient.index))
