"""Case-based explanations: bundle round trip, contributions, the table, the PNG and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.proto_groups import ProtoGroups
from medclip.proto.config import ProtoConfig

GROUPS = ProtoGroups(("SR", "AFIB"), ("IMI", "LVH"), ("NORM",))
TRAIN_IDS = np.array([101, 102, 103, 104, 105, 106])


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medclip.proto.bundle import export_proto_bundle
    from medclip.proto.data import Preprocessing
    from medclip.proto.model import build_proto_model
    from medclip.proto.push import push_branch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = ProtoConfig(
        backbone_width=8,
        rhythm_protos_per_class=2,
        morphology_protos_per_class=2,
        global_protos_per_class=2,
    )
    model = build_proto_model(cfg, GROUPS, 1000).eval()
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, (6, 12, 1000)).astype(np.float32)
    y = np.array(
        [
            [1, 0, 1, 0, 0],
            [0, 1, 0, 1, 0],
            [1, 0, 0, 0, 1],
            [0, 1, 1, 0, 0],
            [1, 0, 0, 1, 1],
            [1, 0, 0, 0, 1],
        ],
        dtype=np.float32,
    )
    sources, segments = {}, {}
    for n, cols in (("rhythm", [0, 1]), ("morphology", [2, 3]), ("global", [4])):
        res = push_branch(model.branch(n), x, y[:, cols], TRAIN_IDS, 100.0, progress=False)
        sources[n], segments[n] = res.sources, res.segments
    with torch.no_grad():  # a non-trivial fusion layer and similarity statistics
        model.fusion.weight.add_(0.3 * torch.randn_like(model.fusion.weight))
        n_p = model.fusion.in_features
        model.set_similarity_stats(
            0.01 * torch.rand(n_p), 0.01 + 0.02 * torch.rand(n_p), keep_function=False
        )
    pre = Preprocessing(fs_hz=100.0, length=1000, highpass_hz=0.5, mean=0.0, std=0.3)
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    export_proto_bundle(
        out, model, cfg, pre, sources, segments, np.full(5, 0.3), "unit-test ECGs", {"test": {}}
    )
    return out


def test_bundle_round_trip_reproduces_the_model(bundle_dir: Path) -> None:
    from medclip.proto.bundle import load_proto_bundle

    b1 = load_proto_bundle(bundle_dir)
    b2 = load_proto_bundle(bundle_dir)
    x = torch.randn(2, 12, 1000)
    with torch.no_grad():
        assert torch.allclose(b1.model(x).logits, b2.model(x).logits)
    assert b1.labels == ("SR", "AFIB", "IMI", "LVH", "NORM")
    assert b1.training_data == "unit-test ECGs"
    assert b1.segments["morphology"].shape[1:] == (12, 94)  # 3 steps x 31.25 samples
    assert all(s.ecg_id in set(TRAIN_IDS.tolist()) for s in b1.sources["rhythm"])


def test_bundle_rejects_missing_weights(bundle_dir: Path, tmp_path: Path) -> None:
    import shutil

    from medclip.errors import BundleError
    from medclip.proto.bundle import load_proto_bundle

    broken = tmp_path / "broken"
    shutil.copytree(bundle_dir, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(BundleError, match=r"model\.safetensors"):
        load_proto_bundle(broken)


def test_explanation_contributions_are_weight_times_similarity(bundle_dir: Path) -> None:
    from medclip.proto.bundle import load_proto_bundle
    from medclip.proto.explain import PrototypeExplanation, explain_ecg

    bundle = load_proto_bundle(bundle_dir)
    rng = np.random.default_rng(1)
    sig = rng.normal(0, 0.3, (12, 1000)).astype(np.float32)
    res = explain_ecg(bundle, sig, k=5, threshold=0.0)  # every label is "predicted"
    assert [lab.label for lab in res.labels] == sorted(
        bundle.labels, key=lambda lbl: -res.probabilities[lbl]
    )
    model = bundle.model
    from medclip.proto.data import standardise

    x = torch.from_numpy(standardise(res.signal_mv, bundle.preprocessing))[None]
    with torch.no_grad():
        out = model(x)
    sim = out.similarity[0].numpy()
    z = ((out.similarity - model.sim_mean) / model.sim_std)[0].numpy()
    weight = model.fusion.weight.detach().numpy()
    bias = model.fusion.bias.detach().numpy()
    slices = model.prototype_slices()
    for lab in res.labels:
        j = bundle.labels.index(lab.label)
        assert lab.probability == pytest.approx(float(torch.sigmoid(out.logits[0, j])), abs=1e-5)
        # the contributions of all prototypes plus the bias make up the logit
        assert float((weight[j] * z).sum() + bias[j]) == pytest.approx(
            float(out.logits[0, j]), abs=1e-4
        )
        assert len(lab.prototypes) == 5
        contribs = [e.contribution for e in lab.prototypes]
        assert contribs == sorted(contribs, reverse=True)
        all_c = weight[j] * z
        assert contribs[0] == pytest.approx(float(all_c.max()), abs=1e-4)
        listed = {(e.branch, e.source_ecg_id, e.source_window_s[0]) for e in lab.prototypes}
        assert len(listed) == len(lab.prototypes)  # one entry per source patch
        # anything stronger than the last listed prototype is a duplicate of a listed patch
        for n, sl in slices.items():
            for p, src in enumerate(bundle.sources[n]):
                if all_c[sl.start + p] > contribs[-1] + 1e-6:
                    assert (n, src.ecg_id, src.start_s) in listed
        for e in lab.prototypes:
            assert isinstance(e, PrototypeExplanation)
            g = slices[e.branch].start + e.prototype_id
            assert e.similarity == pytest.approx(float(sim[g]), abs=1e-6)
            assert e.similarity_z == pytest.approx(float(z[g]), abs=1e-4)
            assert e.contribution == pytest.approx(float(weight[j, g] * z[g]), abs=1e-4)
            assert e.source_ecg_id in set(TRAIN_IDS.tolist())
            a, b = e.input_window_s
            assert 0.0 <= a < b <= 10.0 + 1e-9
            if e.branch == "morphology":
                assert b - a == pytest.approx(0.9375)
                win = out.branches["morphology"].windows[0, :, e.prototype_id]
                assert a == pytest.approx(int(win.argmax()) * 0.3125)
            assert e.source_segment.shape[0] == 12


def test_table_and_png(bundle_dir: Path, tmp_path: Path) -> None:
    from medclip.proto.bundle import load_proto_bundle
    from medclip.proto.explain import explain_ecg, format_table
    from medclip.proto.plot import plot_explanation

    bundle = load_proto_bundle(bundle_dir)
    sig = np.random.default_rng(2).normal(0, 0.3, (12, 1000)).astype(np.float32)
    res = explain_ecg(bundle, sig, k=3)
    table = format_table(res)
    assert "Research use only" in table
    assert "unit-test ECGs" in table
    assert res.labels[0].label in table
    png = plot_explanation(res, tmp_path / "x.png", max_prototypes=3)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_cli_explain_reads_a_wfdb_record(
    bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import wfdb

    from medclip.cli import main

    sig = np.random.default_rng(3).normal(0, 0.3, (500, 12))
    leads = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    wfdb.wrsamp(
        "rec",
        fs=50,
        units=["mV"] * 12,
        sig_name=leads,
        p_signal=sig,
        fmt=["16"] * 12,
        adc_gain=[1000.0] * 12,
        baseline=[0] * 12,
        write_dir=str(tmp_path),
    )
    png = tmp_path / "out.png"
    rc = main(
        [
            "proto",
            "explain",
            "--bundle",
            str(bundle_dir),
            str(tmp_path / "rec"),
            "--png",
            str(png),
            "-k",
            "2",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0
    assert "Research use only" in text and "unit-test ECGs" in text
    assert "source ecg_id" in text
    assert png.is_file()
    rc = main(["proto", "explain", "--bundle", str(tmp_path / "nope"), str(tmp_path / "rec")])
    assert rc == 2
