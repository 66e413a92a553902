"""Fuzz ``read_cxr`` / ``read_ecg`` / ``inspect_file`` with mutated DICOM files (hypothesis).

Seeds: pydicom's test files ``CT_small.dcm`` (int16 + rescale), ``SC_rgb_small_odd.dcm`` (RGB),
``MR_small_RLE.dcm`` (RLE), ``SC_rgb_jpeg_dcmtk.dcm`` (JPEG baseline),
``MR_small_jp2klossless.dcm`` (JPEG 2000), a generated 12-bit MONOCHROME1 CR with a window, a
small PNG and JPEG, and ``waveform_ecg.dcm`` (12-lead ECG, two multiplex groups). Examples either
flip/overwrite/truncate bytes or rewrite tag values (Rows, Columns, BitsStored,
PhotometricInterpretation, RescaleSlope, WindowWidth, PixelData...; NumberOfWaveformSamples,
WaveformBitsAllocated, SamplingFrequency, ChannelSensitivity, units, lead names, WaveformData...).

Property: a documented error (:class:`CxrReadError` / :class:`EcgReadError`, or
:class:`MedclipDataError` from ``inspect_file``) or an output that satisfies the contract:
``Cxr.pixels`` float32 ``(H, W)`` finite in [0, 1]; ``Ecg`` as in ``test_fuzz_wfdb.check_ecg``.

``MEDCLIP_FUZZ_EXAMPLES=N`` runs ``N`` random examples per target; see docs/fuzzing.md.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, Phase, event, example, given, reject, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom import config as dicom_config
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from datamodules.cxr_io import read_cxr
from datamodules.ecg_io import MAX_FS_HZ, MIN_FS_HZ, read_ecg
from datamodules.errors import CxrReadError, EcgReadError, MedclipDataError
from datamodules.inspect import inspect_file
from datamodules.transforms import EcgTransformConfig, preprocess_ecg
from datamodules.types import CANONICAL_LEADS, Cxr, Ecg

#: pydicom warns (rightly) about the corrupt values these tests feed it.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")

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


_ECG_CFG = EcgTransformConfig(fs_hz=100.0, length=64)

# ---------------------------------------------------------------------------------------------
# Seeds


def _testfile(name: str) -> bytes:
    path = get_testdata_file(name)
    assert isinstance(path, str), name
    return Path(path).read_bytes()


def _generated_cr() -> bytes:
    """A 40 x 48 12-bit MONOCHROME1 CR with a VOI window, written by pydicom."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.UID("1.2.840.10008.5.1.4.1.1.1")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.ViewPosition = "PA"
    ds.Rows, ds.Columns = 40, 48
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4000
    rng = np.random.default_rng(0)
    ds.PixelData = rng.integers(0, 4096, size=(40, 48), dtype=np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _image_bytes(fmt: str) -> bytes:
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 20), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


CXR_SEEDS: dict[str, tuple[str, bytes]] = {
    "ct": ("ct.dcm", _testfile("CT_small.dcm")),
    "rgb": ("rgb.dcm", _testfile("SC_rgb_small_odd.dcm")),
    "rle": ("rle.dcm", _testfile("MR_small_RLE.dcm")),
    "jpeg_dcm": ("jpeg.dcm", _testfile("SC_rgb_jpeg_dcmtk.dcm")),
    "j2k_dcm": ("j2k.dcm", _testfile("MR_small_jp2klossless.dcm")),
    "cr": ("cr.dcm", _generated_cr()),
    "png": ("img.png", _image_bytes("PNG")),
    "jpg": ("img.jpg", _image_bytes("JPEG")),
}
DICOM_IMAGE_SEEDS = ("ct", "rgb", "rle", "jpeg_dcm", "j2k_dcm", "cr")


def _trimmed_ecg(n_samples: int = 1000) -> bytes:
    """``waveform_ecg.dcm`` without its 1100 annotations and with a 1 s rhythm group (fast)."""
    ds = pydicom.dcmread(io.BytesIO(_testfile("waveform_ecg.dcm")))
    del ds.WaveformAnnotationSequence
    rhythm = ds.WaveformSequence[0]
    n_bytes = n_samples * int(rhythm.NumberOfWaveformChannels) * 2
    rhythm.WaveformData = bytes(rhythm.WaveformData)[:n_bytes]
    rhythm.NumberOfWaveformSamples = n_samples
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


