"""``medclip zeroshot``: grouping, sorted table, research-use line, JSON, bad files, and the
deliberate "No Finding" / negation handling as shipped in a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datamodules.sources import load_studies
from medclip.cli import main
from medclip.inputs import detect_modality, group_studies


@pytest.fixture(scope="module")
def files(tiny_synthetic_root: Path) -> dict[str, list[Path]]:
    studies = load_studies("synthetic", tiny_synthetic_root)
    jpgs = sorted((tiny_synthetic_root / "mimic-cxr-jpg").rglob("*.jpg"))[:2]
    return {
        "dcm": [s.xray_path for s in studies if s.xray_path][:1],
        "jpg": jpgs,
        "ecg": [s.ecg_path for s in studies if s.ecg_path][:2],
    }


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["zeroshot", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_modality_detection_and_grouping(files: dict[str, list[Path]], tmp_path: Path) -> None:
    x, e = files["jpg"][0], files["ecg"][0]
    assert detect_modality(x) == "xray" and detect_modality(files["dcm"][0]) == "xray"
    assert detect_modality(e) == "ecg" and detect_modality(e.with_suffix(".hea")) == "ecg"
    one = group_studies([x, e.with_suffix(".hea"), e.with_suffix(".dat")])
    assert len(one) == 1 and one[0].xray == x and one[0].ecg is not None
    assert len(group_studies([x, e], each=True)) == 2
    two_x = group_studies([*files["jpg"], e])
    assert [bool(s.xray) for s in two_x] == [True, True, False]  # > 1 X-ray: each alone
    from pydicom.data import get_testdata_file

    assert detect_modality(get_testdata_file("waveform_ecg.dcm")) == "ecg"  # DICOM waveform
    assert detect_modality(get_testdata_file("CT_small.dcm")) == "xray"  # DICOM image
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt"):
        group_studies([bogus])


def test_table_is_sorted_with_research_line(
    tiny_bundle: Path, files: dict[str, list[Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        capsys, "--bundle", str(tiny_bundle), str(files["dcm"][0]), str(files["ecg"][0])
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("RESEARCH USE ONLY") and "SYNTHETIC" in lines[0]
    assert sum(line.startswith("study ") for line in lines) == 1
    rows = [ln.split() for ln in lines if ln.startswith("  ") and ln.split()[-1][0] in "0.-"]
    probs = [float(r[-3]) for r in rows if len(r) >= 4 and r[-3][0].isdigit()]
    assert len(probs) >= 20  # CheXpert findings from the X-ray + ECG labels from the ECG
    assert probs == sorted(probs, reverse=True)
    assert "xray" in out and "ecg" in out
    assert lines[-1].startswith("RESEARCH USE ONLY")


def test_json_output_and_file_names_only(
    tiny_bundle: Path, files: dict[str, list[Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        capsys,
        "--bundle",
        str(tiny_bundle),
        "--json",
        "--each",
        str(files["jpg"][0]),
        str(files["ecg"][0]),
    )
    assert code == 0
    objs = [json.loads(line) for line in out.splitlines()]
    assert len(objs) == 2
    xray, ecg = objs
    assert xray["files"] == [files["jpg"][0].name]  # folders carry patient ids: never printed
    assert "research use only" in xray["research_use_notice"].lower()
    assert "SYNTHETIC" in xray["trained_on"]
    labels = xray["labels"]
    p = dict(zip(labels, xray["probabilities"]))
    assert p["Cardiomegaly"] is not None and p["AFIB"] is None  # ECG label, no ECG given
    q = dict(zip(labels, ecg["probabilities"]))
    assert q["AFIB"] is not None and q["Cardiomegaly"] is None
    assert set(xray["per_modality"]) == {"xray"}


def test_unreadable_file_fails_that_study_only(
    tiny_bundle: Path,
    tmp_path: Path,
    files: dict[str, list[Path]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    code, out, err = _run(
        capsys, "--bundle", str(tiny_bundle), "--each", str(broken), str(files["jpg"][0])
    )
    assert code == 1
    assert "broken.png" in err and out.count("study ") == 1


def test_no_finding_is_scored_from_normal_vs_abnormal_prompts(
    tiny_bundle: Path, files: dict[str, list[Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    """CheXzero issue #19: templating "No Finding" ("no no finding") inverts it. The bundle
    ships prompt sets where No Finding's positives describe a normal study and its negatives
    describe findings, and the CLI's probability is exactly that pair's softmax."""
    from medclip.inference import Predictor

    labels = json.loads((tiny_bundle / "labels.json").read_text())
    sets = {s["label"]: s for s in labels["zeroshot"]["prompt_sets"]}
    nf = sets["No Finding"]
    assert nf["is_normal"]
    assert not any("finding" in p for p in nf["positive"] + nf["negative"])
    assert any("normal" in p or "clear" in p for p in nf["positive"])
    assert {"cardiomegaly.", "pleural effusion."} <= set(nf["negative"])
    assert all(p.startswith(("no ", "there is no ")) for p in sets["Edema"]["negative"])

    code, out, _ = _run(capsys, "--bundle", str(tiny_bundle), "--json", str(files["jpg"][0]))
    assert code == 0
    res = json.loads(out)
    got = dict(zip(res["labels"], res["probabilities"]))["No Finding"]
    pred = Predictor.from_path(tiny_bundle)
    emb = pred.embed_xray(files["jpg"][0])
    clf = pred.classifier
    j = clf.labels.index("No Finding")
    x = emb / np.linalg.norm(emb)
    scale = clf.logit_scale / clf.cfg.temperature
    s_pos = scale * float(x @ clf.pos[j].numpy())
    s_neg = scale * float(x @ clf.neg[j].numpy())
    assert got == pytest.approx(1 / (1 + np.exp(s_neg - s_pos)), abs=1e-5)
