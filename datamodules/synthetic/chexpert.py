"""Synthetic CheXpert v1.0 small release (DATASETS.md §4): ``CheXpert-v1.0-small/train.csv``,
``valid.csv`` (19 columns, ``Path`` relative to the parent of the dataset folder) and 8-bit
grayscale JPGs at ``{train,valid}/patientNNNNN/studyK/viewJ_{frontal,lateral}.jpg``.

``train.csv`` uses the four value states (1.0 / 0.0 / -1.0 / blank); ``valid.csv`` only 1.0 / 0.0
(uncertain -> 1.0, not mentioned -> 0.0), as the radiologist-consensus file does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.synthetic._io import write_csv
from datamodules.synthetic._render import Tick, patient_anatomy
from datamodules.synthetic.cxr_sim import render_cxr
from datamodules.synthetic.plan import ChexpertStudyPlan
from datamodules.synthetic.population import CHEXPERT_CSV_ORDER, SyntheticPatient, stream_rng

__all__ = ["CHEXPERT_COLUMNS", "write_chexpert"]

#: Exact header of ``train.csv`` / ``valid.csv`` (19 columns).
CHEXPERT_COLUMNS: tuple[str, ...] = (
    "Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_CSV_ORDER,
)  # fmt: skip


def write_chexpert(
    parent: Path,
    patients: list[SyntheticPatient],
    studies: tuple[ChexpertStudyPlan, ...],
    seed: int,
    tick: Tick,
) -> None:
    """Write ``parent/CheXpert-v1.0-small/...`` (``parent`` is what ``Path`` is relative to)."""
    by_index = {p.index: p for p in patients}
    rows: dict[str, list[list[object]]] = {"train": [], "valid": []}
    unknown_sex_done = False
    for s_idx, study in enumerate(studies):
        p = by_index[study.patient]
        anatomy = patient_anatomy(p, seed)
        row = p.cxr.row()
        labels: list[float | None]
        if study.split == "valid":
            labels = [1.0 if row[k] in (1.0, -1.0) else 0.0 for k in CHEXPERT_CSV_ORDER]
        else:
            labels = [row[k] for k in CHEXPERT_CSV_ORDER]
        sex = "Female" if p.sex == "F" else "Male"
        if study.split == "train" and not unknown_sex_done and len(studies) >= 10:
            sex, unknown_sex_done = "Unknown", True
        for k, im in enumerate(study.images):
            rng = stream_rng(seed, "chexpert-image", s_idx, k)
            img = render_cxr(p.cxr, anatomy, im.view, (im.rows, im.columns), rng)
            path = parent / im.path
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(img * 255.0).astype(np.uint8), mode="L").save(path, quality=90)
            frontal = im.view != "LATERAL"
            rows[study.split].append([
                im.path, sex, min(p.age, 90), "Frontal" if frontal else "Lateral",
                im.ap_pa or None, *labels,
            ])  # fmt: skip
            tick(1)
    root = parent / "CheXpert-v1.0-small"
    write_csv(root / "train.csv", CHEXPERT_COLUMNS, rows["train"])
    write_csv(root / "valid.csv", CHEXPERT_COLUMNS, rows["valid"])
