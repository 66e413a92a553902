"""Predictor over a tiny random model in a stand-in bundle, on real X-ray and ECG files."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from datamodules.cxr_io import read_cxr
from datamodules.ecg_io import read_ecg
from datamodules.errors import MedclipDataError
from medclip.config import load_config
from medclip.inference import Predictor, preprocessing_from_bundle
from medclip.model import MedclipModel
from medclip.zeroshot import RESEARCH_USE_NOTICE, build_prompt_sets, class_embeddings

LABELS = ["No Finding", "Cardiomegaly", "AFIB", "NORM"]


@pytest.fixture(scope="module")
def bundle() -> SimpleNamespace:
    torch.manual_seed(0)
    cfg = load_config("tiny")
    model = MedclipModel(cfg.model).eval()
    labels = {"trained_on": "unit-test random weights", "thresholds": dict.fromkeys(LABELS, 0.0)}
    return SimpleNamespace(model=model, config=cfg, labels=labels, card="", path=Path("."))


@pytest.fixture(scope="module")
def predictor(bundle: SimpleNamespace) -> Predictor:
    return Predictor(bundle, labels=LABELS)


@pytest.fixture(scope="module")
def cxr_path(real_cxr_dir: Path) -> Path:
    return sorted((real_cxr_dir / "kermany_test_224" / "NORMAL").glob("*.jpeg"))[0]


@pytest.fixture(scope="module")
def ecg_path(real_ecg_dir: Path) -> Path:
    return real_ecg_dir / "ptbxl_native" / "records100" / "00000" / "00001_lr"


def test_preprocessing_follows_the_bundle(bundle: SimpleNamespace) -> None:
    ecg_cfg, cxr_cfg = preprocessing_from_bundle(bundle)
    specs = bundle.model.input_specs()
    assert cxr_cfg.image_size == (specs["xray"].image_size or bundle.config.data.image_size)
    assert ecg_cfg.fs_hz == (specs["ecg"].fs_hz or bundle.config.data.ecg_fs_hz)
    assert ecg_cfg.length == (specs["ecg"].length or bundle.config.data.ecg_length)


def test_zeroshot_on_real_files(predictor: Predictor, cxr_path: Path, ecg_path: Path) -> None:
    res = predictor.zeroshot(xray=cxr_path, ecg=str(ecg_path))
    assert res.labels == tuple(LABELS)
    assert set(res.per_modality) == {"xray", "ecg"}
    assert np.all((res.probabilities >= 0) & (res.probabilities <= 1))
    # X-ray labels come from the X-ray, ECG labels from the ECG
    assert res.probabilities[1] == pytest.approx(res.per_modality["xray"][1])
    assert res.probabilities[2] == pytest.approx(res.per_modality["ecg"][2])
    assert res.research_use_notice == RESEARCH_USE_NOTICE
    assert res.trained_on == "unit-test random weights"
    assert res.predicted == tuple(LABELS)  # thresholds 0.0 from the bundle
    ecg_only = predictor.zeroshot(ecg=ecg_path)
    assert np.isnan(ecg_only.probabilities[0]) and not np.isnan(ecg_only.probabilities[3])


def test_embeddings_accept_paths_objects_and_arrays(
    predictor: Predictor, cxr_path: Path, ecg_path: Path
) -> None:
    ex = predictor.embed_xray(cxr_path)
    assert ex.shape == (predictor.model.cfg.embed_dim,)
    assert np.linalg.norm(ex) == pytest.approx(1.0, abs=1e-5)
    cxr = read_cxr(cxr_path)
    np.testing.assert_allclose(predictor.embed_xray(cxr), ex, atol=1e-5)
    rgb = np.repeat((cxr.pixels * 255).round().astype(np.uint8)[..., None], 3, axis=2)
    np.testing.assert_allclose(predictor.embed_xray(rgb), ex, atol=2e-2)
    assert predictor.embed_xray([cxr_path, cxr]).shape == (2, ex.shape[0])

    ecg = read_ecg(ecg_path)
    assert ecg.fs == predictor.ecg_cfg.fs_hz  # records100: the array path needs no resampling
    ee = predictor.embed_ecg(ecg_path)
    np.testing.assert_allclose(predictor.embed_ecg(ecg), ee, atol=1e-5)
    np.testing.assert_allclose(predictor.embed_ecg(ecg.signal), ee, atol=1e-5)
    np.testing.assert_allclose(predictor.embed_ecg(torch.from_numpy(ecg.signal.T)), ee, atol=1e-5)

    et = predictor.embed_text(["cardiomegaly.", "normal ecg."])
    assert et.shape == (2, ex.shape[0])
    np.testing.assert_allclose(np.linalg.norm(et, axis=1), 1.0, atol=1e-5)


def test_input_problems(predictor: Predictor, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"expected \[0, 1\]"):
        predictor.embed_xray(np.linspace(0, 4000, 64 * 64, dtype=np.float32).reshape(64, 64))
    with pytest.raises(MedclipDataError, match="<array>"):
        predictor.embed_ecg(np.zeros((8, 1000)))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(MedclipDataError, match="broken.png"):
        predictor.zeroshot(xray=bad)
    with pytest.raises(ValueError, match="X-ray and/or an ECG"):
        predictor.zeroshot()


def test_prompt_sets_are_averaged_from_raw_projections(
    predictor: Predictor, bundle: SimpleNamespace
) -> None:
    sets = build_prompt_sets(LABELS, predictor.zeroshot_config)
    with torch.no_grad():
        pos, neg = class_embeddings(
            lambda t: bundle.model.encode_text(t, normalize=False), sets, average_raw=True
        )
    torch.testing.assert_close(predictor.classifier.pos, pos, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(predictor.classifier.neg, neg, atol=1e-5, rtol=1e-5)
    expected = float(bundle.model.scale().detach().exp())
    assert predictor.classifier.logit_scale == pytest.approx(expected)


def test_from_path_uses_load_bundle(
    bundle: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = types.ModuleType("medclip.bundle")
    seen: list[Path] = []

    def load_bundle(path: Path) -> SimpleNamespace:
        seen.append(Path(path))
        return bundle

    fake.load_bundle = load_bundle  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "medclip.bundle", fake)
    pred = Predictor.from_path(tmp_path)
    assert seen == [tmp_path]
    assert pred.labels[0] == "No Finding" and "AFIB" in pred.labels  # default vocabularies


def test_zeroshot_equals_embeddings_then_classify(
    predictor: Predictor, cxr_path: Path, ecg_path: Path
) -> None:
    got = predictor.zeroshot(xray=cxr_path, ecg=ecg_path)
    want = predictor.classifier.classify(
        xray=predictor.embed_xray(cxr_path), ecg=predictor.embed_ecg(ecg_path)
    )[0]
    np.testing.assert_allclose(got.probabilities, want.probabilities, rtol=1e-5, atol=1e-6)
    for m in ("xray", "ecg"):
        np.testing.assert_allclose(got.per_modality[m], want.per_modality[m], rtol=1e-5)
    only = predictor.zeroshot(ecg=ecg_path)
    np.testing.assert_allclose(only.per_modality["ecg"], want.per_modality["ecg"], rtol=1e-5)
    assert set(only.per_modality) == {"ecg"}
