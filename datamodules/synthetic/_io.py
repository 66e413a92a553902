"""Deterministic file writers shared by the synthetic dataset writers.

* :func:`write_wfdb`: byte-identical to ``wfdb.wrsamp`` for format-16 records (checked by the
  tests) but without its per-field pandas overhead (~30 ms per record), which would dominate
  the generation time.
* :func:`write_csv`: ``csv`` module, minimal quoting, ``\\n`` line ends, optional gzip with a
  zero timestamp and no embedded file name (so the same seed gives the same bytes).
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["cell", "write_csv", "write_text", "write_wfdb"]

#: Digital value WFDB format 16 uses for a missing (NaN) sample.
WFDB_NAN_16 = -32768


def write_wfdb(
    stem: Path,
    signal_mv: np.ndarray,
    sig_names: Sequence[str],
    *,
    fs_hz: int,
    gain: float,
    base_datetime: dt.datetime | None = None,
    comments: Sequence[str] = (),
) -> None:
    """Write ``<stem>.hea`` + ``<stem>.dat`` (format 16, baseline 0, units mV).

    Args:
        stem: record path without extension; the record name is ``stem.name``.
        signal_mv: ``(T, n_sig)`` physical signal in mV; NaN becomes the invalid value -32768.
        sig_names: one name per column.
        fs_hz: sampling frequency (integer Hz).
        gain: ADC units per mV (1000 PTB-XL, 200 MIMIC-IV-ECG).
        base_datetime: optional base time/date written on the record line.
        comments: comment lines (written as ``# <text>``).
    """
    sig = np.asarray(signal_mv, dtype=np.float64)
    if sig.ndim != 2 or sig.shape[1] != len(sig_names):
        raise ValueError(f"signal must be (T, {len(sig_names)}), got {sig.shape}")
    nan = np.isnan(sig)
    digital = np.round(np.where(nan, 0.0, sig) * float(gain))
    digital = np.clip(digital, -32767, 32767).astype(np.int64)
    digital[nan] = WFDB_NAN_16
    checksum = digital.sum(axis=0) % 65536
    name = stem.name
    record_line = f"{name} {len(sig_names)} {int(fs_hz)} {sig.shape[0]}"
    if base_datetime is not None:
        record_line += f" {base_datetime:%H:%M:%S} {base_datetime:%d/%m/%Y}"
    lines = [record_line]
    for k, lead in enumerate(sig_names):
        lines.append(
            f"{name}.dat 16 {float(gain)!r}(0)/mV 16 0 {int(digital[0, k])} "
            f"{int(checksum[k])} 0 {lead}"
        )
    lines += [f"# {c}" for c in comments]
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".dat").write_bytes(digital.astype("<i2").tobytes())
    stem.with_suffix(".hea").write_text("\n".join(lines) + "\n", encoding="utf-8")


def cell(value: object) -> str:
    """CSV text of one value: None/NaN -> blank, floats with at least one decimal (``15.0``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        if np.isnan(value):
            return ""
        return repr(value)
    return str(value)


def write_csv(
    path: Path,
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    gz: bool = False,
) -> None:
    """Write a CSV (values through :func:`cell`); gzip when ``gz``, deterministically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(list(header))
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"{path.name}: row has {len(row)} values, header {len(header)}")
        writer.writerow([cell(v) for v in row])
    data = buf.getvalue().encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with (
            path.open("wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f,
        ):
            f.write(data)
    else:
        path.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
