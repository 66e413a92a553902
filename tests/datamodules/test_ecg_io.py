"""read_ecg: real PTB-XL / CinC records, lead reordering by name, units, DICOM waveforms."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import scipy.io
import wfdb
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.waveforms import multiplex_array

from datamodules.ecg_io import read_ecg
from datamodules.leads import canonical_lead, map_leads, reorder_leads, unit_to_mv
from datamodules.types import CANONICAL_LEADS

V_LEADS = ["V1", "V2", "V3", "V4", "V5", "V6"]
MIMIC_ORDER = ["I", "II", "III", "aVR", "aVF", "aVL", *V_LEADS]


def _testfile(name: str) -> str:
    """Path of a pydicom / pydicom-data test file (installed offline)."""
    path = get_testdata_file(name)
    assert isinstance(path, str), name
    return path


def _signal(n: int, n_leads: int = 12, seed: int = 0) -> np.ndarray:
    """Smooth random (n, n_leads) signal in mV, each lead distinct."""
    rng = np.random.default_rng(seed)
    sig = np.cumsum(rng.normal(0, 0.02, size=(n, n_leads)), axis=0)
    return sig + np.arange(n_leads)[None, :] * 0.1


def _write(folder: Path, name: str, sig_names: list[str], sig: np.ndarray, **kw: object) -> Path:
    n_leads = len(sig_names)
    args: dict[str, object] = {
        "fs": 500,
        "units": ["mV"] * n_leads,
        "fmt": ["16"] * n_leads,
        "adc_gain": [1000.0] * n_leads,
        "baseline": [0] * n_leads,
    }
    args.update(kw)
    wfdb.wrsamp(name, sig_name=sig_names, p_signal=sig, write_dir=str(folder), **args)
    return folder / name


def _header_fields(hea: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Lead names, gains and baselines straight from a header's text (independent of the reader)."""
    lines = [ln for ln in hea.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    n_sig = int(lines[0].split()[1])
    names, gains, bases = [], [], []
    for line in lines[1 : 1 + n_sig]:
        parts = line.split(maxsplit=8)
        gain = parts[2].split("/")[0]
        base = gain.split("(")[1].rstrip(")") if "(" in gain else "0"
        names.append(parts[8])
        gains.append(float(gain.split("(")[0]))
        bases.append(float(base))
    return names, np.array(gains), np.array(bases)


# ---------------------------------------------------------------------------------------------
# Real records


def test_real_records_match_raw_integers_over_gain(real_ecg_dir: Path) -> None:
    manifest = pd.read_csv(real_ecg_dir / "manifest.csv")
    assert len(manifest) >= 30
    for row in manifest.to_dict("records"):
        stem = real_ecg_dir.parent / str(row["path"])  # manifest paths start with "ecg/"
        ecg = read_ecg(stem)
        names, gains, bases = _header_fields(Path(f"{stem}.hea"))
        if row["signal_file_ext"] == "mat":
            raw = scipy.io.loadmat(f"{stem}.mat")["val"].astype(np.float64)  # (12, T) ADC units
        else:
            raw = np.fromfile(f"{stem}.dat", dtype="<i2").reshape(-1, len(names)).T.astype(float)
        assert ecg.signal.shape == (12, int(row["n_samples"]))
        assert ecg.signal.dtype == np.float32
        assert ecg.fs == float(row["fs"])
        assert ecg.lead_mask.all()
        assert ecg.leads == CANONICAL_LEADS
        upper = [n.upper() for n in names]
        for k, lead in enumerate(CANONICAL_LEADS):
            i = upper.index(lead.upper())  # match by name, never by position
            expected = (raw[i] - bases[i]) / gains[i]
            np.testing.assert_allclose(ecg.signal[k], expected, atol=1e-6, err_msg=f"{stem} {lead}")
        assert ecg.meta["source_leads"] == names


def test_native_ptbxl_record(real_ecg_dir: Path) -> None:
    stem = real_ecg_dir / "ptbxl_native/records100/00000/00001_lr"
    ecg = read_ecg(stem)
    assert ecg.fs == 100.0 and ecg.n_samples == 1000 and ecg.duration_s == 10.0
    assert ecg.meta["source_leads"][3:6] == ["AVR", "AVL", "AVF"]
    assert ecg.meta["checksum_mismatch"] == []
    # every accepted spelling of the path gives the same record
    for alias in (f"{stem}.hea", f"{stem}.dat", str(stem)):
        np.testing.assert_array_equal(read_ecg(alias).signal, ecg.signal)


def test_fast_path_agrees_with_wfdb(real_ecg_dir: Path) -> None:
    for rel in ("cinc2021/HR06000", "cinc2021/JS00001", "ptbxl_native/records100/00000/00001_lr"):
        stem = real_ecg_dir / rel
        ecg = read_ecg(f"{stem}.mat" if rel.startswith("cinc") else stem)
        rec = wfdb.rdrecord(str(stem))
        upper = [n.upper() for n in rec.sig_name]
        ref = np.stack([rec.p_signal[:, upper.index(lead.upper())] for lead in CANONICAL_LEADS])
        np.testing.assert_allclose(ecg.signal, ref, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Written records


def test_mimic_lead_order_is_reordered_by_name(tmp_path: Path) -> None:
    sig = _signal(1000)
    stem = _write(
        tmp_path,
        "40000001",
        MIMIC_ORDER,
        sig,
        adc_gain=[200.0] * 12,
        base_date=datetime.date(2180, 6, 26),
        base_time=datetime.time(13, 13, 0),
        comments=["<subject_id>: 10000001"],
    )
    ecg = read_ecg(stem)
    for k, lead in enumerate(CANONICAL_LEADS):
        np.testing.assert_allclose(ecg.signal[k], sig[:, MIMIC_ORDER.index(lead)], atol=0.003)
    assert ecg.meta["source_leads"] == MIMIC_ORDER
    assert "10000001" not in json.dumps(ecg.meta)  # header comments (subject id) never copied


def test_format_212_goes_through_wfdb(tmp_path: Path) -> None:
    sig = _signal(700, seed=1)
    names = ["i", "II", "III", "AVR", "avl", "aVF", *V_LEADS]
    stem = _write(tmp_path, "r212", names, sig, fmt=["212"] * 12, adc_gain=[400.0] * 12)
    ecg = read_ecg(stem)
    ref = wfdb.rdrecord(str(stem)).p_signal
    for k in range(12):
        np.testing.assert_allclose(ecg.signal[k], ref[:, k], atol=1e-6)
    assert ecg.meta["format"] == "wfdb"


def test_baseline_and_microvolt_units(tmp_path: Path) -> None:
    sig_uv = _signal(500, seed=2) * 1000.0
    stem = _write(
        tmp_path,
        "uv",
        list(CANONICAL_LEADS),
        sig_uv,
        units=["uV"] * 12,
        adc_gain=[1.0] * 12,
        baseline=[37] * 12,
    )
    ecg = read_ecg(stem)
    np.testing.assert_allclose(ecg.signal, sig_uv.T / 1000.0, atol=1e-3)
    assert ecg.meta["source_units"] == ["uV"] * 12


def test_unstated_units_are_taken_as_mv(tmp_path: Path) -> None:
    sig = _signal(300, seed=3)
    stem = _write(tmp_path, "nu", list(CANONICAL_LEADS), sig)
    hea = Path(f"{stem}.hea")
    hea.write_text(hea.read_text().replace("/mV", ""))
    ecg = read_ecg(stem)
    np.testing.assert_allclose(ecg.signal, sig.T, atol=1e-3)
    hea.write_text(hea.read_text().replace("(0)", "(0)/NU"))
    ecg = read_ecg(stem)
    assert any("assumed mV" in r for r in ecg.meta["repairs"])


def test_inverted_and_decorated_names(tmp_path: Path) -> None:
    sig = _signal(400, seed=4)
    names = ["Lead I", "Lead II", "iii", "-aVR", "aVL", "AVF", *V_LEADS]
    ecg = read_ecg(_write(tmp_path, "cab", names, sig))
    np.testing.assert_allclose(ecg.signal[3], -sig[:, 3], atol=1e-3)
    np.testing.assert_allclose(ecg.signal[0], sig[:, 0], atol=1e-3)
    assert any("inverted" in r for r in ecg.meta["repairs"])


def test_extra_and_duplicate_channels_are_ignored(tmp_path: Path) -> None:
    sig = _signal(300, n_leads=14, seed=5)
    names = [*CANONICAL_LEADS, "Pleth", "Lead II"]
    ecg = read_ecg(_write(tmp_path, "extra", names, sig))
    assert ecg.lead_mask.all()
    np.testing.assert_allclose(ecg.signal[1], sig[:, 1], atol=1e-3)  # first "II" wins
    assert any("Pleth" in r for r in ecg.meta["repairs"])


def test_partial_nan_stays_nan_with_mask_true(tmp_path: Path) -> None:
    sig = _signal(300, seed=6)
    sig[100:120, 2] = np.nan
    ecg = read_ecg(_write(tmp_path, "gap", list(CANONICAL_LEADS), sig))
    assert ecg.lead_mask.all()
    assert np.isnan(ecg.signal[2, 100:120]).all()
    assert np.isfinite(ecg.signal[2, :100]).all()
    assert 0 < ecg.meta["nan_fraction"] < 0.01


# ---------------------------------------------------------------------------------------------
# DICOM waveforms


def test_pydicom_waveform_ecg_loads_in_mv() -> None:
    path = _testfile("waveform_ecg.dcm")
    ecg = read_ecg(path)
    ds = pydicom.dcmread(path)
    assert ecg.signal.shape == (12, 10000)
    assert ecg.fs == 1000.0
    assert ecg.meta["multiplex_group"] == "RHYTHM"  # not the median beat
    assert ecg.meta["source_units"] == ["uV"] * 12
    # pydicom's waveform_array applies sensitivity and baseline, in the file's units (uV)
    np.testing.assert_allclose(ecg.signal, ds.waveform_array(0).T / 1000.0, atol=1e-6)
    assert np.nanmax(np.abs(ecg.signal)) < 10.0  # plausible mV


def test_dicom_waveform_units_baseline_and_order(tmp_path: Path) -> None:
    ds = pydicom.dcmread(_testfile("waveform_ecg.dcm"))
    group = ds.WaveformSequence[0]
    raw = multiplex_array(ds, 0, as_raw=True).astype(np.float64)
    channels = group.ChannelDefinitionSequence
    sens = np.array([float(c.ChannelSensitivity) for c in channels])
    for c in channels:
        c.ChannelSensitivityUnitsSequence[0].CodeValue = "mV"
    channels[1].ChannelBaseline = 0.5
    # relabel: channel 4 now says aVF and channel 5 says aVL (names decide, not positions)
    src4 = channels[4].ChannelSourceSequence[0]
    src5 = channels[5].ChannelSourceSequence[0]
    (src4.CodeMeaning, src4.CodeValue), (src5.CodeMeaning, src5.CodeValue) = (
        (src5.CodeMeaning, src5.CodeValue),
        (src4.CodeMeaning, src4.CodeValue),
    )
    out = tmp_path / "ecg.dcm"
    ds.save_as(out)
    ecg = read_ecg(out)
    np.testing.assert_allclose(ecg.signal[1], raw[:, 1] * sens[1] + 0.5, rtol=1e-5)
    np.testing.assert_allclose(ecg.signal[4], raw[:, 5] * sens[5], rtol=1e-5)  # aVL
    np.testing.assert_allclose(ecg.signal[5], raw[:, 4] * sens[4], rtol=1e-5)  # aVF


# ---------------------------------------------------------------------------------------------
# Lead names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("AVR", ("aVR", 1.0)),
        ("avr", ("aVR", 1.0)),
        ("V1 ", ("V1", 1.0)),
        ("Lead II", ("II", 1.0)),
        ("Lead I (Einthoven)", ("I", 1.0)),
        ("-aVR", ("aVR", -1.0)),
        ("DIII", ("III", 1.0)),
        ("MDC_ECG_LEAD_AVF", ("aVF", 1.0)),
        ("5.6.3-9-62", ("aVR", 1.0)),
        ("2:3", ("V1", 1.0)),
        ("X", None),
        ("Pleth", None),
        ("V7", None),
        ("", None),
    ],
)
def test_canonical_lead(name: str, expected: tuple[str, float] | None) -> None:
    assert canonical_lead(name) == expected


