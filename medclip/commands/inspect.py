"""``medclip inspect FILE...``: one JSON line per ECG / X-ray file (shape, fs, leads, range)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``inspect`` sub-command."""
    p = sub.add_parser(
        "inspect",
        help="describe ECG / chest X-ray files as JSON lines",
        description="Read each file with medclip's readers and print one JSON line: modality, "
        "shape, sampling rate, lead names and missing-lead mask, units, pixel range, photometric "
        "interpretation and PHI-free metadata. An unreadable file prints "
        '{"file": ..., "error": ...} and the others are still inspected; the exit code is 1 '
        "when any file failed.",
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="WFDB record (stem, .hea, .dat, .mat), DICOM (.dcm), PNG or JPEG",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Inspect every file; return 1 when any of them could not be read, else 0."""
    from datamodules.errors import MedclipDataError
    from datamodules.inspect import inspect_file

    failed = 0
    for name in args.files:
        try:
            line = inspect_file(name)
        except MedclipDataError as exc:
            line = {"file": name, "error": exc.problem, "error_type": type(exc).__name__}
            failed += 1
        except OSError as exc:
            line = {"file": name, "error": str(exc), "error_type": type(exc).__name__}
            failed += 1
        print(json.dumps(line, ensure_ascii=False), flush=True)
    return 1 if failed else 0
