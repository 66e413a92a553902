"""ContrastiveModule: optimizer groups, learnable temperature, schedule, feature-cache
accumulation, validation metrics, resume."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from datamodules.types import Batch
from medclip.config import (
    ConfigError,
    LossConfig,
    MedclipConfig,
    ModelConfig,
    OptimConfig,
    TowerConfig,
    TrainerConfig,
)
from medclip.fit import fit
from medclip.losses import ContrastiveLoss
from medclip.model import MedclipModel
from medclip.training import (
    ContrastiveModule,
    WarmupCosine,
    build_param_groups,
    feature_cache_backward,
    retrieval_metrics,
)

LABELS = ["Cardiomegaly", "Pleural Effusion"]
REPORTS = ["cardiomegaly", "pleural effusion", "cardiomegaly and pleural effusion", "normal"]


def tiny_config(**trainer: Any) -> MedclipConfig:
    model = ModelConfig(
        xray=TowerConfig("xray_vit_tiny_dropkey", {"dropkey_ratio": 0.0}),
        ecg=TowerConfig("ecg_resnet1d18", {"width": 8, "layers": [1, 1, 1, 1]}),
        text=TowerConfig(
            "text_tiny_random", {"tiny_layers": 1, "max_length": 16, "lora_dropout": 0.0}
        ),
        embed_dim=16,
        head="mlp_ln",
    )
    t = {"max_epochs": 1, "log_every_n_steps": 1, "accelerator": "cpu", **trainer}
    return MedclipConfig(
        model=model,
        optim=OptimConfig(lr_towers=1e-3, lr_heads=1e-2, lr_lora=1e-2, warmup_steps=2),
        trainer=TrainerConfig(**t),
    )


def make_batch(b: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])[torch.arange(b) % 4]
    present = torch.ones(b, 3, dtype=torch.bool)
    if b > 3:
        present[3, 1] = False  # one study without ECG
    return Batch(
        xray=torch.randn(b, 1, 64, 64, generator=g) + y[:, :1, None, None],
        ecg=torch.randn(b, 12, 1000, generator=g) + y[:, 1:, None],
        text=[REPORTS[i % 4] for i in range(b)],
        present=present,
        labels=y,
        study_ids=[f"{seed}-{i}" for i in range(b)],
    )


class ToyData(L.LightningDataModule):
    """Pre-collated batches; ``identical`` repeats one batch (order-free, for resume tests)."""

    def __init__(self, n_train: int = 4, n_val: int = 2, b: int = 4, identical: bool = False):
        super().__init__()
        self.label_names = list(LABELS)
        self.train = [make_batch(b, 0 if identical else i) for i in range(n_train)]
        self.val = [make_batch(b, 100 + i) for i in range(n_val)]

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.train, batch_size=None, collate_fn=lambda x: x)  # type: ignore[arg-type]

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.val, batch_size=None, collate_fn=lambda x: x)  # type: ignore[arg-type]


def test_param_groups_cover_trainable_params_once() -> None:
    cfg = tiny_config()
    model = MedclipModel(cfg.model)
    groups = {g["name"]: g for g in build_param_groups(model, cfg.optim)}
    assert groups["logit_scale"]["params"] == [model.logit_scale]
    assert groups["logit_scale"]["weight_decay"] == 0.0
    assert groups["logit_scale"]["lr"] == cfg.optim.lr_heads
    assert groups["lora"]["lr"] == cfg.optim.lr_lora and groups["lora"]["params"]
    assert groups["towers"]["weight_decay"] == cfg.optim.wd_towers
    assert groups["towers_no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in groups["towers"]["params"])
    seen = [id(p) for g in groups.values() for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert len(seen) == len(set(seen)) and set(seen) == set(trainable)
    frozen_text = [p for p in model.towers["text"].parameters() if not p.requires_grad]
    assert frozen_text and not {id(p) for p in frozen_text} & set(seen)


def test_warmup_cosine_schedule() -> None:
    f = WarmupCosine(warmup=4, total=20, min_ratio=0.1)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(4) == pytest.approx(1.0)
    assert f(12) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(20) == pytest.approx(0.1) and f(50) == pytest.approx(0.1)
    values = [f(s) for s in range(4, 21)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_time_budget_schedule_follows_elapsed_time() -> None:
    f = WarmupCosine(warmup=2, total=1, min_ratio=0.1, budget_s=100.0)
    assert [f(0), f(1)] == pytest.approx([0.5, 1.0])  # warm-up still counts steps
    f.elapsed_s = 50.0
    assert f(3) == pytest.approx(f(300)) == pytest.approx(0.1 + 0.9 * 0.5)  # steps do not matter
    f.elapsed_s = 250.0
    assert f(3) == pytest.approx(0.1)  # past the budget: the floor


def test_time_schedule_anneals_within_the_time_cap(tmp_path: Path) -> None:
    cfg = tiny_config(max_epochs=1000, max_time_s=6)
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, schedule="time"))
    result = fit(cfg, datamodule=ToyData(n_val=0), out_dir=tmp_path, enable_progress_bar=False)
    ckpt = torch.load(result.last_checkpoint, weights_only=True)  # plain numbers only
    sched = ckpt["lr_schedulers"][0]["lr_lambdas"][0]
    assert sched["budget_s"] == pytest.approx(6.0, abs=0.5)
    assert 0.8 * sched["budget_s"] < sched["elapsed_s"] <= sched["budget_s"] + 1.0
    # the last learning rate is near the floor although max_epochs was far away
    assert ckpt["lr_schedulers"][0]["_last_lr"][0] < 0.2 * cfg.optim.lr_towers
    no_cap = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, max_time_s=None))
    with pytest.raises(ConfigError, match="max_time_s"):
        fit(no_cap, datamodule=ToyData(), out_dir=tmp_path / "b", enable_progress_bar=False)
    with pytest.raises(ConfigError, match="schedule"):
        OptimConfig(schedule="linear")  # type: ignore[arg-type]


def test_logit_scale_reaches_the_optimizer_and_moves(tmp_path: Path) -> None:
    """Regression for MoRE's frozen temperature (ANCHORS.md §1.2)."""
    cfg = tiny_config(max_steps=3)
    module = ContrastiveModule(cfg, label_names=LABELS)
    before = module.model.logit_scale.item()
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=ToyData())
    opt = trainer.optimizers[0]
    held = [p for g in opt.param_groups for p in g["params"]]
    assert any(p is module.model.logit_scale for p in held)
    assert module.model.logit_scale.item() != pytest.approx(before, abs=1e-6)
    assert opt.state[module.model.logit_scale]["step"] == 3
    assert module.param_summary["text_lora_share"] <= 0.01
    assert 0 < module.param_summary["trainable"] < module.param_summary["total"]


