"""Synthetic look-alike datasets in the real on-disk formats (DATASETS.md), for tests and demos.

SYNTHETIC DATA — not real patients. :func:`generate` draws one seeded population of synthetic
patients (:mod:`.population`) and writes, from the same ground truth, small versions of PTB-XL,
MIMIC-IV-ECG, MIMIC-CXR (DICOM + reports), MIMIC-CXR-JPG, CheXpert (small) and the MIMIC-CXR
edema severity grades, plus optional broken files. A patient's conditions show consistently in
every modality (e.g. heart failure: enlarged heart, edema and effusion on the X-ray, LVH or atrial
fibrillation on the ECG, matching report sentences).

Layout under ``out``::

    ptb-xl/                ptbxl_database.csv, scp_statements.csv, records100/, records500/
    mimic-iv-ecg/          record_list.csv, machine_measurements.csv, ..., files/
    mimic-cxr/             files/ (DICOM + report .txt), cxr-*-list.csv.gz, label/split CSVs
    mimic-cxr-jpg/         files/ (JPG), metadata / chexpert / negbio / split CSVs (.csv.gz)
    chexpert/CheXpert-v1.0-small/  train.csv, valid.csv, train/, valid/
    mimic-cxr-pe-severity/ regex / expert / consensus edema severity CSVs
    corrupt/               only with ``with_corrupt``: broken files + README.txt
    synthetic.json         manifest (seed, n, version, notice, counts)
    synthetic_truth.csv    per-patient ground truth (profile, ECG conditions, X-ray states)

The whole tree is written into a temporary sibling folder and moved into place at the end, so an
interrupted run never leaves a half-written dataset behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

__all__ = [
    "GENERATOR_VERSION",
    "NOTICE",
    "SyntheticLayout",
    "generate",
    "load_manifest",
]

logger = logging.getLogger(__name__)

#: Bumped whenever the generated files change for a given seed.
GENERATOR_VERSION = "1"
#: Notice written into the manifest and READMEs.
NOTICE = "SYNTHETIC DATA — not real patients"
MANIFEST_NAME = "synthetic.json"


@dataclass(frozen=True)
class SyntheticLayout:
    """Root folders of one generated dataset.

    Attributes:
        root: the ``out`` folder.
        ptbxl: PTB-XL root (holds ``ptbxl_database.csv``).
        mimic_ecg: MIMIC-IV-ECG root (holds ``record_list.csv``).
        mimic_cxr: MIMIC-CXR DICOM root (DICOMs, reports, CSVs).
        mimic_cxr_jpg: MIMIC-CXR-JPG root.
        chexpert: ``CheXpert-v1.0-small`` folder (CSV ``Path`` values are relative to its parent).
        edema: edema severity folder.
        corrupt: broken files, or None when not generated.
        manifest: ``synthetic.json``.
    """

    root: Path
    ptbxl: Path
    mimic_ecg: Path
    mimic_cxr: Path
    mimic_cxr_jpg: Path
    chexpert: Path
    edema: Path
    corrupt: Path | None
    manifest: Path

    @classmethod
    def at(cls, root: str | Path, with_corrupt: bool) -> SyntheticLayout:
        """The layout of a dataset rooted at ``root`` (no file access)."""
        r = Path(root)
        return cls(
            root=r,
            ptbxl=r / "ptb-xl",
            mimic_ecg=r / "mimic-iv-ecg",
            mimic_cxr=r / "mimic-cxr",
            mimic_cxr_jpg=r / "mimic-cxr-jpg",
            chexpert=r / "chexpert" / "CheXpert-v1.0-small",
            edema=r / "mimic-cxr-pe-severity",
            corrupt=r / "corrupt" if with_corrupt else None,
            manifest=r / MANIFEST_NAME,
        )


def load_manifest(out: str | Path) -> dict[str, Any] | None:
    """The manifest of a generated dataset, or None when ``out`` holds none."""
    path = Path(out) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _truth_rows(patients: list[Any]) -> tuple[list[str], list[list[object]]]:
    from datamodules.synthetic.population import ECG_ORDER, XRAY_LABELS

    header = ["subject_id", "profile", "sex", "age", "split", "special", "mi_territory"]
    header += [f"ecg_{c}" for c in ECG_ORDER] + [f"xray_{x}" for x in XRAY_LABELS]
    header += ["edema_grade", "devices"]
    rows: list[list[object]] = []
    for p in patients:
        row = p.cxr.row()
        rows.append(
            [p.subject_id, p.profile, p.sex, p.age, p.split, p.special, p.mi_territory]
            + [1 if c in p.ecg_conditions else 0 for c in ECG_ORDER]
            + [row[x] for x in XRAY_LABELS]
            + [p.cxr.edema_grade, ";".join(p.cxr.devices)]
        )
    return header, rows


def _prepare_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and load_manifest(out) is None:
        raise FileExistsError(
            f"{out}: folder is not empty and holds no {MANIFEST_NAME}; refusing to overwrite it"
        )


def generate(
    out: str | Path,
    n: int = 200,
    seed: int = 0,
    with_corrupt: bool = False,
    *,
    image_size: int = 256,
    progress: bool = True,
) -> SyntheticLayout:
    """Write a synthetic multi-dataset tree under ``out``.

    Args:
        out: target folder; must be absent, empty, or a previous synthetic dataset (replaced).
        n: number of synthetic patients (each has one CXR study with a paired ECG; ~10% have a
            follow-up study; PTB-XL and CheXpert draw from the same patients).
        seed: random seed; the same (n, seed, image_size) always gives identical files.
        with_corrupt: also write ``corrupt/`` with broken files for error-path tests.
        image_size: image height in pixels (width follows the view's aspect ratio).
        progress: show a tqdm progress bar.

    Returns:
        The :class:`SyntheticLayout` of ``out``.

    Raises:
        ValueError: bad ``n`` / ``image_size``.
        FileExistsError: ``out`` is a non-empty folder that is not a synthetic dataset.
    """
    from datamodules.synthetic._io import write_csv, write_text
    from datamodules.synthetic.chexpert import write_chexpert
    from datamodules.synthetic.corrupt import write_corrupt
    from datamodules.synthetic.edema import write_edema
    from datamodules.synthetic.mimic_cxr import write_mimic_cxr
    from datamodules.synthetic.mimic_ecg import write_mimic_ecg
    from datamodules.synthetic.plan import build_plan
    from datamodules.synthetic.population import sample_population
    from datamodules.synthetic.ptbxl import write_ptbxl

    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 32 <= int(image_size) <= 4096:
        raise ValueError(f"image_size must be in [32, 4096], got {image_size}")
    out = Path(out).expanduser().resolve()
    _prepare_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    patients = sample_population(int(n), int(seed))
    plan = build_plan(patients, int(seed), int(image_size))
    n_cxr_images = sum(len(s.images) for s in plan.cxr_studies)
    n_chexpert = sum(len(s.images) for s in plan.chexpert_studies)
    total = len(plan.ptbxl_records) + len(plan.ecg_records) + n_cxr_images + n_chexpert
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    stage.chmod(0o755)
    try:
        layout = SyntheticLayout.at(stage, with_corrupt)
        with tqdm(
            total=total, desc="synthetic data", unit="file", disable=not progress, leave=False
        ) as bar:
            write_ptbxl(layout.ptbxl, patients, plan.ptbxl_records, seed, bar.update)
            write_mimic_ecg(layout.mimic_ecg, patients, plan.ecg_records, seed, bar.update)
            write_mimic_cxr(
                layout.mimic_cxr, layout.mimic_cxr_jpg, patients, plan.cxr_studies, seed, bar.update
            )
            write_chexpert(
                layout.chexpert.parent, patients, plan.chexpert_studies, seed, bar.update
            )
        write_edema(layout.edema, patients, plan.cxr_studies, seed)
        if layout.corrupt is not None:
            write_corrupt(layout.corrupt, seed)
        header, rows = _truth_rows(patients)
        write_csv(stage / "synthetic_truth.csv", header, rows)
        manifest = {
            "notice": NOTICE,
            "generator": "datamodules.synthetic",
            "version": GENERATOR_VERSION,
            "seed": int(seed),
            "n": int(n),
            "image_size": int(image_size),
            "with_corrupt": bool(with_corrupt),
            "counts": {
                "patients": len(patients),
                "mimic_cxr_studies": len(plan.cxr_studies),
                "mimic_cxr_images": n_cxr_images,
                "mimic_ecg_records": len(plan.ecg_records),
                "ptbxl_records": len(plan.ptbxl_records),
                "chexpert_images": n_chexpert,
            },
            "layout": {
                "ptbxl": "ptb-xl",
                "mimic_ecg": "mimic-iv-ecg",
                "mimic_cxr": "mimic-cxr",
                "mimic_cxr_jpg": "mimic-cxr-jpg",
                "chexpert": "chexpert/CheXpert-v1.0-small",
                "edema": "mimic-cxr-pe-severity",
                "corrupt": "corrupt" if with_corrupt else None,
            },
        }
        write_text(stage / MANIFEST_NAME, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        write_text(
            stage / "README.txt",
            f"{NOTICE}.\nWritten by `medclip synth` (seed {seed}, n {n}); see synthetic.json.\n",
        )
        _swap_into_place(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    logger.info(
        "wrote synthetic data (%d patients) to %s in %.1f s",
        len(patients),
        out,
        time.perf_counter() - started,
    )
    return SyntheticLayout.at(out, with_corrupt)


def _swap_into_place(stage: Path, out: Path) -> None:
    """Move the finished ``stage`` folder to ``out`` (replacing an old synthetic dataset)."""
    _prepare_target(out)  # re-check: something may have appeared meanwhile
    old: Path | None = None
    if out.exists():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}"
            os.replace(out, old)
        else:
            out.rmdir()
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
