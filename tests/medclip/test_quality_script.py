"""Smoke test of ``benchmarks/bench_quality.py``: its pieces on hand-made embeddings, and the whole
pipeline (data, cache, capped training, export, evaluation, report) with the tiny preset for two
steps. No thresholds on quality: the tiny model learns nothing."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TINY_SETS = [
    "model.xray.kwargs={img_size: 32, patch_size: 8}",
    "model.ecg.kwargs={width: 8, layers: [1, 1, 1, 1], length: 250}",
    "model.text.kwargs={tiny_layers: 1, max_length: 32}",
    "data.batch_size=4",
    "data.num_workers=0",
    "trainer.max_steps=2",
    "trainer.accelerator=cpu",
]


@pytest.fixture(scope="module")
def bq() -> ModuleType:
    """The benchmark script imported as a module (``_common`` beside it on ``sys.path``)."""
    bench = str(REPO / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    spec = importlib.util.spec_from_file_location(
        "bench_quality", REPO / "benchmarks" / "bench_quality.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_retrieval_block_counts_ranks_and_chance(bq: ModuleType) -> None:
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(20, 8)).astype(np.float32)
    rows = np.arange(20)
    perfect = bq.retrieval_block(gallery.copy(), rows, gallery, rows, "text->xray")
    assert perfect.recall == {1: 1.0, 5: 1.0, 10: 1.0}
    assert perfect.chance == {1: 0.05, 5: 0.25, 10: 0.5}
    assert perfect.ratio(1) == pytest.approx(20.0) and perfect.mean_rank == 1.0
    # queries for only some studies, gallery rows in another order: targets follow the rows
    order = rng.permutation(20)
    part = bq.retrieval_block(gallery[[3, 7]], np.array([3, 7]), gallery[order], order, "t")
    assert part.n_queries == 2 and part.n_gallery == 20 and part.recall[1] == 1.0
    shuffled = bq.retrieval_block(gallery[::-1].copy(), rows, gallery, rows, "t")
    assert shuffled.recall[1] < 1.0


class _FakeClassifier:
    labels = ("A", "B", "C")

    def predict_proba(self, emb: Any, modality: str | None = None) -> torch.Tensor:
        x = torch.as_tensor(emb, dtype=torch.float32)
        return torch.sigmoid(x[:, :3])  # label j scored by embedding dim j


class _FakePredictor:
    classifier = _FakeClassifier()


def test_zeroshot_block_scores_labels_with_both_classes_only(bq: ModuleType) -> None:
    y = np.array([[1, 0, 1], [0, 0, 1], [1, 0, np.nan], [0, 0, 0]], dtype=np.float64)
    emb = np.zeros((4, 4), dtype=np.float32)
    emb[:, 0] = [2.0, -1.0, 1.0, -2.0]  # ranks A perfectly
    emb[:, 2] = [-1.0, 1.0, 0.0, 2.0]  # ranks C backwards
    block = bq.zeroshot_block(_FakePredictor(), emb, y, ["A", "B", "C"], "xray", n_boot=50)
    assert block.labels == ["A", "C"] and "B" in block.skipped  # B: no positives
    assert block.per_label["A"] == 1.0 and block.per_label["C"] == 0.0
    assert block.macro == pytest.approx(0.5)
    assert (block.n_pos["C"], block.n_neg["C"]) == (2, 1)  # NaN row ignored
    strict = bq.zeroshot_block(
        _FakePredictor(), emb, y, ["A", "B", "C"], "xray", min_class_count=2, n_boot=10
    )
    assert strict.labels == ["A"] and "C" in strict.skipped


def test_checks_compare_against_the_targets(bq: ModuleType) -> None:
    def zs(macro: float) -> Any:
        return bq.ZeroShotBlock("x", ["a"], {"a": macro}, {}, {}, {}, macro, (0, 1), {}, 10)

    def ret(r10: float) -> Any:
        return bq.RetrievalBlock(
            "t", 100, 100, {1: 0, 5: 0, 10: r10}, {1: 0.01, 5: 0.05, 10: 0.1}, 1.0, 1.0
        )

    good = bq.QualityResult(
        {"xray": zs(0.9), "ecg": zs(0.86)},
        {"text->xray": ret(0.5), "text->ecg": ret(0.6)},
        "test",
        100,
    )
    assert [ok for *_, ok in bq.checks(good)] == [True, True, True, True]
    bad = bq.QualityResult({"xray": zs(0.84)}, {"text->xray": ret(0.49)}, "test", 100)
    assert [ok for *_, ok in bq.checks(bad)] == [False, False, False, False]  # missing = FAIL


def test_whole_pipeline_with_the_tiny_preset(bq: ModuleType, tmp_path: Path) -> None:
    from datamodules.synthetic import generate

    data = tmp_path / "data"
    generate(data, n=10, seed=0, image_size=64, progress=False)
    assert bq.prepare_data(data, 10, 0) == data  # reused, not regenerated
    cfg = bq.build_config("tiny", 10, 0, 60.0, TINY_SETS)
    assert cfg.trainer.val_check_interval == 0 and cfg.data.synth_n == 10
    cache = bq.prepare_cache(cfg, data, tmp_path / "cache")
    assert (cache / "meta.json").is_file()
    # with in-run validation: its sanity check must not trip the time cap
    cfg = bq.build_config("tiny", 10, 0, 60.0, TINY_SETS, tmp_path / "cache", validate=True)
    assert cfg.trainer.val_check_interval == 1.0 and cfg.data.cache_dir
    info = bq.train(cfg, data, tmp_path / "run", 60.0)
    assert info.steps == 2 and 0.0 < info.train_s <= info.fit_s
    bundle = bq.export(tmp_path / "run", cfg)
    result = bq.evaluate(bundle, data, split="train", n_boot=20)
    assert result.n_studies >= 4
    for block in result.zeroshot.values():
        assert block.labels and all(0.0 <= v <= 1.0 for v in block.per_label.values())
        assert not set(block.labels) & set(block.skipped)
    r = result.retrieval["text->ecg"]
    assert r.n_gallery == result.n_studies and r.chance[1] == pytest.approx(1 / r.n_gallery)
    assert all(0.0 <= v <= 1.0 for v in r.recall.values())
    md = bq.render(
        result, info, preset="tiny", n=10, seed=0, sets=TINY_SETS, load_before="x", load_after="y"
    )
    assert md.count("| PASS |") + md.count("| FAIL |") == 4
    assert "text->xray" in md and f"{info.steps} optimizer steps" in md
    payload = json.loads(json.dumps(bq.to_json(result, info)))
    assert payload["train"]["steps"] == 2 and len(payload["checks"]) == 4
    macro = payload["zeroshot"]["xray"]["macro"]
    assert macro is None or math.isfinite(macro)