def test_feature_cache_gradient_equals_the_big_batch_gradient() -> None:
    torch.manual_seed(0)
    cfg = tiny_config()
    model = MedclipModel(cfg.model).eval()  # eval: no dropout, BatchNorm running stats
    loss_fn = ContrastiveLoss(LossConfig(soft_targets=True, soft_target_identity_mix=0.5))
    parts = [make_batch(4, 1), make_batch(4, 2)]
    big = Batch(
        xray=torch.cat([p.xray for p in parts]),
        ecg=torch.cat([p.ecg for p in parts]),
        text=[t for p in parts for t in p.text],
        present=torch.cat([p.present for p in parts]),
        labels=torch.cat([p.labels for p in parts]),
        study_ids=[s for p in parts for s in p.study_ids],
    )
    emb = model(big)
    ref = loss_fn(emb.emb, emb.masks, model.scale(), big.labels)
    ref.loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    out = feature_cache_backward(model, loss_fn, parts, soft_targets=True)
    assert out.loss.item() == pytest.approx(ref.loss.item(), abs=1e-5)
    assert any("lora_A" in n for n in ref_grads) and "logit_scale" in ref_grads
    for name, g in ref_grads.items():
        got = dict(model.named_parameters())[name].grad
        assert got is not None, name
        assert torch.allclose(got, g, atol=1e-5, rtol=1e-4), name
    # the local-only loss over one micro-batch sees fewer negatives: a different value
    e1 = model(parts[0])
    small = loss_fn(e1.emb, e1.masks, model.scale(), parts[0].labels)
    assert small.loss.item() != pytest.approx(ref.loss.item(), abs=1e-3)


@pytest.mark.parametrize("mode", ["feature_cache", "plain"])
def test_accumulation_modes_train_end_to_end(tmp_path: Path, mode: str) -> None:
    cfg = tiny_config(max_epochs=1, accumulate_grad_batches=2, accum_mode=mode)
    module = ContrastiveModule(cfg)
    assert module.automatic_optimization is (mode == "plain")
    dm = ToyData(n_train=5)
    result = fit(
        cfg, datamodule=dm, out_dir=tmp_path, enable_progress_bar=False, model=module.model
    )
    assert result.global_step == 3  # 5 micro-batches, 2 per optimizer step, last one alone
    assert math.isfinite(result.metrics["train/loss"])
    assert result.metrics["train/logit_scale"] != pytest.approx(1 / 0.07, abs=1e-4)
    assert "val/R@1_text2xray" in result.metrics
    assert 0.0 <= result.metrics["val/zs_auroc_xray"] <= 1.0
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    assert ckpt["hyper_parameters"]["label_names"] == LABELS  # taken from the datamodule
    assert ckpt["lr_schedulers"][0]["lr_lambdas"][0]["total"] == 3


def test_text_tokens_follow_data_max_text_tokens_unless_the_tower_sets_them() -> None:
    cfg = tiny_config()
    assert ContrastiveModule(cfg).cfg.model.text.kwargs["max_length"] == 16  # tower kwarg wins
    text = TowerConfig("text_tiny_random", {"tiny_layers": 1})
    cfg2 = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, text=text))
    module = ContrastiveModule(cfg2)
    assert module.model.towers["text"].input_spec.length == cfg.data.max_text_tokens
    assert module.hparams["config"]["model"]["text"]["kwargs"]["max_length"] == 128


