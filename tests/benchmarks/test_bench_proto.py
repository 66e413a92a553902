"""Smoke test of ``benchmarks/bench_proto.py``: the whole command (data, thread calibration,
timed ``fit_proto``, report, JSON) with the tiny preset on 60 synthetic patients, and the
PASS/FAIL logic on hand-made figures. No thresholds on quality: the tiny model learns nothing."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bp() -> ModuleType:
    """The benchmark script imported as a module (``_common`` beside it on ``sys.path``)."""
    bench = str(REPO / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    spec = importlib.util.spec_from_file_location(
        "bench_proto", REPO / "benchmarks" / "bench_proto.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_proto"] = mod
    spec.loader.exec_module(mod)
    return mod


def _block(macro: float | None, excluded: list[str]) -> dict[str, object]:
    labels = ["A", "B", "C"]
    return {
        "macro_auroc": macro,
        "macro_ci": [None, None] if macro is None else [macro - 0.05, macro + 0.02],
        "per_label": {k: (None if k in excluded else 0.9) for k in labels},
        "excluded": excluded,
        "n_positive": {"A": 4, "B": 0, "C": 2},
        "n_negative": {"A": 6, "B": 10, "C": 8},
        "n_boot": 100,
        "n": 10,
    }


def test_summary_and_targets(bp: ModuleType) -> None:
    metrics = {"test": {"fused": _block(0.91, ["B"]), "global": _block(None, ["A", "B", "C"])}}
    summary = bp.summarise(metrics)
    assert list(summary) == ["fused", "global"]
    fused = summary["fused"]
    assert (fused["labels_scored"], fused["n_labels"], fused["not_scored"]) == (2, 3, ["B"])
    assert fused["min_positives_scored"] == 2 and fused["n_records"] == 10
    assert summary["global"]["labels_scored"] == 0
    assert summary["global"]["min_positives_scored"] is None
    fast = bp.FitInfo(wall_s=120.0, cpu_s=100.0, timing_s={"joint/rhythm": 50.0}, run_dir="r")
    assert [ok for *_, ok in bp.checks(summary, fast)] == [True, True]
    slow = bp.FitInfo(wall_s=601.0, cpu_s=1.0, timing_s={}, run_dir="r")
    low = bp.summarise({"test": {"fused": _block(0.89, [])}})
    assert [ok for *_, ok in bp.checks(low, slow)] == [False, False]
    assert [ok for *_, ok in bp.checks({}, fast)] == [False, True]  # missing = FAIL
    info = bp.FitInfo(1.0, 1.0, {"joint/rhythm": 2.0, "joint/global": 1.5, "push/x": 1}, "r")
    assert info.stage_s("joint") == pytest.approx(3.5) and info.stage_s("pretrain") == 0


@pytest.fixture
def keep_threads() -> Iterator[None]:
    """Restore torch's thread count and ``OMP_NUM_THREADS`` (the script sets both)."""
    import torch

    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    yield
    torch.set_num_threads(threads)
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = omp


def test_whole_command_with_the_tiny_preset(
    bp: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str], keep_threads: None
) -> None:
    md_file = tmp_path / "BENCH.md"
    common = [
        "--preset",
        "tiny",
        "--n",
        "60",
        "--work-dir",
        str(tmp_path / "work"),
        "--set",
        "proto.bootstrap_samples=5",
        "--set",
        "proto.epochs_pretrain=0",
        "--out",
        str(md_file),
        "--no-append",
    ]
    assert bp.main([*common, "--run-name", "run"]) == 0
    md = capsys.readouterr().out
    assert not md_file.exists()  # --no-append
    assert md.startswith("### ProtoECGNet on synthetic PTB-XL")
    assert md.count("| PASS |") + md.count("| FAIL |") == 2
    assert "torch threads" in md and "chosen by --threads auto" in md
    for name in ("**fused**", "| rhythm |", "| morphology |", "| global |", "joint (rhythm"):
        assert name in md
    payload = json.loads((tmp_path / "work" / "run" / "bench_proto.json").read_text())
    assert payload["preset"] == "tiny" and payload["n"] == 60
    assert payload["sets"] == ["proto.bootstrap_samples=5", "proto.epochs_pretrain=0"]
    assert set(payload["test"]) == {"fused", "rhythm", "morphology", "global"}
    fused = payload["test"]["fused"]
    assert fused["n_records"] == payload["data"]["test"] > 0
    assert 0 <= fused["labels_scored"] <= fused["n_labels"] and fused["n_boot"] == 5
    fit = payload["fit"]
    assert fit["wall_s"] > 0 and fit["cpu_s"] > 0
    assert {"load_data", "joint/rhythm", "push/global", "last/fusion", "evaluate", "export"} <= set(
        fit["timing_s"]
    )
    assert "pretrain/rhythm" in fit["units"]  # no epochs, but a unit like any other
    assert fit["stages_s"]["joint"] == pytest.approx(
        sum(v for k, v in fit["timing_s"].items() if k.startswith("joint/"))
    )
    assert [c["target"].split()[0] for c in payload["checks"]] == ["fused", "whole"]
    threads = payload["threads"]
    assert threads["mode"] == "auto" and threads["threads"] >= 1
    assert all(float(v) > 0 for v in threads["ms_per_step"].values())
    # the data folder is reused, not regenerated; a fixed thread count skips the calibration
    data = tmp_path / "work" / "data-n60-seed0"
    stamp = (data / "synthetic.json").stat().st_mtime_ns
    assert bp.prepare_data(data, 60, 0) == data
    assert (data / "synthetic.json").stat().st_mtime_ns == stamp
    fixed = bp.choose_threads("1", bp.build_config("tiny", 0))
    assert (fixed.threads, fixed.mode, fixed.ms_per_step) == (1, "fixed", {})
    with pytest.raises(SystemExit):
        bp.choose_threads("0", bp.build_config("tiny", 0))
