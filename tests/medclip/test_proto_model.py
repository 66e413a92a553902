"""ProtoECGNet branches, fusion, stage modules, push and backbone init from a tower."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.proto_groups import ProtoGroups
from medclip.proto.config import ProtoConfig
from medclip.proto.model import ProtoECGNet, build_proto_model

GROUPS = ProtoGroups(("SR", "AFIB", "1AVB"), ("IMI", "LVH"), ("NORM",))


def tiny_cfg(**kw: object) -> ProtoConfig:
    base: dict[str, object] = dict(
        backbone_width=8,
        rhythm_protos_per_class=2,
        morphology_protos_per_class=3,
        global_protos_per_class=2,
    )
    base.update(kw)
    return ProtoConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def model() -> ProtoECGNet:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return build_proto_model(tiny_cfg(), GROUPS, 1000)


def test_branch_shapes_and_time_geometry(model: ProtoECGNet) -> None:
    r, m, g = (model.branch(n) for n in ("rhythm", "morphology", "global"))
    assert r.prototype_layer.prototypes.shape[::2] == (6, 1)  # global, pooled 1D features
    assert m.prototype_layer.prototypes.shape[::2] == (6, 3)  # 3 feature steps
    assert g.prototype_layer.prototypes.shape[::2] == (2, g.backbone_steps)
    assert (r.is_partial, m.is_partial, g.is_partial) == (False, True, False)
    assert m.backbone_steps == 32 and m.step_samples == pytest.approx(31.25)
    # window index x 0.3125 s at 100 Hz, 3 steps long
    assert m.window_seconds(4, 100.0) == pytest.approx((1.25, 2.1875))
    assert g.window_seconds(0, 100.0) == (0.0, 10.0)
    assert r.prototype_layer.scaled is False and m.prototype_layer.scaled is True


def test_step_follows_the_actual_stride() -> None:
    torch.manual_seed(0)
    short = build_proto_model(tiny_cfg(), GROUPS, 500)
    m = short.branch("morphology")
    assert m.backbone_steps == 16
    assert m.window_seconds(2, 100.0)[0] == pytest.approx(2 * 500 / 16 / 100)
    with pytest.raises(ValueError, match="partial_length"):
        build_proto_model(tiny_cfg(partial_length=40), GROUPS, 1000)


def test_forward_outputs_and_similarity_ranges(model: ProtoECGNet) -> None:
    with torch.no_grad():
        out = model(torch.randn(3, 12, 1000))
    assert out.logits.shape == (3, 6)
    assert out.similarity.shape == (3, 6 + 6 + 2)
    assert model.labels == ("SR", "AFIB", "1AVB", "IMI", "LVH", "NORM")
    assert out.branches["morphology"].windows.shape == (3, 30, 6)
    m = model.branch("morphology")
    bound = 1 / math.sqrt(m.prototype_layer.dim * 3)
    assert float(out.branches["morphology"].similarity.abs().max()) <= bound + 1e-6
    assert float(out.branches["rhythm"].similarity.max()) <= 1.0 + 1e-6


def test_classifier_and_fusion_init(model: ProtoECGNet) -> None:
    m = model.branch("morphology")
    w = m.classifier.weight.detach()
    assert w.shape == (2, 6) and m.classifier.bias is None
    assert w[0].tolist() == [1.0, 1.0, 1.0, -0.5, -0.5, -0.5]
    fw = model.fusion.weight.detach()
    ps, ls = model.prototype_slices(), model.label_slices()
    assert torch.equal(fw[ls["morphology"], ps["morphology"]], w)
    assert float(fw[ls["rhythm"], ps["global"]].abs().sum()) == 0.0
    assert model.fusion.bias is not None


def test_fusion_standardises_similarities(model: ProtoECGNet) -> None:
    sim = torch.rand(2, 14)
    mean, std = torch.rand(14), torch.rand(14) + 0.5
    net = build_proto_model(tiny_cfg(), GROUPS, 1000)
    net.set_similarity_stats(mean, std, keep_function=False)
    expected = net.fusion((sim - mean) / std)
    assert torch.allclose(net.fuse(sim), expected)
    assert "sim_mean" in net.state_dict() and "sim_std" in net.state_dict()


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_joint_stage_freezes_the_classifier(model: ProtoECGNet) -> None:
    from medclip.proto.losses import ProtoLossWeights
    from medclip.proto.module import BranchJointModule

    branch = build_proto_model(tiny_cfg(), GROUPS, 1000).branch("morphology")
    mod = BranchJointModule(branch, torch.ones(2), torch.eye(2), ProtoLossWeights(), lr=1e-2)
    opt = mod.configure_optimizers()
    params = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(branch.prototype_layer.prototypes) in params
    assert id(branch.classifier.weight) not in params
    before_c = branch.classifier.weight.detach().clone()
    before_p = branch.prototype_layer.prototypes.detach().clone()
    x, y = torch.randn(4, 12, 1000), torch.tensor([[1.0, 0], [0, 1], [1, 1], [1, 0]])
    loss = mod.training_step((x, y), 0)
    loss.backward()
    opt.step()
    assert torch.equal(branch.classifier.weight, before_c)
    assert not torch.equal(branch.prototype_layer.prototypes.detach(), before_p)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_pretrain_and_fusion_stage_parameters() -> None:
    from medclip.proto.module import BranchPretrainModule, FusionModule

    net = build_proto_model(tiny_cfg(), GROUPS, 1000)
    pre = BranchPretrainModule(net.branch("rhythm"), torch.ones(3))
    params = {id(p) for g in pre.configure_optimizers().param_groups for p in g["params"]}
    assert id(net.branch("rhythm").prototype_layer.prototypes) not in params
    assert pre(torch.randn(2, 12, 1000)).shape == (2, 3)

    fus = FusionModule(net, torch.ones(6), torch.zeros(14), torch.ones(14))
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert "fusion.weight" in trainable and "fusion.bias" in trainable
    assert any(n.endswith("classifier.weight") for n in trainable)
    assert not any("backbone" in n or "prototype_layer" in n for n in trainable)
    sim, y = torch.randn(5, 14), torch.randint(0, 2, (5, 6)).float()
    assert fus.training_step((sim, y), 0).ndim == 0


def test_push_projects_onto_positive_training_patches() -> None:
    from encoders.prototypes import window_cosine
    from medclip.proto.push import push_branch

    torch.manual_seed(0)
    net = build_proto_model(tiny_cfg(), GROUPS, 1000).eval()
    branch = net.branch("morphology")
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (5, 12, 1000)).astype(np.float32)
    # class 0 (IMI) positive in records 1 and 3; class 1 (LVH) positive nowhere
    y = np.array([[0, 0], [1, 0], [0, 0], [1, 0], [0, 0]], dtype=np.float32)
    before = branch.prototype_layer.prototypes.detach().clone()
    res = push_branch(branch, x, y, np.arange(100, 105), 100.0, batch_size=2, progress=False)
    protos = branch.prototype_layer.prototypes.detach()
    with torch.no_grad():
        z = branch.latent(torch.from_numpy(x))
    for p in range(3):  # class-0 prototypes: exactly a window of record 101 or 103
        src = res.sources[p]
        assert src.ecg_id in (101, 103)
        rec = src.ecg_id - 100
        assert torch.allclose(protos[p], z[rec, :, src.window : src.window + 3])
        sims = window_cosine(z[[1, 3]], protos[p : p + 1], scaled=False)
        assert float(sims.max()) == pytest.approx(1.0, abs=1e-5)
        assert src.start_s == pytest.approx(src.window * 0.3125)
        a = round(src.window * 31.25)
        a = min(a, 1000 - 94)
        assert np.allclose(res.segments[p], x[rec, :, a : a + 94])
    for p in range(3, 6):  # no positive ECG: left as it was
        assert res.sources[p].ecg_id is None
        assert torch.equal(protos[p], before[p])
        assert not res.segments[p].any()


def test_backbone_init_from_a_contrastive_tower(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from encoders.registry import create_encoder
    from medclip.proto.model import load_backbone_weights

    torch.manual_seed(1)
    tower = create_encoder("ecg_resnet1d18", width=8)
    state = {f"ecg_tower.{k}": v.clone() for k, v in tower.state_dict().items()}
    state["logit_scale"] = torch.tensor(1.0)
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    net = build_proto_model(tiny_cfg(), GROUPS, 1000)
    backbone = net.branch("rhythm").backbone
    report = load_backbone_weights(backbone, path)
    assert len(report.loaded) == len(tower.state_dict())
    for k, v in tower.state_dict().items():
        assert torch.equal(backbone.state_dict()[k], v)


def test_config_validation_and_overrides() -> None:
    from medclip.config import ConfigError, load_config

    cfg = load_config("tiny", ["proto.window_pool=max", "proto.test_folds=[10]"])
    assert cfg.proto.window_pool == "max" and cfg.proto.test_folds == (10,)
    assert ProtoConfig().per_class("morphology") == 18
    with pytest.raises(ConfigError, match="window_pool"):
        load_config("tiny", ["proto.window_pool=median"])
    with pytest.raises(ConfigError, match="disjoint"):
        load_config("tiny", ["proto.val_folds=[8]"])
    with pytest.raises(ValueError, match="URL"):
        ProtoConfig(init_rhythm_from="https://example.org/w.safetensors")


def test_similarity_stats_keep_the_fused_function() -> None:
    torch.manual_seed(0)
    net = build_proto_model(tiny_cfg(), GROUPS, 1000)
    sim = torch.rand(4, 14)
    before = net.fuse(sim).detach()
    net.set_similarity_stats(torch.rand(14), torch.rand(14) + 0.1)
    assert torch.allclose(net.fuse(sim), before, atol=1e-5)
    net.set_similarity_stats(torch.rand(14), torch.rand(14) + 0.1)
    assert torch.allclose(net.fuse(sim), before, atol=1e-5)