def test_gradient_checkpointing_option_reaches_the_towers() -> None:
    module = ContrastiveModule(tiny_config(gradient_checkpointing=True))
    assert module.model.towers["xray"].vit.grad_checkpointing
    assert not ContrastiveModule(tiny_config()).model.towers["xray"].vit.grad_checkpointing


def test_retrieval_metrics_per_task() -> None:
    g = torch.nn.functional.normalize(
        torch.randn(12, 8, generator=torch.Generator().manual_seed(0))
    )
    emb = {"xray": g, "ecg": g.roll(1, dims=0), "text": g}
    masks = {k: torch.ones(12, dtype=torch.bool) for k in emb}
    m = retrieval_metrics(emb, masks)
    assert m["val/R@1_text2xray"] == 1.0 and m["val/R@10_text2xray"] == 1.0
    assert m["val/R@1_xray2ecg"] < 1.0 and m["val/R@10_xray2ecg"] >= m["val/R@1_xray2ecg"]
    masks["ecg"][:11] = False  # a single ECG: no ECG retrieval metric
    assert not any("ecg" in k for k in retrieval_metrics(emb, masks))


def test_resume_mid_epoch_continues_step_optimizer_and_schedule(tmp_path: Path) -> None:
    class SeedPerStep(L.Callback):
        """Same dropout draws at each global step, whatever the process history."""

        def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
            torch.manual_seed(1000 + trainer.global_step)

    def run(out: Path, max_steps: int, resume: Path | None = None) -> Any:
        cfg = tiny_config(max_epochs=2, max_steps=max_steps, val_check_interval=0)
        return fit(
            cfg,
            datamodule=ToyData(n_train=3, identical=True),
            out_dir=out,
            resume=resume,
            callbacks=[SeedPerStep()],
            enable_progress_bar=False,
        )

    full = run(tmp_path / "full", 5)
    part = run(tmp_path / "part", 2)  # stops mid-epoch (3 batches per epoch)
    assert part.global_step == 2
    resumed = run(tmp_path / "part", 5, resume=part.last_checkpoint)
    assert resumed.global_step == full.global_step == 5

    a = torch.load(full.last_checkpoint, weights_only=True)
    b = torch.load(resumed.last_checkpoint, weights_only=True)
    assert a["global_step"] == b["global_step"] == 5
    sa, sb = a["lr_schedulers"][0], b["lr_schedulers"][0]
    assert sa["last_epoch"] == sb["last_epoch"] == 5
    assert sa["_last_lr"] == pytest.approx(sb["_last_lr"])
    oa, ob = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert oa.keys() == ob.keys()
    for k in oa:
        assert float(oa[k]["step"]) == float(ob[k]["step"]) == 5
        assert torch.allclose(oa[k]["exp_avg_sq"], ob[k]["exp_avg_sq"], atol=1e-6, rtol=1e-4)
    for name, t in a["state_dict"].items():
        assert torch.allclose(t.float(), b["state_dict"][name].float(), atol=1e-5), name
    assert a["state_dict"]["model.logit_scale"] != pytest.approx(math.log(1 / 0.07))


def test_zeroshot_validation_auroc_is_one_for_prompt_aligned_embeddings() -> None:
    from medclip.zeroshot import ZeroShotClassifier

    module = ContrastiveModule(tiny_config(), label_names=LABELS).eval()
    with torch.no_grad():
        clf = ZeroShotClassifier.from_encoder(
            lambda t: module.model.encode_text(t, normalize=False), LABELS, module.cfg.zeroshot
        )
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, float("nan")]])
    # embeddings that sit on the positive (label 1) or negative (label 0) prompt embedding of
    # "Cardiomegaly": a correct zero-shot scorer ranks every positive first
    xray = torch.stack([clf.pos[0] if r[0] == 1 else clf.neg[0] for r in y])
    emb = {"xray": xray, "ecg": xray.clone(), "text": xray.clone()}
    masks = {k: torch.ones(5, dtype=torch.bool) for k in emb}
    with torch.no_grad():
        m = module._zeroshot_metrics(emb, masks, y, LABELS)
    # both labels are X-ray findings; only Cardiomegaly's column is aligned
    assert "val/zs_auroc_xray" in m and "val/zs_auroc_ecg" not in m
    assert 0.5 <= m["val/zs_auroc_xray"] <= 1.0
    y_card = y[:, :1]
    m1 = module._zeroshot_metrics(emb, masks, y_card, LABELS[:1])
    assert m1["val/zs_auroc_xray"] == pytest.approx(1.0)


def test_validation_gather_without_batches_gives_empty_tensors() -> None:
    module = ContrastiveModule(tiny_config(), label_names=LABELS)
    emb, masks, labels = module._gather_val(None)
    assert set(emb) == set(masks) == {"xray", "ecg", "text"}
    assert emb["xray"].shape == (0, 16) and labels.shape == (0, 2)
