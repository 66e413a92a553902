"""Fine-tuning: data loading (dedup, patient groups), grouped CV, the classifier bundle, CLI.

Uses small subsets of the real Kermany X-rays (read in place, linked into tmp folders) and the
real CinC ECG records. AUROC is not asserted here: on 20-40 images with the tiny 2-step bundle
it is not robust (the full-set number is measured by benchmarks/bench_finetune_kermany.py).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from medclip.cli import main
from medclip.errors import MedclipError
from medclip.finetune import (
    FinetuneConfig,
    cv_folds,
    finetune,
    load_classifier,
    load_ecg_csv,
    load_finetune_data,
    load_image_folder,
    tower_blocks,
)


@pytest.fixture(scope="module")
def kermany(real_cxr_dir: Path) -> Path:
    return real_cxr_dir / "kermany_test_224"


def _subset_tree(kermany: Path, out: Path, n_per_class: int, seed: int = 0) -> Path:
    """An ImageFolder of symlinks to ``n_per_class`` images per class (+ a labels.csv)."""
    table = pd.read_csv(kermany / "labels.csv", dtype=str, keep_default_na=False)
    rng = np.random.default_rng(seed)
    rows = []
    for label in ("NORMAL", "PNEUMONIA"):
        pool = table[(table["label"] == label) & (table["duplicate_of"] == "")]
        rows.append(pool.iloc[np.sort(rng.choice(len(pool), n_per_class, replace=False))])
    chosen = pd.concat(rows)
    for rel in chosen["file"]:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).symlink_to(kermany / rel)
    chosen.to_csv(out / "labels.csv", index=False)
    return out


def test_image_folder_drops_duplicates_and_groups_patients(kermany: Path) -> None:
    data = load_image_folder(kermany)
    assert data.classes == ("NORMAL", "PNEUMONIA")
    assert len(data) == 313 - 3 and data.dropped_duplicates == 3
    names = [p.name for p in data.paths]
    assert ("NORMAL2-IM-0095-0001.jpeg" in names) != ("NORMAL2-IM-0096-0001.jpeg" in names)
    assert "person128_bacteria_606.jpeg" in names and "person128_bacteria_607.jpeg" not in names
    assert len(set(data.groups)) < len(data)  # several images per patient
    for tr, te in cv_folds(data, 5, seed=0):
        assert not {data.groups[i] for i in tr} & {data.groups[i] for i in te}
        assert set(data.labels[te]) == {0, 1}  # stratified


def test_finetune_cli_writes_a_loadable_classifier_bundle(
    tiny_bundle: Path,
    kermany: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tree = _subset_tree(kermany, tmp_path / "tree", 12)
    out = tmp_path / "clf"
    code = main(
        [
            "finetune",
            "--bundle",
            str(tiny_bundle),
            "--data",
            str(tree),
            "--out",
            str(out),
            "--folds",
            "3",
            "--n-boot",
            "20",
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "3-fold CV AUROC (PNEUMONIA)" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["n"] == 24 and report["folds"] == 3
    assert len(report["fold_auroc"]) == 3
    assert report["cv"]["binary_auroc"]["positive_class"] == "PNEUMONIA"
    auc = report["cv"]["binary_auroc"]["auroc"]
    assert 0.0 <= auc <= 1.0
    assert "Research use only" in (out / "report.md").read_text()
    assert (out / "roc_finetune.png").is_file()
    assert not [p for p in out.rglob("*") if p.suffix in (".pkl", ".pt", ".ckpt", ".bin")]

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    clf = load_classifier(out)
    assert clf.classes == ("NORMAL", "PNEUMONIA") and clf.modality == "xray"
    files = sorted(tree.rglob("*.jpeg"))[:3]
    p = clf.predict_proba(files)
    assert p.shape == (3, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)


def test_ecg_csv_finetune_on_real_records(
    tiny_loaded_bundle: Any, real_ecg_dir: Path, tmp_path: Path
) -> None:
    records = sorted((real_ecg_dir / "cinc2021").glob("*.hea"))
    rows = [
        {"path": str(r.with_suffix("")), "label": "ptbxl" if r.name.startswith("HR") else "chapman"}
        for r in records
    ]
    csv = tmp_path / "ecgs.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    data = load_finetune_data(csv)
    assert data.modality == "ecg" and data.classes == ("chapman", "ptbxl")
    res = finetune(
        tiny_loaded_bundle,
        data,
        None,
        FinetuneConfig(folds=2, n_boot=10, features="embedding", progress=False),
    )
    assert res.out_dir is None and res.oof_proba.shape == (len(records), 2)
    assert not np.isnan(res.oof_proba).any()
    assert res.report["data"]["per_class"] == {"chapman": 21, "ptbxl": 10}
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\nx,y\n")
    with pytest.raises(MedclipError, match="path"):
        load_ecg_csv(bad)


def test_last_block_finetuning_changes_only_the_last_block(
    tiny_loaded_bundle: Any, tiny_bundle: Path, kermany: Path, tmp_path: Path
) -> None:
    tree = _subset_tree(kermany, tmp_path / "tree", 8, seed=1)
    out = tmp_path / "clf"
    cfg = FinetuneConfig(folds=2, n_boot=10, train_blocks=1, epochs=1, batch_size=8, progress=False)
    finetune(tiny_loaded_bundle, load_image_folder(tree), out, cfg)
    base = load_file(str(tiny_bundle / "model.safetensors"))
    tuned = load_file(str(out / "model.safetensors"))
    blocks = tower_blocks(tiny_loaded_bundle.model.towers["xray"])
    last = len(blocks) - 1
    changed = {
        k.split(".blocks.")[1].split(".")[0]
        for k in base
        if ".blocks." in k
        and k.startswith("towers.xray")
        and not np.allclose(base[k].numpy(), tuned[k].numpy())
    }
    assert changed == {str(last)}
    text_keys = [k for k in base if k.startswith("towers.text")]
    assert all(np.array_equal(base[k].numpy(), tuned[k].numpy()) for k in text_keys)


def test_bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.png").write_bytes(b"")
    with pytest.raises(MedclipError, match="at least two"):
        load_image_folder(tmp_path)
    with pytest.raises(MedclipError, match="expected a folder"):
        load_finetune_data(tmp_path / "missing.txt")
    with pytest.raises(ValueError):
        FinetuneConfig(folds=1)
