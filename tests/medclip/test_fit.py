"""End-to-end training: ``fit()`` on real files, ``medclip fit`` / ``medclip export`` on the
synthetic dataset, safe resume, precision."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from datamodules.types import Batch, Study
from medclip.cli import main
from medclip.config import MedclipConfig, ModelConfig, TowerConfig, TrainerConfig, load_config
from medclip.errors import UnsafeCheckpointError
from medclip.fit import fit, resolve_precision

TINY_TOWERS = {
    "xray": TowerConfig("xray_vit_tiny_dropkey", {"img_size": 32, "patch_size": 8}),
    "ecg": TowerConfig("ecg_resnet1d18", {"width": 8, "layers": [1, 1, 1, 1], "length": 250}),
    "text": TowerConfig("text_tiny_random", {"tiny_layers": 1, "max_length": 32}),
}
TINY_SET = [
    "model.xray.kwargs={img_size: 32, patch_size: 8}",
    "model.ecg.kwargs={width: 8, layers: [1, 1, 1, 1], length: 250}",
    "model.text.kwargs={tiny_layers: 1, max_length: 32}",
    "data.image_size=32",
    "data.ecg_length=250",
    "data.synth_n=16",
    "data.batch_size=4",
    "trainer.max_steps=2",
    "trainer.accelerator=cpu",
]


def tiny_config(**trainer: Any) -> MedclipConfig:
    t = {"max_epochs": 1, "log_every_n_steps": 1, "accelerator": "cpu", **trainer}
    return MedclipConfig(
        name="fit-test", model=ModelConfig(**TINY_TOWERS, embed_dim=16), trainer=TrainerConfig(**t)
    )


def real_studies(real: Path) -> list[Study]:
    """Real CXR files paired with real ECG files (different people: a wiring test only)."""
    ecg = pd.read_csv(real / "ecg" / "manifest.csv")
    ecg = ecg[ecg["source"].str.contains("CinC")].head(10).reset_index(drop=True)
    cxr = pd.read_csv(real / "cxr" / "kermany_test_224" / "labels.csv")
    cxr = pd.concat([cxr[cxr.label == "NORMAL"].head(5), cxr[cxr.label != "NORMAL"].head(5)])
    studies = []
    for i, (e, c) in enumerate(
        zip(ecg.itertuples(), cxr.sample(frac=1, random_state=0).itertuples())
    ):
        dx = str(e.dx_names).replace("|", ", ")
        pneumonia = float(c.label != "NORMAL")
        studies.append(
            Study(
                study_id=f"s{i}",
                subject_id=f"p{i}",
                xray_path=real / "cxr" / "kermany_test_224" / str(c.file),
                ecg_path=real / str(e.path),
                report=f"{'pneumonia' if pneumonia else 'clear lungs'}. ECG: {dx}.",
                labels={"Pneumonia": pneumonia, "STACH": float("tachycardia" in dx)},
                split="train" if i < 6 else "val",
            )
        )
    return studies


def test_fit_on_real_files_through_the_contrastive_datamodule(
    real_data: Path, tmp_path: Path
) -> None:
    from datamodules.datamodule import ContrastiveDataModule
    from medclip.bundle import preprocessing_configs
    from medclip.model import MedclipModel

    cfg = tiny_config(max_epochs=2)
    torch.manual_seed(0)
    model = MedclipModel(cfg.model)
    ecg_cfg, cxr_cfg = preprocessing_configs(model, cfg.data)
    assert (ecg_cfg.length, cxr_cfg.image_size) == (250, 32)  # follows the towers
    dm = ContrastiveDataModule(
        real_studies(real_data), ecg_cfg=ecg_cfg, cxr_cfg=cxr_cfg, batch_size=3, seed=0
    )
    result = fit(cfg, datamodule=dm, out_dir=tmp_path, model=model, enable_progress_bar=False)
    assert result.global_step == 4  # 6 train studies / batch 3 x 2 epochs
    m = result.metrics
    assert math.isfinite(m["train/loss"]) and math.isfinite(m["val/loss"])
    assert {"val/R@1_text2xray", "val/R@5_text2ecg", "val/R@10_xray2ecg"} <= set(m)
    assert 0.0 <= m["val/zs_auroc"] <= 1.0
    assert result.last_checkpoint.is_file() and result.best_checkpoint is not None
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.suffix != ".ckpt"]
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["global_step"] == 4 and summary["params"]["text_lora_share"] <= 0.01
    assert (tmp_path / "config.yaml").is_file()
    assert list((tmp_path / "logs").rglob("metrics.csv"))
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    ckpt = torch.load(result.last_checkpoint, weights_only=True)  # plain containers only
    assert ckpt["hyper_parameters"]["config"]["name"] == "fit-test"


def test_cli_fit_then_export_on_the_synthetic_dataset(tmp_path: Path) -> None:
    pytest.importorskip("datamodules.synthetic", reason="synthetic generator not installed")
    from datamodules import synthetic

    if not hasattr(synthetic, "generate"):
        pytest.skip("datamodules.synthetic.generate is not available yet")
    out, data = tmp_path / "run", tmp_path / "data"
    args = ["fit", "--config", "tiny", "--out", str(out), "--data-root", str(data)]
    args += [a for s in TINY_SET for a in ("--set", s)] + ["--no-progress"]
    assert main(args) == 0
    assert (data / "synthetic.json").is_file()  # generated because the root had no data
    last = out / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 2
    assert main(["export", str(last), str(out / "bundle")]) == 0
    from medclip.bundle import load_bundle

    b = load_bundle(out / "bundle")
    assert "SYNTHETIC DATA" in b.card and b.meta["lora"] == "merged"
    assert b.preprocessing["ecg"]["length"] == 250 and b.preprocessing["xray"]["image_size"] == 32
    with torch.no_grad():
        e = b.model.encode_text(["cardiomegaly"])
    assert e.shape == (1, load_config("tiny").model.embed_dim)
    assert main(["export", str(last), str(out / "bundle")]) == 2  # refuses to clobber


class _OneBatch(L.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.batches = [
            Batch(
                xray=torch.randn(3, 1, 32, 32, generator=g),
                ecg=torch.randn(3, 12, 250, generator=g),
                text=["a", "b", "c"],
                present=torch.ones(3, 3, dtype=torch.bool),
                labels=torch.zeros(3, 0),
                study_ids=["1", "2", "3"],
            )
        ]

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.batches, batch_size=None, collate_fn=lambda x: x)  # type: ignore[arg-type]


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


def test_resume_loads_checkpoints_weights_only(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "payload": _Exploit(marker)}, evil)
    cfg = tiny_config(val_check_interval=0)
    with pytest.raises(UnsafeCheckpointError):
        fit(cfg, datamodule=_OneBatch(), out_dir=tmp_path / "run", resume=evil)
    assert not marker.exists()


def test_precision_follows_the_hardware(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        assert resolve_precision("auto", "auto") == "32-true"
    assert resolve_precision("32-true") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    cfg = tiny_config(max_steps=1, precision="bf16-mixed", val_check_interval=0)
    result = fit(cfg, datamodule=_OneBatch(), out_dir=tmp_path, enable_progress_bar=False)
    assert result.global_step == 1 and math.isfinite(result.metrics["train/loss"])