def test_unit_factors() -> None:
    assert unit_to_mv("mv") == 1.0
    assert unit_to_mv("uV") == unit_to_mv("µV") == unit_to_mv("μV") == 1e-3
    assert unit_to_mv("V") == 1000.0
    assert unit_to_mv("mmHg") is None


_CASE_VARIANTS = {
    lead: sorted({lead, lead.upper(), lead.lower(), f"Lead {lead}", f" {lead} "})
    for lead in CANONICAL_LEADS
}


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    perm=st.permutations(range(12)),
    spell=st.lists(st.integers(0, 4), min_size=12, max_size=12),
    n=st.integers(1, 50),
)
def test_reorder_leads_inverts_any_permutation(perm: list[int], spell: list[int], n: int) -> None:
    base = np.arange(12 * n, dtype=np.float32).reshape(12, n)
    names = []
    for i in perm:
        variants = _CASE_VARIANTS[CANONICAL_LEADS[i]]
        names.append(variants[spell[i] % len(variants)])
    out, mask, lead_map = reorder_leads(base[list(perm)], names)
    np.testing.assert_array_equal(out, base)
    assert mask.all() and lead_map.unknown == ()


@settings(max_examples=30, deadline=None, derandomize=True)
@given(subset=st.sets(st.integers(0, 11), min_size=1, max_size=11))
def test_missing_leads_are_nan_and_masked(subset: set[int]) -> None:
    keep = sorted(subset)
    base = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    out, mask, _ = reorder_leads(base[keep], [CANONICAL_LEADS[i] for i in keep])
    assert mask.tolist() == [i in subset for i in range(12)]
    assert np.isnan(out[~mask]).all()
    np.testing.assert_array_equal(out[mask], base[mask])
    assert map_leads([CANONICAL_LEADS[i] for i in keep]).n_present == len(keep)
