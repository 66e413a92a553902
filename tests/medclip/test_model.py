"""MedclipModel: real tiny towers, heads, masking of absent rows, temperature."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from datamodules.types import Batch
from medclip.config import ModelConfig, TowerConfig
from medclip.heads import ProjectionHead
from medclip.model import MedclipModel

TINY = {
    "xray": TowerConfig("xray_vit_tiny_dropkey"),
    "ecg": TowerConfig("ecg_resnet1d18", {"width": 8, "layers": [1, 1, 1, 1]}),
    "text": TowerConfig("text_tiny_random", {"tiny_layers": 1, "max_length": 32}),
}


def tiny_model_config(**kw: object) -> ModelConfig:
    return ModelConfig(**TINY, embed_dim=16, **kw)  # type: ignore[arg-type]


def make_batch(present: list[list[int]], seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    b = len(present)
    texts = ["no acute findings", "cardiomegaly", "sinus rhythm", "pleural effusion", "edema"]
    pres = torch.tensor(present, dtype=torch.bool)
    return Batch(
        xray=torch.randn(b, 1, 64, 64, generator=g),
        ecg=torch.randn(b, 12, 1000, generator=g),
        text=[texts[i % len(texts)] if pres[i, 2] else "" for i in range(b)],
        present=pres,
        labels=torch.zeros(b, 2),
        study_ids=[f"s{i}" for i in range(b)],
    )


@pytest.fixture(scope="module")
def model() -> MedclipModel:
    torch.manual_seed(0)
    return MedclipModel(tiny_model_config())


def test_towers_come_from_the_registry_with_heads_into_the_shared_space(
    model: MedclipModel,
) -> None:
    assert set(model.towers) == {"xray", "ecg", "text"} == set(model.heads)
    for key, head in model.heads.items():
        assert head.in_dim == model.towers[key].output_dim
        assert head.out_dim == 16
    assert model.input_specs()["ecg"].length == 1000
    assert model.input_specs()["xray"].image_size == 64


def test_embeddings_are_unit_norm_and_absent_rows_are_masked(model: MedclipModel) -> None:
    model.eval()
    batch = make_batch([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 1]])
    with torch.no_grad():
        out = model(batch)
    assert out.masks["xray"].tolist() == [True, True, False, True]
    assert out.masks["ecg"].tolist() == [True, False, True, True]
    assert out.masks["text"].tolist() == [True, True, False, True]
    for key, emb in out.emb.items():
        assert emb.shape == (4, 16) and emb.dtype == torch.float32
        norms = emb.norm(dim=1)
        m = out.masks[key]
        assert torch.allclose(norms[m], torch.ones(int(m.sum())), atol=1e-5)
        assert torch.all(norms[~m] == 0)


def test_absent_rows_do_not_change_present_rows(model: MedclipModel) -> None:
    model.eval()
    full = make_batch([[1, 1, 1]] * 4)
    part = make_batch([[1, 1, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]])
    with torch.no_grad():
        a, b = model(full), model(part)
        direct = model.encode_xray(full.xray[[0, 2]])
        text = model.encode_text([full.text[0], full.text[2]])
    assert torch.allclose(a.emb["xray"][[0, 2]], b.emb["xray"][[0, 2]], atol=1e-5)
    assert torch.allclose(a.emb["xray"][[0, 2]], direct, atol=1e-5)
    assert torch.allclose(a.emb["text"][[0, 2]], text, atol=1e-5)
    assert torch.allclose(a.emb["ecg"][[0, 2, 3]], b.emb["ecg"][[0, 2, 3]], atol=1e-5)


def test_encode_text_accepts_strings_or_tokens(model: MedclipModel) -> None:
    model.eval()
    texts = ["cardiomegaly", "no pleural effusion seen"]
    with torch.no_grad():
        a = model.encode_text(texts)
        b = model.encode_text(model.tokenize(texts))
        raw = model.encode_text(texts, normalize=False)
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(torch.nn.functional.normalize(raw, dim=1), a, atol=1e-6)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(2))


def test_single_row_is_dropped_in_training_with_batchnorm(model: MedclipModel) -> None:
    model.train()
    out = model(make_batch([[1, 1, 1], [0, 1, 1], [0, 1, 1]]))
    assert out.masks["xray"].tolist() == [False, False, False]  # 1 row cannot train BN
    assert out.masks["ecg"].tolist() == [True, True, True]
    model.eval()


def test_logit_scale_is_learnable_and_clamped() -> None:
    m = MedclipModel(tiny_model_config(logit_scale_init=1 / 0.07, logit_scale_max=100.0))
    assert isinstance(m.logit_scale, nn.Parameter) and m.logit_scale.requires_grad
    assert math.isclose(m.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    with torch.no_grad():
        m.logit_scale.fill_(7.0)
    assert math.isclose(m.scale().item(), math.log(100.0), rel_tol=1e-6)
    m.clamp_logit_scale_()
    assert math.isclose(m.logit_scale.item(), math.log(100.0), rel_tol=1e-6)


def test_separate_text_towers_have_their_own_weights() -> None:
    m = MedclipModel(tiny_model_config(text_towers="separate")).eval()
    assert {"text_xray", "text_ecg"} <= set(m.towers) and "text" not in m.towers
    rad = {id(p) for p in m.towers["text_xray"].parameters()}
    card = {id(p) for p in m.towers["text_ecg"].parameters()}
    assert not rad & card
    with torch.no_grad():
        out = m(make_batch([[1, 1, 1], [1, 1, 1], [1, 1, 0]]))
        a = m.encode_text(["sinus rhythm"], target="xray")
        b = m.encode_text(["sinus rhythm"], target="ecg")
    assert set(out.emb) == {"xray", "ecg", "text_xray", "text_ecg"} == set(m.embedding_keys())
    assert out.masks["text_ecg"].tolist() == [True, True, False]
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="target"):
        m.text_key("cxr")  # type: ignore[arg-type]


def test_per_modality_reports_pair_with_their_own_modality() -> None:
    m = MedclipModel(tiny_model_config(text_mode="per_modality")).eval()
    batch = make_batch([[1, 1, 1], [1, 1, 1], [1, 1, 1]])
    with torch.no_grad():
        combined = m(batch)  # no per-modality texts -> combined report for both
        batch.text_by_modality = {  # type: ignore[attr-defined]
            "xray": ["cardiomegaly", "", "clear lungs"],
            "ecg": ["sinus rhythm", "atrial fibrillation", ""],
        }
        split = m(batch)
    assert set(split.emb) == set(m.embedding_keys())
    assert torch.allclose(combined.emb["text_xray"], combined.emb["text_ecg"])
    assert split.masks["text_xray"].tolist() == [True, False, True]
    assert split.masks["text_ecg"].tolist() == [True, True, False]
    assert torch.allclose(split.emb["text_xray"][0], m.encode_text(["cardiomegaly"])[0], atol=1e-5)


@pytest.mark.parametrize("kind", ["mlp_bn", "mlp_ln", "linear"])
def test_head_variants(kind: str) -> None:
    head = ProjectionHead(12, 4, kind, hidden_dim=8)  # type: ignore[arg-type]
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert all(lin.bias is None for lin in linears)
    norms = [m for m in head.modules() if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm))]
    assert len(linears) == (1 if kind == "linear" else 2)
    assert len(norms) == (0 if kind == "linear" else 2)
    if kind == "mlp_bn":
        assert all(isinstance(n, nn.BatchNorm1d) for n in norms)
    assert head(torch.randn(3, 12)).shape == (3, 4)
    with pytest.raises(ValueError, match="head"):
        ProjectionHead(12, 4, "mlp")  # type: ignore[arg-type]


def test_grad_checkpointing_reaches_every_tower(model: MedclipModel) -> None:
    assert sorted(model.set_grad_checkpointing(True)) == ["ecg", "text", "xray"]
    model.train()
    out = model(make_batch([[1, 1, 1]] * 3))
    (out.emb["xray"].sum() + out.emb["ecg"].sum() + out.emb["text"].sum()).backward()
    grads = [p.grad for p in model.towers["xray"].parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    model.set_grad_checkpointing(False)
    model.zero_grad()
    model.eval()