ECG_FULL: bytes = _testfile("waveform_ecg.dcm")
ECG_SEED: bytes = _trimmed_ecg()


@contextmanager
def lenient_writing() -> Iterator[None]:
    """Let pydicom write out-of-spec values (the point of the exercise)."""
    old = dicom_config.settings.writing_validation_mode
    dicom_config.settings.writing_validation_mode = dicom_config.IGNORE
    try:
        yield
    finally:
        dicom_config.settings.writing_validation_mode = old


@pytest.fixture(scope="module", autouse=True)
def _seeds_are_valid() -> None:
    with tempfile.TemporaryDirectory(prefix="fuzzdcm") as tmp:
        for name, data in CXR_SEEDS.values():
            path = Path(tmp) / name
            path.write_bytes(data)
            check_cxr(read_cxr(path))
        path = Path(tmp) / "ecg.dcm"
        path.write_bytes(ECG_SEED)
        check_ecg(read_ecg(path))


# ---------------------------------------------------------------------------------------------
# Contracts


def check_cxr(cxr: Cxr) -> None:
    """``Cxr.pixels`` float32 ``(H, W)``, finite, in [0, 1]; meta is plain data."""
    px = cxr.pixels
    assert isinstance(px, np.ndarray) and px.dtype == np.float32
    assert px.ndim == 2 and px.size > 0
    assert np.isfinite(px).all(), "pixels must be finite"
    assert float(px.min()) >= 0.0 and float(px.max()) <= 1.0
    json.dumps(cxr.meta)


def check_ecg(ecg: Ecg) -> None:
    """The :class:`Ecg` contract plus a finite preprocessed array."""
    sig, mask = ecg.signal, ecg.lead_mask
    assert isinstance(sig, np.ndarray) and sig.dtype == np.float32
    assert sig.ndim == 2 and sig.shape[0] == 12 and sig.shape[1] >= 1
    assert isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == (12,)
    assert mask.any() and tuple(ecg.leads) == CANONICAL_LEADS
    assert np.isfinite(ecg.fs) and MIN_FS_HZ <= ecg.fs <= MAX_FS_HZ
    assert np.isnan(sig[~mask]).all()
    assert np.isfinite(sig[mask]).any(axis=1).all()
    assert not np.isinf(sig).any()
    json.dumps(ecg.meta)
    out = preprocess_ecg(ecg, _ECG_CFG)
    assert out.shape == (12, _ECG_CFG.length) and np.isfinite(out).all()


def _documented(exc: MedclipDataError) -> None:
    assert exc.path and exc.problem, exc
    event(f"{type(exc).__name__}: {exc.problem.split('(')[0][:40]}")


def read_both(path: Path) -> tuple[Cxr | None, Ecg | None]:
    """Run both readers on ``path``; each may only raise its own documented error."""
    cxr = ecg = None
    try:
        cxr = read_cxr(path)
    except CxrReadError as exc:
        _documented(exc)
    else:
        check_cxr(cxr)
        event("read_cxr ok")
    try:
        ecg = read_ecg(path)
    except EcgReadError as exc:
        _documented(exc)
    else:
        check_ecg(ecg)
        event("read_ecg ok")
    return cxr, ecg


def read_ecg_checked(path: Path) -> Ecg | None:
    """``read_ecg`` only (tag edits cannot turn a waveform into an image)."""
    try:
        ecg = read_ecg(path)
    except EcgReadError as exc:
        _documented(exc)
        return None
    check_ecg(ecg)
    event("read_ecg ok")
    return ecg


# ---------------------------------------------------------------------------------------------
# Byte mutations

_byte_edit = st.tuples(
    st.sampled_from(["flip", "flip", "overwrite", "truncate", "insert", "delete"]),
    st.one_of(st.integers(0, 2047), st.floats(0.0, 1.0)),  # header region or anywhere
    st.integers(1, 64),
    st.binary(min_size=1, max_size=32),
)


