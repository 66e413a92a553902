"""Presets load into typed dataclasses; overrides apply; errors name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from medclip.config import PRESETS, ConfigError, MedclipConfig, load_config


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load(preset: str) -> None:
    cfg = load_config(preset)
    assert isinstance(cfg, MedclipConfig)
    assert cfg.name == preset
    assert cfg.model.embed_dim > 0


def test_base_is_more_sized() -> None:
    cfg = load_config("base")
    assert cfg.model.xray.name == "xray_vit_b16_dropkey"
    assert cfg.model.embed_dim == 128
    assert cfg.trainer.precision == "bf16-mixed"


def test_overrides_apply_with_types() -> None:
    cfg = load_config("tiny", ["optim.lr_towers=3e-4", "trainer.max_steps=7", "loss.xray_ecg=0"])
    assert cfg.optim.lr_towers == pytest.approx(3e-4)
    assert cfg.trainer.max_steps == 7
    assert cfg.loss.xray_ecg == 0.0


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.embed_dimm=3", "model.embed_dimm"),
        ("optim.lr_towers=abc", "optim.lr_towers"),
        ("data.pairing=sometimes", "data.pairing"),
        ("model.embed_dim=0", "model.embed_dim"),
        ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches"),
    ],
)
def test_errors_name_the_bad_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("tiny", [override])


def test_yaml_file_and_roundtrip(tmp_path: Path) -> None:
    import yaml

    cfg = load_config("small")
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    again = load_config(path)
    assert again == cfg


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


def test_url_weights_refused() -> None:
    with pytest.raises(ConfigError, match="URL"):
        load_config("tiny", ["model.xray.pretrained_path=https://example.org/w.safetensors"])
