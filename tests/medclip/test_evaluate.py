"""Evaluation protocols on the tiny synthetic data: files, result shape, and the rules
(AUROC once over the full set, thresholds from validation only, benchmark preprocessing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medclip.cli import main
from medclip.eval_report import score_multilabel
from medclip.evaluate import EvalOptions, ptbxl_synonyms, ptbxl_window_features, run_evaluation

OPTS = EvalOptions(n_boot=20, progress=False, fractions=(1.0,), batch_size=16)


def _files_ok(out: Path, report: Any) -> dict[str, Any]:
    data = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    assert "Research use only" in md and data["research_use_notice"]
    assert list(out.glob("*.png")), "no figure written"
    assert data["protocol"] == report.protocol and data["results"]
    return data


def test_score_block_uses_full_set_auroc_and_validation_thresholds(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y_val, y_test = rng.integers(0, 2, (60, 2)).astype(float), rng.integers(0, 2, (80, 2))
    s_val, s_test = y_val + rng.normal(0, 0.8, y_val.shape), y_test + rng.normal(0, 0.8, (80, 2))
    labels = ["a", "b"]
    res, md, files = score_multilabel(
        "blk", y_test, s_test, labels, tmp_path, y_val=y_val, s_val=s_val, n_boot=50
    )
    for j, lab in enumerate(labels):  # one AUROC over all test rows
        assert res["auroc"]["per_label"][lab] == pytest.approx(
            roc_auc_score(y_test[:, j], s_test[:, j])
        )
    flipped = 1 - y_test  # other test labels must not move the thresholds
    res2, _, _ = score_multilabel(
        "blk2", flipped, s_test, labels, tmp_path, y_val=y_val, s_val=s_val, n_boot=50
    )
    assert res["f1"]["thresholds"] == res2["f1"]["thresholds"]
    assert res["f1"]["thresholds_from"] == "validation"
    lo, hi = res["auroc"]["macro_ci"]
    assert lo <= res["auroc"]["macro_auroc"] <= hi
    no_val, md3, _ = score_multilabel("blk3", y_test, s_test, labels, tmp_path, n_boot=5)
    assert no_val["f1"] is None and "F1 not reported" in md3[2]
    assert files and all(p.is_file() for p in files)


def test_ptbxl_prompts_come_from_scp_statements(real_ecg_dir: Path) -> None:
    import pandas as pd

    st = pd.read_csv(real_ecg_dir / "ptbxl_metadata" / "scp_statements.csv", index_col=0)
    every = ptbxl_synonyms(st, "all", list(st.index))
    assert len(every) == 71
    assert every["NDT"][0] == "non-diagnostic t abnormalities"
    sub = ptbxl_synonyms(st, "subdiagnostic", ["AMI", "_AVB"])
    assert "anterior myocardial infarction" in sub["AMI"]
    assert any("av block" in p for p in sub["_AVB"])
    sup = ptbxl_synonyms(st, "superdiagnostic", ["MI", "CD"])
    assert "myocardial infarction" in sup["MI"]


def test_ptbxl_probe_features_follow_the_benchmark(
    tiny_loaded_bundle: Any, tiny_synthetic_root: Path
) -> None:
    from datamodules.ecg_io import read_ecg
    from datamodules.ptbxl import load_ptbxl
    from datamodules.transforms import (
        EcgTransformConfig,
        fit_global_standardizer,
        preprocess_ecg,
    )

    index = load_ptbxl(tiny_synthetic_root / "ptb-xl")
    ids = list(index.records.index[:6])
    paths = [index.record_path(i, 100) for i in ids]
    train = np.array([True, True, True, False, False, False])
    feats, owner, info = ptbxl_window_features(tiny_loaded_bundle, paths, train, OPTS)
    assert info["window_s"] == pytest.approx(2.5) and info["stride_s"] == pytest.approx(1.25)
    assert info["aggregation"] == "max over windows"
    np.testing.assert_array_equal(np.bincount(owner), [7] * 6)  # 0, 1.25, ..., 7.5 s starts
    assert feats.shape == (42, tiny_loaded_bundle.model.towers["ecg"].output_dim)
    raw = EcgTransformConfig(fs_hz=100.0, length=1000, highpass_hz=0.0, standardize="none")
    arrays = [preprocess_ecg(read_ecg(p), raw) for p, t in zip(paths, train) if t]
    mean, std = fit_global_standardizer(arrays)  # training records only
    assert info["standardiser"]["mean_mv"] == pytest.approx(mean)
    assert info["standardiser"]["std_mv"] == pytest.approx(std)


def test_ptbxl_protocol(tiny_loaded_bundle: Any, tiny_synthetic_root: Path, tmp_path: Path) -> None:
    report = run_evaluation(
        "ptbxl", tiny_loaded_bundle, tiny_synthetic_root, tmp_path, OPTS, tasks=["superdiagnostic"]
    )
    data = _files_ok(tmp_path, report)
    res = data["results"]
    assert {"superdiagnostic/zeroshot", "superdiagnostic/probe_1"} <= set(res)
    zs = res["superdiagnostic/zeroshot"]
    assert set(zs["auroc"]["per_label"]) == {"CD", "HYP", "MI", "NORM", "STTC"}
    assert zs["labels_without_prompts"] == [] and zs["prompts_from"] == "scp_statements.csv"
    probe = res["superdiagnostic/probe_1"]
    assert probe["fraction"] == 1.0 and probe["n_train_windows"] == 7 * probe["n_train_records"]
    assert data["split"]["folds"]["test"] == "10"
    assert sum(data["split"]["records"].values()) >= zs["n"]


def test_xray_protocols(tiny_loaded_bundle: Any, tiny_synthetic_root: Path, tmp_path: Path) -> None:
    opts = EvalOptions(n_boot=10, progress=False, fractions=(1.0,), probe=True)
    rep = run_evaluation(
        "mimic-cxr", tiny_loaded_bundle, tiny_synthetic_root, tmp_path / "mimic", opts
    )
    data = _files_ok(tmp_path / "mimic", rep)
    assert len(data["results"]["mimic_cxr/zeroshot"]["auroc"]["per_label"]) == 14
    assert "mimic_cxr/probe_1" in data["results"]
    five = run_evaluation(
        "chexpert-5x200",
        tiny_loaded_bundle,
        tiny_synthetic_root,
        tmp_path / "five",
        opts,
        n_per_class=3,
    )
    data5 = _files_ok(tmp_path / "five", five)
    sel = data5["selection"]
    assert sel["seed"] == 0 and len(sel["paths_sha256"]) == 64
    again = run_evaluation(
        "chexpert-5x200",
        tiny_loaded_bundle,
        tiny_synthetic_root,
        tmp_path / "five2",
        opts,
        n_per_class=3,
    )
    assert again.header["selection"] == five.header["selection"]  # seeded selection
    z = data5["results"]["chexpert_5x200/zeroshot"]
    assert 0.0 <= z["accuracy"] <= 1.0 and z["confusion"]["classes"][0] == "Atelectasis"


def test_edema_and_retrieval(
    tiny_loaded_bundle: Any, tiny_synthetic_root: Path, tmp_path: Path
) -> None:
    rep = run_evaluation(
        "edema", tiny_loaded_bundle, tiny_synthetic_root, tmp_path / "e", OPTS, source="regex"
    )
    data = _files_ok(tmp_path / "e", rep)
    z = data["results"]["edema/zeroshot"]
    assert z["n"] >= 3 and set(z["ordinal"]) == {"spearman_expected_grade", "mae_argmax_grade"}
    assert len(z["confusion"]["rows_true_cols_pred"]) == 4
    rr = run_evaluation(
        "retrieval", tiny_loaded_bundle, tiny_synthetic_root, tmp_path / "r", OPTS, split=None
    )
    res = _files_ok(tmp_path / "r", rr)["results"]["retrieval"]
    assert {"text->xray", "xray->text", "ecg->xray"} <= set(res)
    for m in res.values():
        assert m["R@1"] <= m["R@5"] <= m["R@10"] <= 1.0
        assert 1.0 <= m["median_rank"] <= m["n_gallery"]


def test_cli_evaluate(
    tiny_bundle: Path, tiny_synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "evaluate",
            "chexpert",
            "--bundle",
            str(tiny_bundle),
            "--data",
            str(tiny_synthetic_root),
            "--out",
            str(tmp_path),
            "--n-boot",
            "10",
            "--threshold-rows",
            "10",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "chexpert/zeroshot: macro AUROC" in out and "research use only" in out
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["command"].startswith("medclip") and data["results"]["chexpert/zeroshot"]["f1"]