def mutate_bytes(data: bytes, edits: list[tuple[str, int | float, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for kind, where, length, payload in edits:
        if not buf:
            buf = bytearray(payload)
            continue
        pos = int(where * len(buf)) if isinstance(where, float) else where
        pos = min(pos, len(buf) - 1)
        if kind == "flip":
            buf[pos] ^= 1 << (length % 8)
        elif kind == "overwrite":
            buf[pos : pos + len(payload)] = payload
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = payload
        elif kind == "delete":
            del buf[pos : pos + length]
    return bytes(buf)


@fuzz_settings()
@given(
    seed=st.sampled_from(sorted(CXR_SEEDS)),
    edits=st.lists(_byte_edit, min_size=1, max_size=4),
)
@example(seed="ct", edits=[("truncate", 0.5, 1, b"\0")])
@example(seed="cr", edits=[("truncate", 131, 1, b"\0")])
def test_cxr_byte_mutations(seed: str, edits: list[tuple[str, int | float, int, bytes]]) -> None:
    name, data = CXR_SEEDS[seed]
    with tempfile.TemporaryDirectory(prefix="fuzzdcm") as tmp:
        path = Path(tmp) / name
        path.write_bytes(mutate_bytes(data, edits))
        read_both(path)


@fuzz_settings()
@given(full=st.integers(0, 9).map(lambda k: k == 0), edits=st.lists(_byte_edit, max_size=4))
@example(full=True, edits=[("truncate", 0.5, 1, b"\0")])
@example(full=False, edits=[("flip", 566, 8, b"\0")])  # Modality VR "CS" -> "BS" (crasher)
def test_ecg_byte_mutations(full: bool, edits: list[tuple[str, int | float, int, bytes]]) -> None:
    """Mutated bytes of the trimmed seed (and, one time in ten, of the full 291 kB file)."""
    with tempfile.TemporaryDirectory(prefix="fuzzdcm") as tmp:
        path = Path(tmp) / "ecg.dcm"
        path.write_bytes(mutate_bytes(ECG_FULL if full else ECG_SEED, edits))
        read_both(path)


# ---------------------------------------------------------------------------------------------
# Tag-value mutations

_US = st.sampled_from([0, 1, 2, 3, 7, 8, 12, 15, 16, 17, 24, 32, 33, 64, 65535]) | st.integers(
    0, 65535
)
_DS = st.sampled_from(
    ["0", "1", "-1", "0.5", "2", "1e-30", "1e30", "1e300", "nan", "inf", "-inf", "abc", ""]
) | st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: f"{v:.6g}")
_IS = st.sampled_from(["0", "1", "2", "-1", "3", "1000000", "abc", ""])
_CS_PHOTOMETRIC = st.sampled_from(
    [
        "MONOCHROME1",
        "MONOCHROME2",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "PALETTE COLOR",
        "HSV",
        "",
        "x",
    ]
)
_CXR_TAGS: dict[str, st.SearchStrategy[Any]] = {
    "Rows": _US,
    "Columns": _US,
    "BitsAllocated": _US,
    "BitsStored": _US,
    "HighBit": _US,
    "PixelRepresentation": st.sampled_from([0, 1, 2]),
    "SamplesPerPixel": st.sampled_from([0, 1, 2, 3, 4]),
    "PlanarConfiguration": st.sampled_from([0, 1, 2]),
    "PhotometricInterpretation": _CS_PHOTOMETRIC,
    "NumberOfFrames": _IS,
    "RescaleSlope": _DS,
    "RescaleIntercept": _DS,
    "WindowCenter": _DS | st.lists(_DS, min_size=2, max_size=3),
    "WindowWidth": _DS | st.lists(_DS, min_size=2, max_size=3),
    "VOILUTFunction": st.sampled_from(["LINEAR", "LINEAR_EXACT", "SIGMOID", "X"]),
}
_cxr_tag_edit = st.one_of(
    st.sampled_from(sorted(_CXR_TAGS)).flatmap(
        lambda kw: _CXR_TAGS[kw].map(lambda value: ("set", kw, value))
    ),
    st.sampled_from([*sorted(_CXR_TAGS), "PixelData", "SOPClassUID", "Modality"]).map(
        lambda kw: ("delete", kw, None)
    ),
    st.lists(_byte_edit, min_size=1, max_size=2).map(lambda e: ("pixels", "PixelData", e)),
    st.tuples(_US, _US, _US).map(lambda d: ("voi_lut", "VOILUTSequence", d)),
    st.tuples(_US, _US, _US).map(lambda d: ("modality_lut", "ModalityLUTSequence", d)),
)


def _lut_item(descriptor: tuple[int, int, int]) -> Dataset:
    item = Dataset()  # LUTDescriptor / LUTData have ambiguous VRs: state them
    item.add_new(0x00283002, "US", list(descriptor))
    item.add_new(0x00283006, "US", list(range(min(descriptor[0] or 1, 64))))
    return item


def apply_cxr_edit(ds: Dataset, edit: tuple[str, str, Any]) -> None:
    kind, kw, value = edit
    if kind == "set":
        setattr(ds, kw, value)
    elif kind == "delete":
        if kw in ds:
            delattr(ds, kw)
    elif kind == "pixels" and "PixelData" in ds:
        ds.PixelData = mutate_bytes(bytes(ds.PixelData), value)
    elif kind == "voi_lut":
        ds.VOILUTSequence = [_lut_item(value)]
    elif kind == "modality_lut":
        ds.ModalityLUTSequence = [_lut_item(value)]


def _save(ds: Dataset, path: Path) -> None:
    with lenient_writing():
        try:
            ds.save_as(path)
        except Exception:  # the edit itself is unwritable (e.g. a US value out of range)
            reject()


@fuzz_settings()
@given(
    seed=st.sampled_from(DICOM_IMAGE_SEEDS),
    edits=st.lists(_cxr_tag_edit, min_size=1, max_size=4),
)
@example(seed="cr", edits=[("set", "RescaleSlope", "nan")])
@example(seed="cr", edits=[("set", "WindowWidth", "nan")])
@example(seed="ct", edits=[("set", "RescaleSlope", "1e300")])
@example(seed="cr", edits=[("set", "BitsStored", 0)])
@example(seed="cr", edits=[("set", "BitsStored", 64)])
@example(seed="cr", edits=[("set", "NumberOfFrames", "0")])
@example(seed="cr", edits=[("set", "SamplesPerPixel", 3)])
@example(seed="cr", edits=[("voi_lut", "VOILUTSequence", (0, 0, 16))])
def test_cxr_tag_mutations(seed: str, edits: list[tuple[str, str, Any]]) -> None:
    name, data = CXR_SEEDS[seed]
    ds = pydicom.dcmread(io.BytesIO(data))
    with lenient_writing():
        for edit in edits:
            try:
                apply_cxr_edit(ds, edit)
            except (ValueError, TypeError, OverflowError):
                reject()
    with tempfile.TemporaryDirectory(prefix="fuzzdcm") as tmp:
        path = Path(tmp) / name
        _save(ds, path)
        read_both(path)


_GROUP_TAGS: dict[str, st.SearchStrategy[Any]] = {
    "NumberOfWaveformSamples": st.sampled_from([0, 1, 1199, 1201, 9999, 10001, 2**31 - 1]),
    "NumberOfWaveformChannels": st.sampled_from([0, 1, 11, 13, 65535]),
    "WaveformBitsAllocated": st.sampled_from([0, 7, 8, 12, 16, 32, 64]),
    "WaveformSampleInterpretation": st.sampled_from(["SS", "US", "SB", "UB", "MB", "AB", "", "X"]),
    "SamplingFrequency": _DS,
    "MultiplexGroupLabel": st.sampled_from(["RHYTHM", "MEDIAN BEAT", "", "AVERAGE"]),
    "WaveformPaddingValue": st.binary(min_size=1, max_size=4),
}
_CHANNEL_TAGS: dict[str, st.SearchStrategy[Any]] = {
    "ChannelSensitivity": _DS,
    "ChannelSensitivityCorrectionFactor": _DS,
    "ChannelBaseline": _DS,
}
_UNITS = st.sampled_from(["uV", "mV", "V", "nV", "mmHg", "", "uv", "µV"])
_LEAD_NAMES = st.sampled_from(
    [*CANONICAL_LEADS, "Lead I (Einthoven)", "-aVR", "V7", "", "2:64", "5.6.3-9-62", "Pleth"]
)
_ecg_edit = st.one_of(
    st.tuples(st.integers(0, 1), st.sampled_from(sorted(_GROUP_TAGS))).flatmap(
        lambda g: _GROUP_TAGS[g[1]].map(lambda v: ("group", g[0], g[1], v))
    ),
    st.tuples(st.integers(0, 1), st.sampled_from(sorted(_GROUP_TAGS))).map(
        lambda g: ("group_delete", g[0], g[1], None)
    ),
    st.tuples(st.integers(0, 1), st.lists(_byte_edit, min_size=1, max_size=2)).map(
        lambda g: ("data", g[0], "WaveformData", g[1])
    ),
    st.tuples(st.integers(0, 23), st.sampled_from(sorted(_CHANNEL_TAGS))).flatmap(
        lambda c: _CHANNEL_TAGS[c[1]].map(lambda v: ("channel", c[0], c[1], v))
    ),
    st.tuples(st.integers(0, 23), st.sampled_from(sorted(_CHANNEL_TAGS))).map(
        lambda c: ("channel_delete_tag", c[0], c[1], None)
    ),
    st.tuples(st.integers(0, 23), _UNITS).map(lambda c: ("unit", c[0], "CodeValue", c[1])),
    st.tuples(st.integers(0, 23), _LEAD_NAMES).map(lambda c: ("name", c[0], "CodeMeaning", c[1])),
    st.tuples(st.integers(0, 23), st.sampled_from(["drop", "dup"])).map(
        lambda c: ("channel_item", c[0], c[1], None)
    ),
    st.sampled_from(["WaveformSequence", "SOPClassUID", "Modality"]).map(
        lambda kw: ("top_delete", 0, kw, None)
    ),
)


def apply_ecg_edit(ds: Dataset, edit: tuple[str, int, str, Any]) -> None:
    kind, index, kw, value = edit
    if kind == "top_delete":
        if kw in ds:
            delattr(ds, kw)
        return
    groups = ds.get("WaveformSequence")
    if not groups:
        return
    group = groups[index % len(groups)]
    channels = group.get("ChannelDefinitionSequence") or []
    channel = channels[(index // 2) % len(channels)] if channels else None
    if kind == "group":
        setattr(group, kw, value)
    elif kind == "group_delete" and kw in group:
        delattr(group, kw)
    elif kind == "data" and "WaveformData" in group:
        group.WaveformData = mutate_bytes(bytes(group.WaveformData), value)
    elif channel is None:
        return
    elif kind == "channel":
        setattr(channel, kw, value)
    elif kind == "channel_delete_tag" and kw in channel:
        delattr(channel, kw)
    elif kind == "unit" and channel.get("ChannelSensitivityUnitsSequence"):
        channel.ChannelSensitivityUnitsSequence[0].CodeValue = value
    elif kind == "name" and channel.get("ChannelSourceSequence"):
        channel.ChannelSourceSequence[0].CodeMeaning = value
        channel.ChannelSourceSequence[0].CodeValue = value
    elif kind == "channel_item":
        pos = (index // 2) % len(channels)
        if value == "drop":
            del channels[pos]
        else:
            channels.append(channels[pos])


@fuzz_settings()
@given(edits=st.lists(_ecg_edit, min_size=1, max_size=5))
@example(edits=[("channel", 0, "ChannelSensitivity", "1e300")])
@example(edits=[("channel", 0, "ChannelSensitivity", "inf")])
@example(edits=[("channel", 0, "ChannelSensitivity", "nan")])
@example(edits=[("group", 0, "SamplingFrequency", "nan")])
@example(edits=[("group", 0, "NumberOfWaveformSamples", 2**31 - 1)])
@example(edits=[("group", 0, "WaveformBitsAllocated", 64)])
@example(edits=[("group", 0, "WaveformSampleInterpretation", "X")])
@example(edits=[("group", 0, "WaveformPaddingValue", b"\x00\x80")])
@example(edits=[("channel_item", 0, "drop", None)])
@example(edits=[("group", 0, "NumberOfWaveformChannels", 0)])  # crasher: IndexError
@example(edits=[("group", 0, "NumberOfWaveformSamples", 1)])  # crasher: NaN after preprocess
def test_ecg_tag_mutations(edits: list[tuple[str, int, str, Any]]) -> None:
    ds = pydicom.dcmread(io.BytesIO(ECG_SEED))
    with lenient_writing():
        for edit in edits:
            try:
                apply_ecg_edit(ds, edit)
            except (ValueError, TypeError, OverflowError):
                reject()
    with tempfile.TemporaryDirectory(prefix="fuzzdcm") as tmp:
        path = Path(tmp) / "ecg.dcm"
        _save(ds, path)
        read_ecg_checked(path)


@fuzz_settings(default=60)
@given(
    seed=st.sampled_from([*DICOM_IMAGE_SEEDS, "ecg"]),
    edits=st.lists(_byte_edit, min_size=1, max_size=3),
)
def test_inspect_mutated_dicom(seed: str, edits: list[tuple[str, int | float, int, bytes]]) -> None:
    """``inspect_file`` returns strict JSON or raises a documented error."""
    data = ECG_SEED if seed == "ecg" else CXR_SEEDS[seed][1]
    with tempfile.TemporaryDirectory(prefix="fuzzdcm") as tmp:
        path = Path(tmp) / "x.dcm"
        path.write_bytes(mutate_bytes(data, edits))
        try:
            info = inspect_file(path)
        except MedclipDataError as exc:
            _documented(exc)
            return
        json.dumps(info, allow_nan=False)
        assert info["modality"] in ("xray", "ecg")


# ---------------------------------------------------------------------------------------------
# Regressions: crashers found by the targets above, with the fixed behaviour spelled out


def _ecg_with(tmp_path: Path, **group_values: Any) -> Path:
    ds = pydicom.dcmread(io.BytesIO(ECG_SEED))
    for key, value in group_values.items():
        setattr(ds.WaveformSequence[0], key, value)
    path = tmp_path / "ecg.dcm"
    ds.save_as(path)
    return path


def test_regression_unknown_vr_after_bit_flip(tmp_path: Path) -> None:
    """One flipped bit turned Modality's VR ``CS`` into ``BS``; pydicom raised
    NotImplementedError lazily inside both readers. Now a documented error."""
    data = bytearray(ECG_SEED)
    assert data[562:568] == b"\x08\x00\x60\x00CS"
    data[566] ^= 1
    path = tmp_path / "ecg.dcm"
    path.write_bytes(bytes(data))
    with pytest.raises(EcgReadError, match="Unknown Value Representation 'BS'"):
        read_ecg(path)
    with pytest.raises(CxrReadError, match="waveform"):
        read_cxr(path)
    ct = bytearray(CXR_SEEDS["ct"][1])  # the same flip in an image: read_cxr reads Modality
    at = ct.index(b"\x08\x00\x60\x00CS") + 4
    ct[at] ^= 1
    path.write_bytes(bytes(ct))
    with pytest.raises(CxrReadError, match="corrupt DICOM element"):
        read_cxr(path)


def test_regression_zero_waveform_channels(tmp_path: Path) -> None:
    """NumberOfWaveformChannels=0 with 12 channel definitions raised IndexError."""
    with pytest.raises(EcgReadError, match="channel"):
        read_ecg(_ecg_with(tmp_path, NumberOfWaveformChannels=0))


def test_regression_one_sample_waveform_preprocesses_finite(tmp_path: Path) -> None:
    """A 1-sample record read fine but ``preprocess_ecg`` returned NaN (resample_poly's
    ``padtype="line"`` needs two samples)."""
    ecg = read_ecg(_ecg_with(tmp_path, NumberOfWaveformSamples=1))
    assert ecg.signal.shape == (12, 1)
    check_ecg(ecg)


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("WindowWidth", "nan"), ("WindowCenter", "nan"), ("RescaleSlope", "nan")],
)
def test_regression_nan_pixel_attributes(tmp_path: Path, keyword: str, value: str) -> None:
    """A NaN window or rescale slope gave an all-NaN image; now a documented error."""
    ds = pydicom.dcmread(io.BytesIO(CXR_SEEDS["cr"][1]))
    path = tmp_path / "cr.dcm"
    with lenient_writing():
        setattr(ds, keyword, value)
        ds.save_as(path)
    with pytest.raises(CxrReadError, match="non-finite"):
        read_cxr(path)
