"""Fuzz ``read_ecg`` / ``inspect_file`` with mutated WFDB records (hypothesis).

Seeds are valid records written in a temporary folder: 12-lead format 16 (the fast path), format
212 (the ``wfdb.rdrecord`` path) and a PhysioNet/CinC-style MATLAB v4 ``.mat`` (format
``16x1+24``). Each example mutates header fields/lines and truncates, flips or overwrites bytes of
the signal file. Property: the reader either returns an :class:`Ecg` that satisfies the contract
(and preprocesses to a finite ``(12, length)`` array) or raises :class:`EcgReadError`; nothing
else escapes.

``MEDCLIP_FUZZ_EXAMPLES=N`` runs ``N`` random (not derandomised) examples per target instead of
the default; see docs/fuzzing.md.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import wfdb
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from datamodules.ecg_io import MAX_FS_HZ, MIN_FS_HZ, read_ecg
from datamodules.errors import EcgReadError, MedclipDataError
from datamodules.inspect import inspect_file
from datamodules.transforms import EcgTransformConfig, preprocess_ecg
from datamodules.types import CANONICAL_LEADS, Ecg

#: Examples per target in a normal run (the whole fuzz suite stays well under a minute).
DEFAULT_EXAMPLES = 200


def fuzz_settings(default: int = DEFAULT_EXAMPLES) -> settings:
    """Hypothesis settings: ``default`` derandomised examples, or ``$MEDCLIP_FUZZ_EXAMPLES``
    random ones (failures then land in the local ``.hypothesis`` database for replay)."""
    scaled = int(os.environ.get("MEDCLIP_FUZZ_EXAMPLES", "0") or 0)
    return settings(
        max_examples=scaled if scaled > 0 else default,
        derandomize=scaled <= 0,
        database=settings().database if scaled > 0 else None,
        deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


N_SAMPLES = 250
FS = 500
_CFG = EcgTransformConfig(fs_hz=100.0, length=64)


# ---------------------------------------------------------------------------------------------
# Seeds


def _signal(n: int = N_SAMPLES) -> np.ndarray:
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(0, 0.02, size=(n, 12)), axis=0)
    return walk - walk[0]  # every lead starts at exactly 0 (a raw code a bad gain cannot scale)


def _write_wfdb(folder: Path, name: str, fmt: str) -> None:
    wfdb.wrsamp(
        name,
        fs=FS,
        sig_name=list(CANONICAL_LEADS),
        p_signal=_signal(),
        units=["mV"] * 12,
        fmt=[fmt] * 12,
        adc_gain=[1000.0] * 12,
        baseline=[0] * 12,
        write_dir=str(folder),
    )


def _write_cinc_mat(folder: Path, name: str) -> None:
    """A CinC-2021-style record: MATLAB v4 ``val`` int16 (12, T) after a 24-byte header."""
    raw = np.round(_signal() * 1000).astype("<i2")  # (T, 12): column-major (12, T) = frames
    mat_header = struct.pack("<5i", 30, 12, N_SAMPLES, 0, 4) + b"val\0"
    (folder / f"{name}.mat").write_bytes(mat_header + raw.tobytes())
    sums = raw.sum(axis=0, dtype=np.int64) % 65536
    lines = [f"{name} 12 {FS} {N_SAMPLES}"]
    for k, lead in enumerate(CANONICAL_LEADS):
        s = int(sums[k]) - 65536 if sums[k] >= 32768 else int(sums[k])
        lines.append(f"{name}.mat 16x1+24 1000/mV 16 0 {int(raw[0, k])} {s} 0 {lead}")
    lines.append("# Age: 50")
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")


@dataclass(frozen=True)
class Seed:
    """A valid record: stem name and its signal file name."""

    name: str
    signal_file: str


SEEDS: tuple[Seed, ...] = (
    Seed("r16", "r16.dat"),
    Seed("r212", "r212.dat"),
    Seed("cinc", "cinc.mat"),
)


@pytest.fixture(scope="module")
def seed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wfdb_seeds")
    _write_wfdb(folder, "r16", "16")
    _write_wfdb(folder, "r212", "212")
    _write_cinc_mat(folder, "cinc")
    for seed in SEEDS:  # the seeds themselves must read cleanly
        ecg = read_ecg(folder / seed.name)
        assert ecg.lead_mask.all() and ecg.signal.shape == (12, N_SAMPLES)
    return folder


# ---------------------------------------------------------------------------------------------
# Mutations

#: Header tokens that are valid somewhere, nearly valid, or hostile.
_TOKENS: tuple[str, ...] = (
    "0",
    "1",
    "-1",
    "12",
    "13",
    "500",
    "1e9",
    "99999999999999999999",
    "nan",
    "inf",
    "-inf",
    "500/0",
    "500/250",
    "250(0)",
    "x",
    "",
    "16",
    "212",
    "8",
    "80",
    "24",
    "32",
    "61",
    "160",
    "310",
    "311",
    "508",
    "16x2",
    "16x0",
    "16:5",
    "16+99999",
    "16+-4",
    "0/mV",
    "-1000/mV",
    "1e-40/mV",
    "1e308/mV",
    "nan/mV",
    "1000(5)/uV",
    "1000/V",
    "1000/mmHg",
    "1000/NU",
    "1000",
    "1000(0)",
    "-aVR",
    "AVL",
    "V7",
    "Lead II",
    "MDC_ECG_LEAD_V1",
    "5.6.3-9-64",
    "~",
    "-",
    "r16/2",
    "r16.dat",
    "cinc.mat",
    "r212.dat",
    "../r16.dat",
    "missing.dat",
    "é",
)
_token = st.one_of(
    st.sampled_from(_TOKENS),
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(st.characters(min_codepoint=32, max_codepoint=0x17F), max_size=10),
)

# One header edit: (kind, line index, field index, token); indices are taken modulo the sizes.
_header_edit = st.tuples(
    st.sampled_from(["field", "field", "field", "drop", "dup", "insert", "swap", "cut"]),
    st.integers(0, 20),
    st.integers(0, 9),
    _token,
)
# One signal-file edit: (kind, position fraction, length, payload).
_signal_edit = st.tuples(
    st.sampled_from(["flip", "flip", "overwrite", "overwrite", "truncate", "append", "replace"])
    | st.just("delete"),
    st.floats(0.0, 1.0),
    st.integers(1, 64),
    st.binary(min_size=1, max_size=64),
)


def mutate_header(text: str, edits: list[tuple[str, int, int, str]]) -> str:
    """Apply header edits; a field index past the end appends a field."""
    lines = text.splitlines()
    for kind, li, fi, token in edits:
        if not lines:
            lines = [token]
            continue
        i = li % len(lines)
        if kind == "field":
            parts = lines[i].split()
            j = fi % (len(parts) + 1)
            if j == len(parts):
                parts.append(token)
            else:
                parts[j] = token
            lines[i] = " ".join(parts)
        elif kind == "drop":
            del lines[i]
        elif kind == "dup":
            lines.insert(i, lines[i])
        elif kind == "insert":
            lines.insert(i, token)
        elif kind == "swap":
            j = fi % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "cut":
            lines[i] = lines[i][: fi * len(lines[i]) // 10]
    return "\n".join(lines) + "\n"


def mutate_bytes(data: bytes, edits: list[tuple[str, float, int, bytes]]) -> bytes | None:
    """Apply byte edits; None means "delete the file"."""
    buf = bytearray(data)
    for kind, frac, length, payload in edits:
        pos = int(frac * len(buf))
        if kind == "truncate":
            del buf[pos:]
        elif kind == "flip" and buf:
            pos = min(pos, len(buf) - 1)
            buf[pos] ^= 1 << (length % 8)
        elif kind == "overwrite":
            buf[pos : pos + len(payload)] = payload
        elif kind == "append":
            buf += payload
        elif kind == "replace":
            buf = bytearray(payload)
        elif kind == "delete":
            return None
    return bytes(buf)


# ---------------------------------------------------------------------------------------------
# Contract


def check_ecg(ecg: Ecg) -> None:
    """The :class:`Ecg` contract of DESIGN.md §3, plus a finite preprocessed array."""
    sig = ecg.signal
    assert isinstance(sig, np.ndarray) and sig.dtype == np.float32
    assert sig.ndim == 2 and sig.shape[0] == 12 and sig.shape[1] >= 1
    mask = ecg.lead_mask
    assert isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == (12,)
    assert mask.any()
    assert tuple(ecg.leads) == CANONICAL_LEADS
    assert np.isfinite(ecg.fs) and MIN_FS_HZ <= ecg.fs <= MAX_FS_HZ
    assert np.isnan(sig[~mask]).all(), "masked leads must be all-NaN"
    assert np.isfinite(sig[mask]).any(axis=1).all(), "present leads need a valid sample"
    assert not np.isinf(sig).any(), "amplitudes must be finite or NaN (gap)"
    json.dumps(ecg.meta, allow_nan=True)  # meta is plain data
    out = preprocess_ecg(ecg, _CFG)
    assert out.dtype == np.float32 and out.shape == (12, _CFG.length)
    assert np.isfinite(out).all()


def read_or_documented_error(path: Path) -> Ecg | None:
    """Read; an EcgReadError (naming a file) is fine, anything else fails the test."""
    try:
        ecg = read_ecg(path)
    except EcgReadError as exc:
        assert exc.path and exc.problem, exc
        assert exc.__cause__ is None or isinstance(exc.__cause__, MedclipDataError)
        event(f"EcgReadError: {exc.problem.split('(')[0][:40]}")
        return None
    check_ecg(ecg)
    event("read ok" if ecg.lead_mask.all() else "read ok, leads masked")
    return ecg


def _materialise(seed_dir: Path, dest: Path, seed: Seed) -> tuple[Path, Path]:
    for p in seed_dir.glob(f"{seed.name}.*"):
        shutil.copyfile(p, dest / p.name)
    return dest / f"{seed.name}.hea", dest / seed.signal_file


def _target(dest: Path, seed: Seed, which: int) -> Path:
    return [dest / seed.name, dest / f"{seed.name}.hea", dest / seed.signal_file][which % 3]


# ---------------------------------------------------------------------------------------------
# Targets


@fuzz_settings()
@given(
    seed=st.sampled_from(SEEDS),
    header_edits=st.lists(_header_edit, max_size=4),
    signal_edits=st.lists(_signal_edit, max_size=3),
    which=st.integers(0, 2),
)
@example(seed=SEEDS[0], header_edits=[("field", 1, 2, "1e-40/mV")], signal_edits=[], which=0)
@example(seed=SEEDS[2], header_edits=[("field", 0, 2, "1e9")], signal_edits=[], which=1)
@example(seed=SEEDS[1], header_edits=[("field", 0, 3, "0")], signal_edits=[], which=0)
@example(
    seed=SEEDS[1],
    header_edits=[("field", 0, 0, "r212/2"), ("insert", 1, 0, "r212 100")],
    signal_edits=[],
    which=0,
)
def test_mutated_wfdb_record(
    seed_dir: Path,
    seed: Seed,
    header_edits: list[tuple[str, int, int, str]],
    signal_edits: list[tuple[str, float, int, bytes]],
    which: int,
) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzzwfdb") as tmp:
        dest = Path(tmp)
        hea, sig = _materialise(seed_dir, dest, seed)
        hea.write_text(mutate_header(hea.read_text(), header_edits), encoding="utf-8")
        data = mutate_bytes(sig.read_bytes(), signal_edits)
        if data is None:
            sig.unlink()
        else:
            sig.write_bytes(data)
        read_or_documented_error(_target(dest, seed, which))


def _field(common: list[str]) -> st.SearchStrategy[str]:
    """A plausible value (hostile tokens come from the header edits applied afterwards)."""
    return st.sampled_from(common)


_signal_line = st.tuples(
    st.sampled_from(["r16.dat", "r212.dat", "cinc.mat", "missing.dat"]),
    _field(["16", "212", "16x1+24", "61", "80", "8", "24", "32", "160", "310", "16+24"]),
    _field(["1000/mV", "1000(0)/mV", "200/uV", "1000", "0.5/V", "1000/NU", "1000(-3)/mv"]),
    _field(["16", "12"]),
    _field(["0", "-5"]),
    st.sampled_from([*CANONICAL_LEADS, "AVR", "-aVR", "V7", "Pleth"]),
).map(lambda f: f"{f[0]} {f[1]} {f[2]} {f[3]} {f[4]} 0 0 0 {f[5]}")


@st.composite
def _header_text(draw: st.DrawFn) -> str:
    """A record line, ``n`` signal lines (usually as many as declared) and comments."""
    lines = draw(st.lists(_signal_line, min_size=1, max_size=14))
    if draw(st.booleans()):  # usually one signal file, as in real records
        stem = draw(st.sampled_from(SEEDS))
        lines = [f"{stem.signal_file} {ln.split(' ', 1)[1]}" for ln in lines]
    n_sig = draw(st.sampled_from([str(len(lines))] * 4 + ["0", "12", "-1"]))
    rec = " ".join(
        [
            draw(st.sampled_from(["r16", "r212", "cinc", "r16/2"])),
            n_sig,
            draw(_field(["500", "100", "500/1", "250"])),
            draw(_field(["250", "", "125", "100"])),
        ]
    )
    comments = draw(st.lists(st.sampled_from(["# Age: 50", "#", "", "x"]), max_size=2))
    text = "\n".join([rec, *lines, *comments]) + "\n"
    return mutate_header(text, draw(st.lists(_header_edit, max_size=2)))


@fuzz_settings(default=150)
@given(seed=st.sampled_from(SEEDS), header=_header_text(), which=st.integers(0, 2))
@example(seed=SEEDS[0], header="r16 1 500\nr16.dat 16 0 16 0 0 0 0 I\n", which=0)
def test_generated_header(seed_dir: Path, seed: Seed, header: str, which: int) -> None:
    """Headers assembled from (mostly) well-formed lines with hostile field values."""
    with tempfile.TemporaryDirectory(prefix="fuzzwfdb") as tmp:
        dest = Path(tmp)
        hea, _ = _materialise(seed_dir, dest, seed)
        for other in SEEDS:  # every seed's signal file is available to the header
            _materialise(seed_dir, dest, other)
        hea.write_text(header, encoding="utf-8")
        read_or_documented_error(_target(dest, seed, which))


@fuzz_settings(default=50)
@given(seed=st.sampled_from(SEEDS), header=st.binary(max_size=400), which=st.integers(0, 2))
@example(seed=SEEDS[0], header=b"r16 12 500 250\n", which=0)
@example(seed=SEEDS[0], header=b"\xff\xfe\x00r16 12 500 250\n", which=0)
def test_arbitrary_header_bytes(seed_dir: Path, seed: Seed, header: bytes, which: int) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzzwfdb") as tmp:
        dest = Path(tmp)
        hea, _ = _materialise(seed_dir, dest, seed)
        hea.write_bytes(header)
        read_or_documented_error(_target(dest, seed, which))


@fuzz_settings(default=50)
@given(
    seed=st.sampled_from(SEEDS),
    header_edits=st.lists(_header_edit, max_size=3),
    signal_edits=st.lists(_signal_edit, max_size=2),
)
def test_inspect_mutated_record(
    seed_dir: Path,
    seed: Seed,
    header_edits: list[tuple[str, int, int, str]],
    signal_edits: list[tuple[str, float, int, bytes]],
) -> None:
    """``inspect_file`` (``medclip inspect``) is JSON-clean or raises a documented error."""
    with tempfile.TemporaryDirectory(prefix="fuzzwfdb") as tmp:
        dest = Path(tmp)
        hea, sig = _materialise(seed_dir, dest, seed)
        hea.write_text(mutate_header(hea.read_text(), header_edits), encoding="utf-8")
        data = mutate_bytes(sig.read_bytes(), signal_edits)
        sig.write_bytes(data if data is not None else b"")
        try:
            info = inspect_file(hea)
        except MedclipDataError:
            return
        json.dumps(info, allow_nan=False)  # strict JSON: no NaN/inf leak into the output
        assert info["modality"] == "ecg" and info["shape"][0] == 12


@fuzz_settings(default=60)
@given(
    seed=st.sampled_from(SEEDS[:2]),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 7)), min_size=1, max_size=8),
)
def test_bit_flips_in_samples_still_read(
    seed_dir: Path, seed: Seed, flips: list[tuple[float, int]]
) -> None:
    """Flipped sample bits are corrupt values, not a corrupt record: the read must succeed."""
    with tempfile.TemporaryDirectory(prefix="fuzzwfdb") as tmp:
        dest = Path(tmp)
        _, sig = _materialise(seed_dir, dest, seed)
        buf = bytearray(sig.read_bytes())
        for frac, bit in flips:
            buf[min(int(frac * len(buf)), len(buf) - 1)] ^= 1 << bit
        sig.write_bytes(bytes(buf))
        ecg = read_or_documented_error(dest / seed.name)
        assert ecg is not None and ecg.lead_mask.all()


# ---------------------------------------------------------------------------------------------
# Regressions: crashers / contract violations found by the targets above (fixed in ecg_io.py)


def test_regression_tiny_adc_gain_no_longer_leaks_inf(seed_dir: Path, tmp_path: Path) -> None:
    """Gain ``1e-40`` overflowed float32: a lead of ``inf`` with one 0 sample was returned as
    valid (``inf`` in ``Ecg.signal``). Now a documented EcgReadError."""
    _materialise(seed_dir, tmp_path, SEEDS[0])
    hea = tmp_path / "r16.hea"
    lines = hea.read_text().splitlines()
    parts = lines[1].split()
    parts[2] = "1e-40/mV"
    lines[1] = " ".join(parts)
    hea.write_text("\n".join(lines) + "\n")
    with pytest.raises(EcgReadError, match="non-physical amplitudes"):
        read_ecg(tmp_path / "r16")


def test_regression_extra_signal_line_is_not_silently_mislabelled(
    seed_dir: Path, tmp_path: Path
) -> None:
    """A duplicated signal line (13 specs, header says 12) shifted every lead name by one and
    dropped V6 without an error. Now the record is rejected."""
    _materialise(seed_dir, tmp_path, SEEDS[0])
    hea = tmp_path / "r16.hea"
    lines = hea.read_text().splitlines()
    lines.insert(1, lines[1])
    hea.write_text("\n".join(lines) + "\n")
    with pytest.raises(EcgReadError, match="r16"):
        read_ecg(tmp_path / "r16")
