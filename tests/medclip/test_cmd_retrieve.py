"""``medclip index build`` / ``index info`` / ``retrieve`` end to end on the tiny bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamodules.sources import load_studies
from medclip.cli import main


@pytest.fixture(scope="module")
def index_dir(
    tiny_bundle: Path, tiny_synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("retrieve") / "index"
    code = main(
        [
            "index",
            "build",
            "--bundle",
            str(tiny_bundle),
            "--data",
            str(tiny_synthetic_root),
            "--limit",
            "8",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    return out


def _retrieve(capsys: pytest.CaptureFixture[str], bundle: Path, index: Path, *args: str) -> dict:
    capsys.readouterr()
    code = main(["retrieve", "--bundle", str(bundle), "--index", str(index), "--json", *args])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_index_build_and_info(index_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["index", "info", str(index_dir)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cases"] > 8 and set(info["per_modality"]) == {"xray", "ecg", "text"}
    assert set(info["kinds"].values()) == {"exact"}


def test_ecg_query_finds_itself_first(
    tiny_bundle: Path,
    tiny_synthetic_root: Path,
    index_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    study = next(s for s in load_studies("synthetic", tiny_synthetic_root)[:8] if s.ecg_path)
    out = _retrieve(
        capsys,
        tiny_bundle,
        index_dir,
        "--query",
        str(study.ecg_path),
        "-k",
        "3",
        "--modality",
        "ecg",
    )
    assert out["query_modality"] == "ecg"
    hits = out["hits"]
    assert len(hits) == 3 and all(h["modality"] == "ecg" for h in hits)
    assert hits[0]["case_id"] == str(study.extra["ecg_study_id"])
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert "research" in out["research_use_notice"].lower()


def test_cross_modal_queries(
    tiny_bundle: Path,
    tiny_synthetic_root: Path,
    index_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    study = next(s for s in load_studies("synthetic", tiny_synthetic_root)[:8] if s.xray_path)
    to_reports = _retrieve(
        capsys,
        tiny_bundle,
        index_dir,
        "--query",
        str(study.xray_path),
        "-k",
        "2",
        "--modality",
        "text",
    )
    assert to_reports["query_modality"] == "xray"
    assert {h["modality"] for h in to_reports["hits"]} == {"text"}
    assert all(h["report"] for h in to_reports["hits"])
    text_to_ecg = _retrieve(
        capsys,
        tiny_bundle,
        index_dir,
        "--query",
        "atrial fibrillation with rapid ventricular response",
        "-k",
        "4",
        "--modality",
        "ecg",
    )
    assert text_to_ecg["query_modality"] == "text"
    assert len(text_to_ecg["hits"]) == 4
    assert {h["modality"] for h in text_to_ecg["hits"]} == {"ecg"}
    any_modality = _retrieve(capsys, tiny_bundle, index_dir, "--query", "cardiomegaly", "-k", "30")
    assert {h["modality"] for h in any_modality["hits"]} == {"xray", "ecg", "text"}


def test_plain_output_lists_id_modality_score_labels(
    tiny_bundle: Path, index_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code = main(
        [
            "retrieve",
            "--bundle",
            str(tiny_bundle),
            "--index",
            str(index_dir),
            "--query",
            "pleural effusion",
            "-k",
            "2",
            "--modality",
            "xray",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "Research use only" in out
    assert out.count("[xray]") == 2 and "score" in out and "labels:" in out


def test_default_index_lives_in_the_bundle(
    tiny_bundle_copy: Path, tiny_synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "index",
        "build",
        "--bundle",
        str(tiny_bundle_copy),
        "--data",
        str(tiny_synthetic_root),
        "--limit",
        "3",
        "--no-previews",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert (tiny_bundle_copy / "index" / "index.json").is_file()
    assert main([*argv, "--append"]) == 0
    assert "already indexed, skipped" in capsys.readouterr().out
    capsys.readouterr()
    code = main(
        ["retrieve", "--bundle", str(tiny_bundle_copy), "--query", "edema", "-k", "1", "--json"]
    )
    assert code == 0 and len(json.loads(capsys.readouterr().out)["hits"]) == 1


def test_missing_index_is_a_clear_error(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "retrieve",
            "--bundle",
            str(tiny_bundle),
            "--index",
            str(tmp_path / "none"),
            "--query",
            "edema",
        ]
    )
    assert code == 2
    assert "medclip index build" in capsys.readouterr().err
