"""CaseIndex: exact/HNSW/IVF search, modality filters, incremental add, atomic save/load."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from medclip import retrieval
from medclip.retrieval import (
    CaseIndex,
    CaseIndexError,
    CaseRecord,
    IndexParams,
    RetrievalHit,
    normalize_rows,
)

DIM = 16


def _data(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _cases(n: int, modality: str = "xray", start: int = 0) -> list[CaseRecord]:
    return [
        CaseRecord(
            case_id=f"{modality}-{start + i}",
            modality=modality,
            labels=("Edema",) if i % 2 else (),
            report=f"report {start + i}",
            preview_path=f"previews/{modality}-{start + i}.png",
        )
        for i in range(n)
    ]


def _brute(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    sim = normalize_rows(q) @ normalize_rows(x).T
    return np.argsort(-sim, axis=1)[:, :k]


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_search_matches_brute_force(kind: str) -> None:
    x, q = _data(400), _data(20, seed=1)
    params = IndexParams(ivf_nlist=4, ivf_nprobe=4, hnsw_ef_search=128)  # ivf: all lists
    index = CaseIndex.from_embeddings(x * 3.0, _cases(400), kind=kind, params=params)
    assert index.kind_of("xray") == kind
    scores, rows = index.search_ids(q, k=5)
    truth = _brute(x, q, 5)
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(rows, truth)])
    assert overlap >= (1.0 if kind != "hnsw" else 0.95)
    np.testing.assert_allclose(
        scores[:, 0], (normalize_rows(q) * normalize_rows(x)[rows[:, 0]]).sum(1), rtol=1e-5
    )
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_hits_carry_case_records_and_accept_torch() -> None:
    x = _data(30)
    index = CaseIndex.from_embeddings(torch.from_numpy(x), _cases(30))
    hits = index.search(torch.from_numpy(x[7]), k=3)
    assert isinstance(hits[0], RetrievalHit)
    assert hits[0].case_id == "xray-7" and hits[0].rank == 1 and hits[0].row == 7
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].case.preview_path == "previews/xray-7.png"
    assert [h.rank for h in hits] == [1, 2, 3]


def test_modality_filter_and_cross_modal_rows() -> None:
    rng = np.random.default_rng(2)
    xr, ecg, txt = (rng.standard_normal((n, DIM)).astype(np.float32) for n in (20, 15, 10))
    index = CaseIndex(DIM, kind="exact")
    index.add(np.concatenate([xr[:10], ecg[:5]]), _cases(10, "xray") + _cases(5, "ecg"))
    index.add(txt, _cases(10, "text"))
    index.add(np.concatenate([ecg[5:], xr[10:]]), _cases(10, "ecg", 5) + _cases(10, "xray", 10))
    assert len(index) == 45 and set(index.modalities) == {"xray", "ecg", "text"}
    # text -> ECG: the query is an ECG's own vector, so that ECG must come first
    hits = index.search(ecg[12], k=4, modality="ecg")
    assert hits[0].case_id == "ecg-12" and all(h.modality == "ecg" for h in hits)
    assert index.cases[hits[0].row].case_id == "ecg-12"
    hits = index.search(xr[3], k=50, modality=["text", "xray"])
    assert len(hits) == 30 and {h.modality for h in hits} == {"text", "xray"}
    assert hits[0].case_id == "xray-3"
    assert index.search(xr[0], k=3, modality="ecg")[0].modality == "ecg"
    with pytest.raises(ValueError, match="unknown modality"):
        index.search(xr[0], modality="mri")


def test_k_larger_than_index_pads_missing() -> None:
    index = CaseIndex.from_embeddings(_data(3), _cases(3), kind="exact")
    scores, rows = index.search_ids(_data(2, 5), k=5)
    assert (rows[:, 3:] == -1).all() and np.isinf(scores[:, 3:]).all()
    assert len(index.search(_data(1, 6)[0], k=5)) == 3


def test_auto_switches_to_hnsw_at_threshold_incrementally() -> None:
    params = IndexParams(auto_threshold=50)
    index = CaseIndex(DIM, params=params)
    x = _data(60)
    index.add(x[:40], _cases(40))
    assert index.kind_of("xray") == "exact"
    index.add(x[40:], _cases(20, start=40))
    assert index.kind_of("xray") == "hnsw"
    assert index.search(x[55], k=1)[0].case_id == "xray-55"
    assert index.search(x[5], k=1)[0].case_id == "xray-5"


def test_ivf_trains_lazily_and_accepts_later_adds() -> None:
    x = _data(300)
    index = CaseIndex(DIM, kind="ivf", params=IndexParams(ivf_nprobe=64))
    index.add(x[:200], _cases(200))
    assert index.search(x[10], k=1)[0].case_id == "xray-10"  # trains here
    index.add(x[200:], _cases(100, start=200))
    assert index.search(x[250], k=1)[0].case_id == "xray-250"


def test_save_load_round_trip_without_pickle(tmp_path: Path) -> None:
    x = np.concatenate([_data(80), _data(20, 9)])
    cases = _cases(80) + _cases(20, "ecg")
    index = CaseIndex.from_embeddings(x, cases, kind="hnsw")
    out = index.save(tmp_path / "idx")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["cases.jsonl", "ecg.faiss", "index.json", "xray.faiss"]
    assert not any(p.suffix in (".pkl", ".pickle", ".pt") for p in out.iterdir())
    meta = json.loads((out / "index.json").read_text())
    assert meta["shards"]["ecg"] == {"file": "ecg.faiss", "kind": "hnsw", "n": 20}
    loaded = CaseIndex.load(out)
    assert loaded.cases == index.cases and loaded.kind_of("ecg") == "hnsw"
    q = _data(5, 3)
    np.testing.assert_array_equal(loaded.search_ids(q, 5)[1], index.search_ids(q, 5)[1])
    # still incremental after loading
    loaded.add(_data(1, 11), _cases(1, "text"))
    assert loaded.search(_data(1, 11)[0], 1)[0].case_id == "text-0"
    assert not list(tmp_path.glob(".idx*"))  # no temp or backup folders left behind


def test_failed_save_keeps_previous_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = _data(50)
    CaseIndex.from_embeddings(x[:20], _cases(20), kind="exact").save(tmp_path / "idx")
    bigger = CaseIndex.from_embeddings(x, _cases(50), kind="exact")
    real_write = faiss.write_index

    def write_then_die(index: object, path: str) -> None:
        real_write(index, path)  # half the work is done when the "kill" arrives
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(retrieval.faiss, "write_index", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        bigger.save(tmp_path / "idx")
    monkeypatch.undo()
    assert len(CaseIndex.load(tmp_path / "idx")) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_failed_swap_restores_previous_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = _data(30)
    CaseIndex.from_embeddings(x[:10], _cases(10)).save(tmp_path / "idx")
    real_replace = retrieval.os.replace
    calls = []

    def replace(src: str, dst: str) -> None:
        calls.append(src)
        if len(calls) == 2:  # moving the new folder into place
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(retrieval.os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"):
        CaseIndex.from_embeddings(x, _cases(30)).save(tmp_path / "idx")
    monkeypatch.undo()
    assert len(CaseIndex.load(tmp_path / "idx")) == 10


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CaseIndexError, match=r"index\.json"):
        CaseIndex.load(tmp_path / "nothing")
    out = CaseIndex.from_embeddings(_data(10), _cases(10)).save(tmp_path / "idx")
    lines = (out / "cases.jsonl").read_text().splitlines()
    (out / "cases.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(CaseIndexError, match=r"cases\.jsonl"):
        CaseIndex.load(out)
    (out / "index.json").write_text("{not json")
    with pytest.raises(CaseIndexError, match="unreadable"):
        CaseIndex.load(out)


def test_input_validation() -> None:
    index = CaseIndex(DIM)
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.full((1, DIM), np.nan), _cases(1))
    with pytest.raises(ValueError, match="zero"):
        index.add(np.zeros((1, DIM)), _cases(1))
    with pytest.raises(ValueError, match="case records"):
        index.add(_data(2), _cases(1))
    with pytest.raises(ValueError, match=r"\(N, 16\)"):
        index.add(np.ones((1, 3)), _cases(1))
    with pytest.raises(ValueError, match="modality"):
        CaseRecord("a", "mri")
    with pytest.raises(ValueError, match="kind"):
        CaseIndex(DIM, kind="lsh")
