"""Model bundles (safetensors + JSON, atomic, offline) and safe checkpoint loading."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from medclip import bundle as bundle_mod
from medclip.bundle import export_bundle, load_bundle
from medclip.config import DataConfig, MedclipConfig, ModelConfig, TowerConfig
from medclip.errors import BundleError, UnsafeCheckpointError
from medclip.safe_load import atomic_torch_save, load_state_dict_file, safe_torch_load
from medclip.training import ContrastiveModule, load_contrastive_checkpoint

LABELS = ["Cardiomegaly", "Edema", "AFIB", "No Finding"]


def tiny_config(text_towers: str = "shared", text: TowerConfig | None = None) -> MedclipConfig:
    model = ModelConfig(
        xray=TowerConfig("xray_vit_tiny_dropkey", {"img_size": 32, "patch_size": 8}),
        ecg=TowerConfig("ecg_resnet1d18", {"width": 8, "layers": [1, 1, 1, 1], "length": 500}),
        text=text or TowerConfig("text_tiny_random", {"tiny_layers": 1, "max_length": 16}),
        text_towers=text_towers,  # type: ignore[arg-type]
        embed_dim=16,
    )
    return MedclipConfig(name="bundle-test", model=model, data=DataConfig(image_size=64))


def _perturb_lora(module: ContrastiveModule) -> None:
    """LoRA B starts at zero (merging would be a no-op); give it weight so merging matters."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in module.model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))


def _inputs() -> dict[str, Any]:
    g = torch.Generator().manual_seed(1)
    return {
        "xray": torch.randn(3, 1, 32, 32, generator=g),
        "ecg": torch.randn(3, 12, 500, generator=g),
        "text": ["cardiomegaly", "atrial fibrillation with rapid response", "no acute findings"],
    }


def _encode(model: Any, x: dict[str, Any], target: str = "xray") -> list[torch.Tensor]:
    model.eval()
    with torch.no_grad():
        return [
            model.encode_xray(x["xray"]),
            model.encode_ecg(x["ecg"]),
            model.encode_text(x["text"], target=target),
        ]


@pytest.fixture(scope="module")
def module() -> ContrastiveModule:
    torch.manual_seed(0)
    m = ContrastiveModule(tiny_config(), label_names=LABELS)
    _perturb_lora(m)
    return m.eval()


