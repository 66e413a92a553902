"""The demo's handlers and upload checks, without a browser or a server."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from apps.handlers import (
    AnalysisResult,
    analyze_example,
    analyze_paths,
    analyze_upload,
    load_examples,
    search_text,
    user_message,
    zeroshot_outputs,
)
from apps.uploads import UploadError, UploadPolicy, check_xray_upload, stage_ecg_upload
from medclip.io import EcgReadError, read_ecg

POLICY = UploadPolicy(max_upload_mb=1.0)


def _result_text(result: AnalysisResult) -> str:
    """Everything a result would show, as one string (for PHI checks)."""
    parts: list[Any] = [
        result.error,
        result.notice,
        result.xray_info,
        result.ecg_info,
        result.probability_rows,
        result.proto_rows,
        result.proto_note,
        [(c.caption, c.row) for c in result.similar],
        [cap for _, cap in result.proto_pairs],
    ]
    return repr(parts)


# ----------------------------------------------------------------------------- uploads
def test_xray_upload_accepts_images_and_refuses_other_types(tmp_path: Path) -> None:
    png = tmp_path / "chest.PNG"
    png.write_bytes(b"x" * 10)
    assert check_xray_upload(png, POLICY) == png
    assert check_xray_upload(None, POLICY) is None
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(UploadError, match=r"\.txt of notes\.txt is not accepted"):
        check_xray_upload(bad, POLICY)


def test_uploads_over_the_limit_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (POLICY.max_bytes + 1))
    with pytest.raises(UploadError, match="over the limit of 1 MB"):
        check_xray_upload(big, POLICY)
    hea, dat = tmp_path / "r.hea", tmp_path / "r.dat"
    hea.write_text("r 1 100 10\nr.dat 16 200 16 0 0 0 0 I\n")
    dat.write_bytes(b"\0" * POLICY.max_bytes)
    with pytest.raises(UploadError, match="over the limit"):
        stage_ecg_upload([hea, dat], POLICY, tmp_path / "work")
    with pytest.raises(ValueError):
        UploadPolicy(max_upload_mb=0)


def test_wfdb_pair_uploaded_from_separate_folders_is_gathered(
    real_ecg_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    # Gradio stores each uploaded file in its own folder: the pair must be brought together.
    hea_src, mat_src = real_ecg_pair
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    hea = Path(shutil.copy(hea_src, tmp_path / "a"))
    mat = Path(shutil.copy(mat_src, tmp_path / "b"))
    record = stage_ecg_upload([mat, hea], POLICY, tmp_path / "work")
    assert record is not None and record.name == "HR06000.hea"
    ecg = read_ecg(record)
    assert ecg.signal.shape == (12, 5000) and ecg.fs == 500.0


def test_header_without_its_signal_file_is_refused(
    real_ecg_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    hea, mat = real_ecg_pair
    with pytest.raises(UploadError, match=r"HR06000\.hea needs its signal file HR06000\.mat"):
        stage_ecg_upload([hea], POLICY, tmp_path / "w1")
    with pytest.raises(UploadError, match=r"without its WFDB header"):
        stage_ecg_upload([mat], POLICY, tmp_path / "w2")


def test_ecg_upload_type_and_count_rules(real_ecg_pair: tuple[Path, Path], tmp_path: Path) -> None:
    hea, mat = real_ecg_pair
    txt = tmp_path / "ecg.txt"
    txt.write_text("not an ecg")
    with pytest.raises(UploadError, match=r"\.txt of ecg\.txt is not accepted"):
        stage_ecg_upload([txt], POLICY, tmp_path / "w1")
    other = tmp_path / "HR06001.hea"
    shutil.copy(hea.with_name("HR06001.hea"), other)
    with pytest.raises(UploadError, match="2 headers uploaded"):
        stage_ecg_upload([hea, mat, other], POLICY, tmp_path / "w2")
    assert stage_ecg_upload(None, POLICY, tmp_path / "w3") is None
    assert stage_ecg_upload([], POLICY, tmp_path / "w4") is None
    dcm = tmp_path / "wave.dcm"
    dcm.write_bytes(b"\0" * 200)
    assert stage_ecg_upload([dcm], POLICY, tmp_path / "w5") == tmp_path / "w5" / "record" / (
        "wave.dcm"
    )


def test_zip_of_a_record_is_extracted_safely(
    real_ecg_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    hea, mat = real_ecg_pair
    good = tmp_path / "record.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.write(hea, "nested/HR06000.hea")
        zf.write(mat, "nested/HR06000.mat")
        zf.writestr("__MACOSX/._HR06000.hea", b"junk")
    record = stage_ecg_upload([good], POLICY, tmp_path / "w1")
    assert record is not None and read_ecg(record).signal.shape == (12, 5000)

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escape.hea", "x 1 100 10\n")
    with pytest.raises(UploadError, match="escapes the extraction folder"):
        stage_ecg_upload([evil], POLICY, tmp_path / "w2")
    assert not (tmp_path / "escape.hea").exists()

    mixed = tmp_path / "mixed.zip"
    with zipfile.ZipFile(mixed, "w") as zf:
        zf.writestr("run.sh", "echo hi")
    with pytest.raises(UploadError, match=r"contains run\.sh"):
        stage_ecg_upload([mixed], POLICY, tmp_path / "w3")
    with pytest.raises(UploadError, match="either one .zip or the record's files"):
        stage_ecg_upload([good, hea], POLICY, tmp_path / "w4")


def test_user_messages_name_files_by_base_name_only() -> None:
    exc = EcgReadError("/data/p10/p10000032/s5000/40000001.hea", "header is truncated")
    msg = user_message(exc, "ECG")
    assert msg == "ECG: 40000001.hea: header is truncated"
    assert "p10000032" not in msg


# ----------------------------------------------------------------------------- analysis
def test_zeroshot_outputs_are_sorted_and_skip_missing_labels() -> None:
    from types import SimpleNamespace

    fake = SimpleNamespace(
        labels=("A", "B", "C"),
        probabilities=np.array([0.2, np.nan, 0.9]),
        per_modality={"xray": np.array([0.2, np.nan, 0.9])},
    )
    mapping, rows = zeroshot_outputs(fake)
    assert list(mapping) == ["C", "A"]
    assert rows[0][:3] == ["C", "0.900", "0.900"] and rows[0][3] == ""


def test_real_xray_and_ecg_give_probabilities_plot_cases_and_prototypes(
    demo_resources: Any, real_xray: Path, real_ecg_pair: tuple[Path, Path]
) -> None:
    result = analyze_upload(demo_resources, real_xray, list(real_ecg_pair))
    assert result.ok, result.error
    probs = list(result.probabilities.values())
    assert probs and probs == sorted(probs, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probs)
    assert {"No Finding", "AFIB"} <= set(result.probabilities)
    assert "Research use only" in result.notice and "SYNTHETIC" in result.notice
    assert result.xray_image is not None and result.xray_image.dtype == np.uint8
    assert result.ecg_image is not None and result.ecg_image.ndim == 3
    assert result.ecg_info["sampling_rate_hz"] == 500.0
    assert len(result.ecg_info["leads_present"]) == 12
    assert 1 <= len(result.similar) <= demo_resources.top_k
    assert [c.row[0] for c in result.similar] == list(range(1, len(result.similar) + 1))
    scores = [c.row[1] for c in result.similar]
    assert scores == sorted(scores, reverse=True)
    assert all(c.image.ndim == 3 for c in result.similar)
    assert result.proto_image is not None and result.proto_rows and result.proto_pairs
    assert "record" not in result.ecg_info


def test_every_bundled_example_analyses(demo_resources: Any, demo_bundle: Path) -> None:
    examples = load_examples(demo_bundle)
    assert examples and examples == demo_resources.examples
    first = analyze_example(demo_resources, examples[0].name)
    assert first.ok, first.error
    assert first.xray_image is not None and first.ecg_image is not None
    for ex in examples:  # every example resolves by name and by title, inside the bundle
        assert demo_resources.example(ex.title) == demo_resources.example(ex.name) == ex
        assert ex.xray is not None and demo_bundle.resolve() in ex.xray.parents
    assert "no example called" in analyze_example(demo_resources, "nope").error
    assert analyze_example(demo_resources, None).error


def test_bad_inputs_give_readable_errors_and_later_requests_work(
    demo_resources: Any, corrupt_dicom: Path, real_xray: Path
) -> None:
    broken = analyze_upload(demo_resources, corrupt_dicom, None)
    assert broken.error.startswith("**Could not analyse the input.** X-ray: broken.dcm:")
    assert broken.probabilities == {} and broken.xray_image is None
    assert "Upload a chest X-ray" in analyze_paths(demo_resources, None, None).error
    assert analyze_upload(demo_resources, real_xray, None).ok


def test_patient_identifiers_in_a_dicom_are_never_shown(
    demo_resources: Any, tmp_path: Path
) -> None:
    import pydicom

    example = demo_resources.examples[0]
    ds = pydicom.dcmread(example.xray)
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PID-998877"
    ds.PatientBirthDate = "19700101"
    ds.InstitutionName = "Secret Hospital"
    path = tmp_path / "with_phi.dcm"
    ds.save_as(path)
    result = analyze_upload(demo_resources, path, None)
    assert result.ok, result.error
    shown = _result_text(result)
    for secret in ("Doe", "Jane", "PID-998877", "19700101", "Secret Hospital"):
        assert secret not in shown
    assert result.xray_info["modality"] == "DX"


def test_free_text_search(demo_resources: Any) -> None:
    query = "ECGs with atrial fibrillation and a rapid ventricular response"
    ecg_only = search_text(demo_resources, query, "ECG")
    assert not ecg_only.error
    assert ecg_only.similar and {c.row[2] for c in ecg_only.similar} == {"ecg"}
    reports = search_text(demo_resources, query, "Report", k=3)
    assert len(reports.similar) == 3 and {c.row[2] for c in reports.similar} == {"text"}
    assert "Type a query" in search_text(demo_resources, "  ", "Any").error
    assert "Unknown case type" in search_text(demo_resources, "x", "Video").error


def test_dicom_ecg_upload_is_analysed_without_showing_its_identifiers(
    demo_resources: Any, tmp_path: Path
) -> None:
    pydicom_data = pytest.importorskip("pydicom.data")
    src = Path(pydicom_data.get_testdata_file("waveform_ecg.dcm"))
    upload = Path(shutil.copy(src, tmp_path / "ecg.dcm"))
    result = analyze_upload(demo_resources, None, [upload])
    assert result.ok, result.error
    assert result.ecg_info["format"] == "dicom" and result.ecg_info["sampling_rate_hz"] == 1000.0
    assert result.ecg_image is not None and result.xray_image is None
    assert result.proto_rows  # ProtoECGNet resamples the 1000 Hz record to its own rate
    shown = _result_text(result)
    for secret in ("642341", "19710123", "Galliera"):
        assert secret not in shown


def test_a_bare_bundle_without_index_prototypes_or_examples_still_serves(
    demo_bundle: Path, real_ecg_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    from apps.handlers import load_resources

    bare = tmp_path / "bare"
    shutil.copytree(
        demo_bundle, bare, ignore=shutil.ignore_patterns("prototypes", "index*", "examples")
    )
    res = load_resources(bare, policy=POLICY)
    assert res.index is None and res.proto is None and res.examples == ()
    result = analyze_upload(res, None, list(real_ecg_pair))
    assert result.ok, result.error
    assert result.probabilities and result.similar == [] and result.proto_rows == []
    assert "no ProtoECGNet prototypes" in result.proto_note
    assert "no case index" in search_text(res, "atrial fibrillation").error
    assert "Choose an example" in analyze_example(res, "").error
