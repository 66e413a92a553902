"""Coverage-guided fuzzing of the data layer with atheris (libFuzzer), optional.

Not collected by pytest (no ``test_`` prefix); ``test_fuzz_*.py`` run it briefly when atheris is
installed (``pip install -e .[fuzz]``). Usage::

    python tests/datamodules/fuzz_atheris.py TARGET [libFuzzer flags]
    python tests/datamodules/fuzz_atheris.py dicom -max_total_time=600 -artifact_prefix=crashes/

Targets: ``wfdb`` (header text + signal bytes of one record), ``dicom`` (a file handed to
``read_cxr`` and ``read_ecg``, seeded with pydicom's test files), ``report`` (text to the CXR
report parser), ``csv`` (bytes as ``ptbxl_database.csv``). Any exception other than
:class:`~datamodules.errors.MedclipDataError` is a crash: libFuzzer stops and writes the input
to ``crash-<sha1>``. Reproduce with ``python tests/datamodules/fuzz_atheris.py TARGET crash-...``.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["datamodules", "pydicom", "wfdb"]):
    import pydicom  # noqa: F401  (instrumented: coverage feedback inside the DICOM parser)
    import wfdb  # noqa: F401

    from datamodules.cxr_io import read_cxr
    from datamodules.ecg_io import read_ecg
    from datamodules.errors import MedclipDataError
    from datamodules.ptbxl import load_ptbxl
    from datamodules.reports import cxr_report_text, parse_cxr_sections

import numpy as np

WORK = Path(tempfile.mkdtemp(prefix="medclip_atheris_"))
#: ``wfdb`` target input: header bytes, SEPARATOR, signal-file bytes.
SEPARATOR = b"\n--signal--\n"

_STATEMENTS = (
    ",description,diagnostic,form,rhythm,diagnostic_class,diagnostic_subclass\n"
    "NORM,normal ECG,1.0,,,NORM,NORM\nSR,sinus rhythm,,,1.0,,\n"
)


def _expected(call: Callable[[], object]) -> None:
    with contextlib.suppress(MedclipDataError):
        call()


def fuzz_wfdb(data: bytes) -> None:
    header, _, signal = data.partition(SEPARATOR)
    (WORK / "rec.hea").write_bytes(header)
    (WORK / "rec.dat").write_bytes(signal)
    _expected(lambda: read_ecg(WORK / "rec"))


def fuzz_dicom(data: bytes) -> None:
    path = WORK / "x.dcm"
    path.write_bytes(data)
    _expected(lambda: read_cxr(path))
    _expected(lambda: read_ecg(path))


def fuzz_report(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))
    parse_cxr_sections(text)
    out = cxr_report_text(text)
    assert out is None or (out == out.strip() and "___" not in out)


def fuzz_csv(data: bytes) -> None:
    (WORK / "ptbxl_database.csv").write_bytes(data)
    (WORK / "scp_statements.csv").write_text(_STATEMENTS)
    _expected(lambda: load_ptbxl(WORK))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "wfdb": fuzz_wfdb,
    "dicom": fuzz_dicom,
    "report": fuzz_report,
    "csv": fuzz_csv,
}


def _seed_corpus(target: str) -> Path:
    """A folder of valid inputs for ``target`` (libFuzzer mutates from these)."""
    corpus = WORK / f"corpus_{target}"
    corpus.mkdir(exist_ok=True)
    if target == "dicom":
        from pydicom.data import get_testdata_file

        for name in ("CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_small_odd.dcm"):
            shutil.copyfile(str(get_testdata_file(name)), corpus / name)
        ecg = Path(str(get_testdata_file("waveform_ecg.dcm"))).read_bytes()
        (corpus / "ecg_head.dcm").write_bytes(ecg[:4000])
    elif target == "wfdb":
        raw = np.arange(600, dtype="<i2").tobytes()  # 50 frames x 12 leads
        leads = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
        lines = ["rec 12 500 50", *(f"rec.dat 16 1000/mV 16 0 0 0 0 {n}" for n in leads)]
        header = ("\n".join(lines) + "\n").encode()
        (corpus / "rec").write_bytes(header + SEPARATOR + raw)
    elif target == "report":
        (corpus / "r.txt").write_text("FINAL REPORT\n FINDINGS: clear.\n IMPRESSION: ___ ok.\n")
    elif target == "csv":
        (corpus / "db.csv").write_text(
            "ecg_id,patient_id,report,scp_codes,strat_fold,filename_lr,filename_hr\n"
            "1,15709.0,ok,\"{'NORM': 100.0}\",3,records100/00000/00001_lr,records500/x\n"
        )
    return corpus


def main(argv: list[str]) -> None:
    """``argv``: [script, TARGET, libFuzzer flags or crash files...]."""
    if len(argv) < 2 or argv[1] not in TARGETS:
        raise SystemExit(f"usage: {argv[0]} {{{','.join(TARGETS)}}} [libFuzzer flags]")
    target = argv[1]
    rest = argv[2:]
    if not any(not a.startswith("-") for a in rest):  # no corpus / crash file given
        rest.append(str(_seed_corpus(target)))
    atheris.Setup([argv[0], *rest], TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
