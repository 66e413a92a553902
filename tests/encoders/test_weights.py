"""Local pretrained weights: round trips, URL refusal, clear mismatch errors, no pickle."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest
import torch

from encoders.registry import create_encoder
from encoders.weights import (
    WeightsError,
    load_pretrained,
    read_state_dict,
    resolve_local_path,
    save_state_dict,
)

X = torch.randn(2, 12, 1000)


def _ecg(seed: int, **kw: object) -> Any:
    torch.manual_seed(seed)
    return create_encoder("ecg_resnet1d18", **{"width": 8, **kw}).eval()


def _outputs_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    with torch.no_grad():
        return torch.allclose(a(X), b(X))


def test_safetensors_round_trip_via_config(tmp_path: Path) -> None:
    src = _ecg(0)
    path = save_state_dict(src, tmp_path / "ecg.safetensors")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temp file
    assert not _outputs_equal(src, _ecg(1))
    loaded = _ecg(1, pretrained_path=str(path))
    assert _outputs_equal(src, loaded)


def test_torch_round_trip_with_wrappers(tmp_path: Path) -> None:
    src = _ecg(0)
    path = tmp_path / "ckpt.pt"
    wrapped = {f"module.{k}": v for k, v in src.state_dict().items()}  # DDP prefix
    torch.save({"state_dict": wrapped, "epoch": 3}, path)
    dst = _ecg(1)
    report = load_pretrained(dst, path)
    assert report.ok and len(report.loaded) == len(src.state_dict())
    assert _outputs_equal(src, dst)


def test_bare_backbone_state_dict_loads_into_tower(tmp_path: Path) -> None:
    src = _ecg(0)
    path = tmp_path / "backbone.safetensors"
    save_state_dict(src.backbone, path)
    dst = _ecg(1)
    dst.load_weights(str(path))
    assert _outputs_equal(src, dst)


def test_xray_and_text_towers_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    xray: Any = create_encoder("xray_vit_tiny_dropkey").eval()
    save_state_dict(xray, tmp_path / "x.safetensors")
    torch.manual_seed(1)
    xray2: Any = create_encoder(
        "xray_vit_tiny_dropkey", pretrained_path=str(tmp_path / "x.safetensors")
    )
    img = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(xray2.eval()(img), xray(img))

    torch.manual_seed(0)
    text: Any = create_encoder("text_tiny_random").eval()
    save_state_dict(text, tmp_path / "t.safetensors")
    torch.manual_seed(1)
    text2: Any = create_encoder("text_tiny_random", pretrained_path=str(tmp_path / "t.safetensors"))
    tokens = text.tokenize(["pleural effusion"])
    with torch.no_grad():
        torch.testing.assert_close(text2.eval()(**tokens), text(**tokens))


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/w.safetensors",
        "http://host/w.pt",
        "s3://bucket/w.pt",
        "hf-hub:timm/vit_base_patch16_224",
        "hf://org/model",
    ],
)
def test_urls_are_refused(url: str) -> None:
    with pytest.raises(WeightsError, match="never downloads"):
        resolve_local_path(url)
    with pytest.raises(WeightsError, match="never downloads"):
        create_encoder("ecg_resnet1d18", width=8, pretrained_path=url)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path / "nope.safetensors")
    odd = tmp_path / "w.npz"
    odd.write_bytes(b"0")
    with pytest.raises(WeightsError, match="unknown weights format"):
        read_state_dict(odd)


def test_corrupt_file_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match=r"bad\.safetensors: cannot read"):
        read_state_dict(bad)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "obj": collections.Counter(a=1)}, path)
    with pytest.raises(WeightsError, match=r"evil\.pt"):
        read_state_dict(path)


def test_shape_mismatch_names_keys_and_strict_false_loads_rest(tmp_path: Path) -> None:
    src = _ecg(0)
    path = save_state_dict(src, tmp_path / "w8.safetensors")
    with pytest.raises(WeightsError, match=r"shape mismatch .*backbone\.stem\.0\.0\.weight"):
        _ecg(1, width=16, pretrained_path=str(path))
    dst = _ecg(1, width=16)
    report = load_pretrained(dst, path, strict=False)
    assert report.mismatched and not report.ok
    assert ("backbone.stem.0.0.weight", (16, 12, 7), (8, 12, 7)) in report.mismatched
    assert report.loaded  # e.g. BN num_batches_tracked scalars still match


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    src = _ecg(0)
    state = dict(src.state_dict())
    state.pop("backbone.stem.0.1.weight")
    state["extra.head.weight"] = torch.zeros(2)
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        load_pretrained(_ecg(1), path)
    msg = str(info.value)
    assert "missing 1: backbone.stem.0.1.weight" in msg
    assert "unexpected 1: extra.head.weight" in msg
    assert str(path) in msg


def test_nothing_matching_is_an_error_even_non_strict(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"foo": torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match="no tensor matches"):
        load_pretrained(_ecg(0), path, strict=False)