@pytest.fixture(scope="module")
def merged(module: ContrastiveModule, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("b") / "bundle"
    return export_bundle(module, out, metrics={"val/R@1_text2xray": 0.25})


def test_bundle_layout_and_preprocessing_follow_the_model(merged: Path) -> None:
    names = {p.name for p in merged.iterdir()}
    assert {"config.json", "model.safetensors", "labels.json", "card.md", "tokenizer"} <= names
    assert not list(merged.parent.glob(".bundle.tmp-*"))
    meta = json.loads((merged / "config.json").read_text())
    assert meta["format"] == "medclip-bundle" and meta["lora"] == "merged"
    pre = meta["preprocessing"]
    # from the towers (img_size 32, length 500), not from data.image_size=64
    assert pre["xray"] == {"image_size": 32, "mean": 0.5, "std": 0.25}
    assert pre["ecg"]["fs_hz"] == 100.0 and pre["ecg"]["length"] == 500
    assert pre["ecg"]["leads"][:3] == ["I", "II", "III"] and len(pre["ecg"]["leads"]) == 12
    assert meta["embed_dim"] == 16 and meta["towers"]["text"]["tokenizer"] == "tokenizer"
    assert (merged / "tokenizer" / "tokenizer_config.json").is_file()
    state = load_file(str(merged / "model.safetensors"))
    assert state and not any("lora_" in k for k in state)
    labels = json.loads((merged / "labels.json").read_text())
    assert labels["label_names"] == LABELS
    assert "Cardiomegaly" in labels["xray"] and "AFIB" in labels["ecg"]
    sets = {s["label"]: s for s in labels["zeroshot"]["prompt_sets"]}
    assert set(sets) == set(LABELS) and sets["Cardiomegaly"]["negative"]
    assert sets["No Finding"]["is_normal"]
    card = (merged / "card.md").read_text()
    assert "Research use only" in card and "SYNTHETIC DATA" in card
    assert "0.2500" in card and "merged" in card and "500 samples" in card


def test_merged_bundle_reproduces_the_embeddings(module: ContrastiveModule, merged: Path) -> None:
    b = load_bundle(merged)
    assert b.config.name == "bundle-test" and b.path == merged and b.prototypes is None
    assert not getattr(b.model.towers["text"], "has_lora", True)
    assert "Research use only" in b.card and b.labels["label_names"] == LABELS
    ecg_cfg, cxr_cfg = b.transform_configs()
    assert ecg_cfg.length == 500 and cxr_cfg.image_size == 32
    x = _inputs()
    for want, got in zip(_encode(module.model, x), _encode(b.model, x)):
        assert torch.allclose(want, got, atol=1e-5)
    assert b.model.scale().item() == pytest.approx(module.model.scale().item())


def test_load_needs_no_pickle(merged: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pickle(*a: Any, **k: Any) -> Any:
        raise AssertionError("load_bundle must not unpickle")

    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    assert load_bundle(merged).model is not None


def test_adapter_bundle_with_separate_text_towers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = ContrastiveModule(tiny_config("separate"), label_names=LABELS)
    _perturb_lora(m)
    out = export_bundle(m, tmp_path / "adapter", merge_lora=False)
    meta = json.loads((out / "config.json").read_text())
    assert meta["lora"] == "adapter"
    assert (out / "tokenizer").is_dir() and (out / "tokenizer_ecg").is_dir()
    assert any("lora_B" in k for k in load_file(str(out / "model.safetensors")))
    b = load_bundle(out)
    assert getattr(b.model.towers["text_ecg"], "has_lora", False)
    x = _inputs()
    for target in ("xray", "ecg"):
        want = _encode(m.model, x, target)
        got = _encode(b.model, x, target)
        assert all(torch.allclose(w, g, atol=1e-5) for w, g in zip(want, got))


def test_local_text_model_is_copied_into_the_bundle(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    from encoders.text import _tiny_tokenizer

    hf = tmp_path / "my-bert"
    tok = _tiny_tokenizer()
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    BertModel(cfg, add_pooling_layer=False).save_pretrained(str(hf))
    tok.save_pretrained(str(hf))
    text = TowerConfig("text_hf_lora", {"model_path": str(hf), "max_length": 16})
    m = ContrastiveModule(tiny_config(text=text), label_names=LABELS)
    out = export_bundle(m, tmp_path / "local")
    shutil.rmtree(hf)  # the bundle must not depend on the original folder
    b = load_bundle(out)
    assert b.config.model.text.kwargs["model_path"] == str(out / "text_model" / "text")
    x = _inputs()
    assert torch.allclose(_encode(m.model, x)[2], _encode(b.model, x)[2], atol=1e-5)


def test_export_is_atomic_and_refuses_to_clobber(
    module: ContrastiveModule, merged: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BundleError, match="already exists"):
        export_bundle(module, merged)

    def boom(*a: Any, **k: Any) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(bundle_mod, "_card", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export_bundle(module, tmp_path / "broken")
    assert not (tmp_path / "broken").exists()
    assert not list(tmp_path.glob(".broken.tmp-*"))
    # an overwrite that fails leaves the old bundle intact
    with pytest.raises(RuntimeError):
        export_bundle(module, merged, overwrite=True)
    assert load_bundle(merged).model is not None


def test_load_rejects_a_corrupt_or_foreign_bundle(merged: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(merged, bad)
    state = load_file(str(bad / "model.safetensors"))
    state.pop(next(iter(state)))
    from safetensors.torch import save_file

    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(BundleError, match="does not match"):
        load_bundle(bad)
    (bad / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(BundleError, match="not a medclip bundle"):
        load_bundle(bad)
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nope")


class _Exploit:
    """Pickles into a call that creates a marker file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


def test_malicious_pickle_checkpoints_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Exploit(marker)}, evil)
    with pytest.raises(UnsafeCheckpointError, match="refusing"):
        safe_torch_load(evil)
    with pytest.raises(UnsafeCheckpointError):
        load_state_dict_file(evil)
    with pytest.raises(UnsafeCheckpointError):
        load_contrastive_checkpoint(evil)
    with pytest.raises(UnsafeCheckpointError):
        export_bundle(evil, tmp_path / "never")
    assert not marker.exists()
    assert not (tmp_path / "never").exists()


def test_safe_loaders_read_plain_checkpoints(module: ContrastiveModule, tmp_path: Path) -> None:
    path = atomic_torch_save(
        {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)},
        tmp_path / "ok.ckpt",
    )
    assert not list(tmp_path.glob(".ok.ckpt.*"))
    assert set(load_state_dict_file(path)) == set(module.state_dict())
    again = load_contrastive_checkpoint(path)
    x = _inputs()
    for want, got in zip(_encode(module.model, x), _encode(again.model, x)):
        assert torch.allclose(want, got, atol=1e-6)


def test_export_with_explicit_config_keeps_the_trained_text_length(tmp_path: Path) -> None:
    """Regression: passing ``config=`` used to drop ``data.max_text_tokens`` from the text tower,
    so the exported bundle failed to load (position-embedding shape mismatch)."""
    from medclip.bundle import export_bundle, load_bundle
    from medclip.config import load_config
    from medclip.training import ContrastiveModule

    cfg = load_config("tiny", ["data.max_text_tokens=24"])
    module = ContrastiveModule(cfg)
    out = export_bundle(
        module, tmp_path / "b", config=load_config("tiny", ["data.max_text_tokens=24"])
    )
    bundle = load_bundle(out)
    assert bundle.config.model.text.kwargs["max_length"] == 24


@pytest.mark.parametrize("text_towers", ["shared", "separate"])
def test_reexporting_a_loaded_merged_bundle_round_trips(
    module: ContrastiveModule, tmp_path: Path, text_towers: str
) -> None:
    """load -> export -> load of a bundle whose LoRA was merged keeps ``lora: merged`` and
    gives identical embeddings (regression: the re-export said ``lora: none`` and its model
    could not be loaded)."""
    if text_towers == "shared":
        first = export_bundle(module, tmp_path / "first")
    else:
        torch.manual_seed(0)
        m = ContrastiveModule(tiny_config("separate"), label_names=LABELS)
        _perturb_lora(m)
        first = export_bundle(m.eval(), tmp_path / "first")
    loaded = load_bundle(first)
    again = export_bundle(loaded.model, tmp_path / "again", config=loaded.config)
    assert json.loads((again / "config.json").read_text())["lora"] == "merged"
    reloaded = load_bundle(again)
    from_bundle = load_bundle(export_bundle(loaded, tmp_path / "from-bundle"))
    assert from_bundle.labels["label_names"] == loaded.labels["label_names"] == LABELS
    x = _inputs()
    for target in ("xray", "ecg"):
        want = _encode(loaded.model, x, target)
        for other in (reloaded, from_bundle):
            got = _encode(other.model, x, target)
            assert all(torch.equal(a, b) for a, b in zip(want, got))
    assert (
        load_file(str(first / "model.safetensors")).keys()
        == load_file(str(again / "model.safetensors")).keys()
    )


def test_a_bare_model_exports_with_its_own_text_length(tmp_path: Path) -> None:
    """A model built straight from ``cfg.model`` (not through training) reloads: the bundle's
    text max_length comes from the model, not from ``data.max_text_tokens``."""
    from medclip.config import load_config
    from medclip.model import MedclipModel

    cfg = load_config("tiny")
    model = MedclipModel(cfg.model).eval()
    assert model.text_tower.config.max_length != cfg.data.max_text_tokens  # the case at hand
    bundle = load_bundle(export_bundle(model, tmp_path / "b", config=cfg))
    assert bundle.model.text_tower.config.max_length == model.text_tower.config.max_length
