"""ProtoECGNet stage runner: all stages end to end, resume after an interruption, the bundle."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medclip.config import MedclipConfig, load_config

CODES = {  # code: (diagnostic, form, rhythm, class)
    "SR": ("", "", "1.0", ""),
    "AFIB": ("", "", "1.0", ""),
    "1AVB": ("1.0", "", "", "CD"),
    "IMI": ("1.0", "", "", "MI"),
    "LVH": ("1.0", "", "", "HYP"),
    "NORM": ("1.0", "", "", "NORM"),
}


def _beat(t: np.ndarray, at: float, pr: float, q: bool, tall: bool, p_wave: bool) -> np.ndarray:
    def g(mu: float, sd: float, a: float) -> np.ndarray:
        return a * np.exp(-0.5 * ((t - mu) / sd) ** 2)

    out = g(at, 0.012, 1.6 if tall else 1.0) + g(at + 0.25, 0.04, 0.3)
    if p_wave:
        out += g(at - pr, 0.02, 0.15)
    if q:
        out += g(at - 0.03, 0.01, -0.5)
    return out


def write_mini_ptbxl(root: Path, n: int = 12, seed: int = 0) -> Path:
    """A PTB-XL-layout folder with ``n`` 10 s, 100 Hz records whose waveforms follow the labels."""
    import wfdb

    rng = np.random.default_rng(seed)
    base = root / "ptb-xl"
    header = ",description,diagnostic,form,rhythm,diagnostic_class,diagnostic_subclass\n"
    rows = [f"{c},{c} statement,{d},{f},{r},{k},{k}\n" for c, (d, f, r, k) in CODES.items()]
    base.mkdir(parents=True)
    (base / "scp_statements.csv").write_text(header + "".join(rows), encoding="utf-8")
    cols = "ecg_id,patient_id,report,scp_codes,strat_fold,filename_lr,filename_hr\n"
    lines = []
    t = np.arange(1000) / 100.0
    folds = [1, 1, 1, 1, 2, 2, 3, 4, 9, 9, 10, 10]
    for i in range(n):
        ecg_id = 10 + 3 * i
        if i < 8:  # the first (training) records cover every code
            afib, avb, morph, lvh = i % 3 == 0, i % 4 == 1, i % 2 == 0, i % 5 == 2
        else:
            afib, avb, morph, lvh = (bool(v) for v in rng.random(4) < (0.35, 0.25, 0.5, 0.25))
        codes = {"AFIB" if afib else "SR": 100.0}
        if avb:
            codes["1AVB"] = 0.0
        codes["IMI" if morph else "NORM"] = 80.0
        if lvh:
            codes["LVH"] = 50.0
        beats = np.cumsum(rng.uniform(0.4, 1.1, 20) if afib else np.full(20, 0.85)) - 0.4
        sig = np.zeros((1000, 12))
        for b in beats[beats < 9.8]:
            one = _beat(t, b, 0.3 if "1AVB" in codes else 0.15, morph, "LVH" in codes, not afib)
            sig += one[:, None] * np.linspace(0.5, 1.2, 12)[None, :]
        sig += rng.normal(0, 0.02, sig.shape)
        rel = f"records100/00000/{ecg_id:05d}_lr"
        (base / "records100" / "00000").mkdir(parents=True, exist_ok=True)
        wfdb.wrsamp(
            f"{ecg_id:05d}_lr",
            fs=100,
            units=["mV"] * 12,
            sig_name=["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"],
            p_signal=sig,
            fmt=["16"] * 12,
            adc_gain=[1000.0] * 12,
            baseline=[0] * 12,
            write_dir=str(base / "records100" / "00000"),
        )
        codes_txt = "{" + ", ".join(f"'{k}': {v}" for k, v in codes.items()) + "}"
        fold = folds[i % len(folds)]
        lines.append(
            f'{ecg_id},{100 + i}.0,"sinus rhythm.","{codes_txt}",{fold},{rel},'
            f"records500/00000/{ecg_id:05d}_hr\n"
        )
    (base / "ptbxl_database.csv").write_text(cols + "".join(lines), encoding="utf-8")
    return base


def tiny_config() -> MedclipConfig:
    cfg = load_config("tiny")
    proto = dataclasses.replace(
        cfg.proto,
        backbone_width=8,
        rhythm_protos_per_class=2,
        morphology_protos_per_class=2,
        global_protos_per_class=2,
        epochs_pretrain=1,
        epochs_joint=1,
        epochs_last=1,
        batch_size=4,
        bootstrap_samples=5,
        patience=2,
    )
    return dataclasses.replace(cfg, proto=proto, trainer=dataclasses.replace(cfg.trainer, seed=0))


class InterruptError(RuntimeError):
    pass


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mini_ptbxl(tmp_path_factory.mktemp("data"))


def test_fit_resumes_after_interrupt_and_exports_bundle(mini: Path, tmp_path: Path) -> None:
    from medclip.proto.fit import fit_proto

    torch.set_num_threads(1)
    cfg = tiny_config()
    out = tmp_path / "run"
    seen: list[str] = []

    def stop_after_joint(unit: str) -> None:
        seen.append(unit)
        if unit == "joint/global":
            raise InterruptError(unit)

    with pytest.raises(InterruptError):
        fit_proto(cfg, mini, out, progress=False, on_unit_end=stop_after_joint)
    assert seen == [
        "pretrain/rhythm",
        "pretrain/morphology",
        "pretrain/global",
        "joint/rhythm",
        "joint/morphology",
        "joint/global",
    ]
    state = json.loads((out / "work" / "state.json").read_text())
    assert state["done"] == seen
    assert not (out / "bundle").exists()

    result = fit_proto(cfg, mini, out, progress=False)
    assert result.units_skipped == seen
    assert result.units_run == ["push/rhythm", "push/morphology", "push/global", "last/fusion"]
    # seconds per step; the units of the first call keep the seconds recorded in state.json
    timing = result.timing_s
    assert list(timing) == ["load_data", *seen, *result.units_run, "evaluate", "export"]
    assert all(v >= 0 for v in timing.values())
    first = state["timing_s"]
    assert all(timing[u] == pytest.approx(first[u], abs=1e-3) for u in seen)
    on_disk = json.loads((out / "metrics.json").read_text())["timing_s"]
    assert on_disk == pytest.approx({k: round(v, 3) for k, v in timing.items()}, abs=1e-3)

    bundle = result.bundle_dir
    for rel in (
        "config.json",
        "model.safetensors",
        "card.md",
        "metrics.json",
        "prototypes/prototypes.safetensors",
        "prototypes/prototypes.json",
        "prototypes/segments.safetensors",
    ):
        assert (bundle / rel).is_file(), rel
    assert not list(bundle.rglob("*.pkl")) and not list(bundle.rglob("*.pt"))
    protos = json.loads((bundle / "prototypes" / "prototypes.json").read_text())
    entries = protos["prototypes"]
    # 3 rhythm classes, 2 morphology, 1 global; 2 prototypes each
    assert [e["branch"] for e in entries].count("rhythm") == 6
    assert [e["branch"] for e in entries].count("morphology") == 4
    assert [e["branch"] for e in entries].count("global") == 2
    train_ids = {10 + 3 * i for i in range(12) if [1, 1, 1, 1, 2, 2, 3, 4, 9, 9, 10, 10][i] <= 8}
    for e in entries:
        assert e["ecg_id"] in train_ids  # projected onto a training ECG of its class
    morph = [e for e in entries if e["branch"] == "morphology"]
    step = protos["branches"]["morphology"]["step_samples"] / 100.0
    for e in morph:  # partial prototypes: window index x step, 3 steps long
        assert e["start_s"] == pytest.approx(e["window"] * step)
        assert e["end_s"] - e["start_s"] == pytest.approx(3 * step)
    glob = [e for e in entries if e["branch"] == "global"]
    assert all(e["start_s"] == 0.0 and e["end_s"] == pytest.approx(10.0) for e in glob)

    metrics = json.loads((bundle / "metrics.json").read_text())
    assert set(metrics["test"]) == {"fused", "rhythm", "morphology", "global"}
    assert metrics["test"]["fused"]["n"] == 2
    card = (bundle / "card.md").read_text()
    assert "Research use only" in card


def test_fit_refuses_other_config_in_same_folder(mini: Path, tmp_path: Path) -> None:
    from medclip.proto.fit import ProtoFitError, fit_proto

    cfg = tiny_config()
    out = tmp_path / "run"

    def stop(unit: str) -> None:
        raise InterruptError(unit)

    with pytest.raises(InterruptError):
        fit_proto(cfg, mini, out, progress=False, on_unit_end=stop)
    other = dataclasses.replace(cfg, proto=dataclasses.replace(cfg.proto, lambda_div=1.0))
    with pytest.raises(ProtoFitError, match="another config"):
        fit_proto(other, mini, out, progress=False)
