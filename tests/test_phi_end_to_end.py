"""Patient identifiers in DICOM headers reach none of medclip's outputs, end to end.

A small synthetic dataset whose DICOM chest X-rays all carry the same distinctive fake
identifiers (name, id, birth and study dates, institution, accession number, physicians), plus a
DICOM ECG (pydicom's ``waveform_ecg.dcm``) carrying them too, go through one pipeline with
logging at DEBUG: ``medclip inspect``, ``medclip cache build``, ``medclip fit`` (one step),
``medclip export``, ``medclip index build`` (with previews) and ``index info``,
``medclip zeroshot`` and ``medclip retrieve`` on the DICOMs, and the demo's handlers (upload
analysis and text search).
Then every produced file (bytes, case-insensitively, with gzip / zip / PNG text chunks / parquet
opened), every printed line, log record and warning, and every string the demo would display
are searched for each identifier.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

#: Fake identifiers planted in every DICOM (keyword -> value).
IDENTIFIERS: dict[str, str] = {
    "PatientName": "Zzphi^Testperson",
    "PatientID": "PHI-998877",
    "PatientBirthDate": "19330712",
    "StudyDate": "20770309",
    "SeriesDate": "20770309",
    "AcquisitionDate": "20770309",
    "ContentDate": "20770309",
    "InstitutionName": "Phi Test Hospital",
    "InstitutionAddress": "12 Zzphi Road, Phitown",
    "AccessionNumber": "ACCPHI4455",
    "ReferringPhysicianName": "Drzzphi^Referrer",
    "OperatorsName": "Techzzphi^Operator",
    "OtherPatientIDs": "PHIALT-665544",
}
#: What must never appear (lower case; matched case-insensitively), dates also as ISO / US text.
NEEDLES: tuple[str, ...] = (
    "zzphi",
    "testperson",
    "phi-998877",
    "998877",
    "19330712",
    "1933-07-12",
    "07/12/1933",
    "20770309",
    "2077-03-09",
    "03/09/2077",
    "phi test hospital",
    "phitown",
    "accphi4455",
    "phialt-665544",
    "665544",
)
TINY_SET = [
    "model.xray.kwargs={img_size: 32, patch_size: 8}",
    "model.ecg.kwargs={width: 8, layers: [1, 1, 1, 1], length: 250}",
    "model.text.kwargs={tiny_layers: 1, max_length: 32}",
    "data.image_size=32",
    "data.ecg_length=250",
    "data.batch_size=4",
    "trainer.max_steps=1",
    "trainer.val_check_interval=0",
    "trainer.accelerator=cpu",
]


def plant_identifiers(path: Path) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in IDENTIFIERS.items():
        setattr(ds, keyword, value)
    ds.save_as(path)
    raw = path.read_bytes()
    assert b"Zzphi^Testperson" in raw and b"PHI-998877" in raw  # really in the file


def texts_of(path: Path) -> list[bytes]:
    """The file's bytes plus what compression or containers hide from a byte search: gzip,
    zip members (``.npz``, torch checkpoints), PNG text chunks, parquet tables."""
    raw = path.read_bytes()
    out = [raw]
    name = path.name.lower()
    if name.endswith(".gz"):
        out.append(gzip.decompress(raw))
    if zipfile.is_zipfile(path):  # .npz, torch checkpoints, zips
        with zipfile.ZipFile(path) as zf:
            out.extend(zf.read(info) for info in zf.infolist())
    if raw.startswith(b"\x89PNG"):  # text chunks, zTXt / iTXt decompressed
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            out.append(repr((im.info, getattr(im, "text", {}))).encode())
    if name.endswith(".parquet"):
        import pandas as pd

        out.append(pd.read_parquet(path).to_csv().encode())
    return out


def leaks_in_files(root: Path) -> list[str]:
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        for blob in texts_of(path):
            lower = blob.lower()
            found += [f"{path}: {n!r}" for n in NEEDLES if n.encode() in lower]
    return found


def leaks_in_text(where: str, text: str) -> list[str]:
    lower = text.lower()
    return [
        f"{where}: {n!r} in ...{lower[max(0, lower.find(n) - 80) :][:200]}"
        for n in NEEDLES
        if n in lower
    ]


def shown_strings(obj: Any) -> str:
    """Every string a demo result would display (images skipped)."""
    if isinstance(obj, np.ndarray):
        return ""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return "\n".join(shown_strings(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    if isinstance(obj, dict):
        return "\n".join(f"{shown_strings(k)}={shown_strings(v)}" for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return "\n".join(shown_strings(v) for v in obj)
    return str(obj)


def test_dicom_identifiers_reach_no_output(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from datamodules.synthetic import generate
    from medclip.cli import main

    data = tmp_path / "data"
    generate(data, n=8, seed=0, image_size=32, progress=False)
    dicoms = sorted((data / "mimic-cxr").rglob("*.dcm"))
    assert dicoms
    for path in dicoms:
        plant_identifiers(path)
    uploads = tmp_path / "uploads"  # neutral file names: the headers carry the identifiers
    uploads.mkdir()
    cxr_upload = Path(shutil.copy(dicoms[0], uploads / "chest.dcm"))
    ecg_upload = uploads / "ecg.dcm"
    ecg_source = get_testdata_file("waveform_ecg.dcm")
    assert isinstance(ecg_source, str)
    shutil.copy(ecg_source, ecg_upload)
    plant_identifiers(ecg_upload)

    out = tmp_path / "out"  # everything medclip writes goes below here
    run, bundle, index = out / "run", out / "bundle", out / "index"
    capfd.readouterr()
    caplog.set_level(logging.DEBUG)
    for name in ("datamodules", "medclip", "apps", "pydicom", "lightning", "PIL"):
        caplog.set_level(logging.DEBUG, logger=name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for upload in (cxr_upload, ecg_upload):
            assert main(["-vv", "inspect", str(upload)]) == 0
        cache_args = ["-vv", "cache", "build", "--dataset", "synthetic", "--root", str(data)]
        cache_args += ["--config", "tiny", "--out", str(out / "cache"), "--no-progress"]
        assert main([*cache_args, *(a for s in TINY_SET for a in ("--set", s))]) == 0
        fit_args = ["-vv", "fit", "--config", "tiny", "--out", str(run), "--data-root", str(data)]
        fit_args += [a for s in TINY_SET for a in ("--set", s)] + ["--no-progress"]
        assert main(fit_args) == 0
        assert main(["-vv", "export", str(run / "checkpoints" / "last.ckpt"), str(bundle)]) == 0
        index_args = ["-vv", "index", "build", "--bundle", str(bundle), "--data", str(data)]
        index_args += ["--out", str(index), "--previews", "--no-progress", "--batch-size", "8"]
        assert main(index_args) == 0
        assert main(["-vv", "index", "info", str(index)]) == 0
        zs_args = ["-vv", "zeroshot", str(cxr_upload), str(ecg_upload), "--bundle", str(bundle)]
        assert main([*zs_args, "--json"]) == 0
        for query in (cxr_upload, ecg_upload):
            retrieve = ["-vv", "retrieve", "--bundle", str(bundle), "--index", str(index)]
            assert main([*retrieve, "--query", str(query), "--json"]) == 0

        from apps.handlers import analyze_upload, load_resources, search_text

        res = load_resources(bundle, index_dir=index)
        analysis = analyze_upload(res, str(cxr_upload), [str(ecg_upload)])
        search = search_text(res, "cardiomegaly and atrial fibrillation")
    printed = capfd.readouterr()

    assert analysis.ok, analysis.error
    assert analysis.xray_info and analysis.ecg_info and analysis.similar
    assert search.similar and not search.error
    assert (index / "index.json").is_file() and list(out.rglob("*.png"))  # previews drawn
    assert (bundle / "model.safetensors").is_file() and list(run.rglob("metrics.csv"))
    assert list((out / "cache").rglob("table.csv"))
    log_text = "\n".join(
        [caplog.text, *(r.getMessage() for r in caplog.records), *(str(w.message) for w in caught)]
    )
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) > 10  # DEBUG was captured
    leaks = leaks_in_files(out)
    leaks += leaks_in_text("stdout", printed.out) + leaks_in_text("stderr", printed.err)
    leaks += leaks_in_text("logs and warnings", log_text)
    leaks += leaks_in_text("demo analysis", shown_strings(analysis))
    leaks += leaks_in_text("demo search", shown_strings(search))
    leaks += leaks_in_text("demo notice", res.notice)
    assert not leaks, "identifiers leaked:\n" + "\n".join(leaks[:30])
    # the searches do find identifiers where they are: in the input files
    assert len(leaks_in_text("input", ecg_upload.read_bytes().decode("latin-1"))) >= 8
    assert len(leaks_in_files(uploads)) >= 2 * 8
