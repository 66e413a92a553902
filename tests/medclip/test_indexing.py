"""Embedding a dataset and building the case index: rows, previews, append, no identifiers."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datamodules.sources import load_studies
from datamodules.types import Study
from medclip.errors import MedclipError
from medclip.indexing import (
    assets_dir,
    build_case_index,
    case_record,
    embed_studies,
    preview_file,
    read_build_info,
    report_snippet,
    safe_study_id,
)
from medclip.retrieval import CaseIndex


@pytest.fixture(scope="module")
def studies(tiny_synthetic_root: Path) -> list[Study]:
    return load_studies("synthetic", tiny_synthetic_root)


def test_report_snippet_drops_placeholders_and_cuts_at_words() -> None:
    text = "FINDINGS:  ___ year old.\n\n Mild   cardiomegaly. " + "word " * 100
    out = report_snippet(text, max_chars=60)
    assert "___" not in out and "  " not in out
    assert out.endswith(" ...") and len(out) <= 64
    assert report_snippet(None) == ""


def test_case_ids_never_carry_patient_ids() -> None:
    chexpert = Study("train/patient00042/study1/view1_frontal", "patient00042", Path("a.jpg"))
    sid = safe_study_id(chexpert)
    assert "patient" not in sid and "00042" not in sid and sid == safe_study_id(chexpert)
    mimic = Study(
        "50000001-40000001",
        "10000032",
        xray_path=Path("x.dcm"),
        ecg_path=Path("e"),
        labels={"Cardiomegaly": 1.0, "AFIB": 1.0, "Edema": float("nan"), "NORM": 0.0},
        extra={"cxr_study_id": 50000001, "ecg_study_id": 40000001, "cxr_report": "a ___ b"},
    )
    xr = case_record(mimic, "xray")
    ec = case_record(mimic, "ecg")
    assert (xr.case_id, ec.case_id) == ("50000001", "40000001")
    assert xr.labels == ("Cardiomegaly",) and ec.labels == ("AFIB",)
    assert xr.report == "a b" and xr.study_id == "50000001-40000001"


def test_embed_studies_returns_rows_per_modality(
    tiny_loaded_bundle: Any, studies: list[Study]
) -> None:
    sub = studies[:6]
    emb = embed_studies(tiny_loaded_bundle, sub, progress=False, batch_size=4)
    dim = tiny_loaded_bundle.config.model.embed_dim
    for m in ("xray", "ecg", "text"):
        vec, rows = emb.get(m)
        assert vec.shape[1] == dim and len(vec) == len(rows) > 0
        np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
        assert rows.max() < len(sub)
    dense = emb.dense("ecg")
    assert dense.shape == (6, dim)
    tower = embed_studies(
        tiny_loaded_bundle, sub[:2], modalities=("ecg",), features="tower", progress=False
    )
    out_dim = tiny_loaded_bundle.model.towers["ecg"].output_dim
    assert tower.get("ecg")[0].shape == (2, out_dim)


def _forbid_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


def test_build_index_rows_previews_and_no_identifiers(
    tiny_loaded_bundle: Any, studies: list[Study], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "index"
    sub = studies[:5]
    res = build_case_index(
        tiny_loaded_bundle, sub, out, previews=True, progress=False, dataset="synthetic"
    )
    assert res.n_total == sum(res.n_added.values())
    assert res.n_added["xray"] > 0 and res.n_added["ecg"] > 0 and res.n_added["text"] > 0
    assert set(res.kinds.values()) == {"exact"}
    _forbid_pickle(monkeypatch)
    index = CaseIndex.load(out)
    assert len(index) == res.n_total
    for case in index.cases:
        if case.modality in ("xray", "ecg"):
            png = preview_file(out, case)
            assert png is not None and png.suffix == ".png"
            assert png.parent.parent == assets_dir(out)
    raw = (out / "cases.jsonl").read_text() + json.dumps(read_build_info(out))
    for s in sub:
        assert s.subject_id not in raw  # subject ids never enter the index
    assert any(c.labels for c in index.cases) and any(c.report for c in index.cases)
    assert read_build_info(out)["bundle_sha256"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic, no leftovers


def test_append_adds_only_new_cases_and_checks_the_model(
    tiny_loaded_bundle: Any, studies: list[Study], tmp_path: Path
) -> None:
    out = tmp_path / "index"
    first = build_case_index(tiny_loaded_bundle, studies[:3], out, previews=False, progress=False)
    again = build_case_index(
        tiny_loaded_bundle, studies[:5], out, append=True, previews=False, progress=False
    )
    assert again.n_total > first.n_total
    assert sum(again.n_skipped.values()) == first.n_total  # the 3 old studies' cases
    ids = [(c.case_id, c.modality) for c in CaseIndex.load(out).cases]
    assert len(ids) == len(set(ids))  # nothing indexed twice
    same = build_case_index(
        tiny_loaded_bundle, studies[:5], out, append=True, previews=False, progress=False
    )
    assert sum(same.n_added.values()) == 0 and same.n_total == again.n_total
    assert sum(same.n_skipped.values()) == again.n_total
    assert len(read_build_info(out)["builds"]) == 3
    info_path = assets_dir(out) / "build.json"
    info = json.loads(info_path.read_text())
    info["bundle_sha256"] = "0" * 64  # pretend another model built it
    info_path.write_text(json.dumps(info))
    with pytest.raises(MedclipError, match="another model"):
        build_case_index(
            tiny_loaded_bundle, studies[5:7], out, append=True, previews=False, progress=False
        )


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_kind_flag_selects_the_faiss_index(
    kind: str, tiny_loaded_bundle: Any, studies: list[Study], tmp_path: Path
) -> None:
    res = build_case_index(
        tiny_loaded_bundle,
        studies[:4],
        tmp_path / kind,
        kind=kind,
        modalities=("ecg",),
        previews=False,
        progress=False,
    )
    assert res.kinds == {"ecg": kind}
    index = CaseIndex.load(tmp_path / kind)
    vec = embed_studies(tiny_loaded_bundle, studies[:1], modalities=("ecg",), progress=False).get(
        "ecg"
    )[0][0]
    hits = index.search(vec, k=2)
    assert hits[0].case.case_id == index.cases[0].case_id
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
