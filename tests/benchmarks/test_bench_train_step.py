"""`benchmarks/bench_train_step.py`: argument handling and timing helpers (no model is built)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bts() -> ModuleType:
    """The benchmark script imported as a module (``_common`` beside it on ``sys.path``)."""
    bench = str(REPO / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    spec = importlib.util.spec_from_file_location(
        "bench_train_step", REPO / "benchmarks" / "bench_train_step.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_train_step"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch believes a bf16-capable CUDA GPU is present."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch sees no CUDA GPU (whatever the machine running the tests has)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_defaults_stay_cpu_fp32(bts: ModuleType, no_gpu: None) -> None:
    args = bts.parse_args(["--no-append"])
    assert (args.device, args.precision, args.gpu_base) == ("cpu", "fp32", False)
    assert (args.vit, args.ecg_tower, args.batch, args.text_len) == (
        "vit_tiny_patch16_224",
        "ecg_resnet1d18",
        16,
        64,
    )


def test_gpu_base_sets_base_preset_sizes(bts: ModuleType, fake_gpu: None) -> None:
    args = bts.parse_args(["--gpu-base", "--no-append"])
    for key, value in bts.GPU_BASE.items():
        assert getattr(args, key) == value, key
    assert args.vit == "vit_base_patch16_224" and args.ecg_tower == "ecg_vit_conv1d"
    assert (args.device, args.precision, args.batch, args.text_len) == ("cuda", "bf16", 64, 128)


def test_gpu_base_ecg_tower_is_the_base_presets(bts: ModuleType) -> None:
    from encoders.registry import list_encoders
    from medclip.config import load_config

    base = load_config("base")
    assert bts.GPU_BASE["ecg_tower"] == base.model.ecg.name
    assert bts.GPU_BASE["ecg_tower"] in list_encoders()
    assert bts.GPU_BASE["embed_dim"] == base.model.embed_dim
    assert bts.GPU_BASE["image_size"] == base.data.image_size
    assert bts.GPU_BASE["ecg_length"] == base.data.ecg_length


def test_explicit_flags_override_gpu_base(bts: ModuleType, fake_gpu: None) -> None:
    args = bts.parse_args(["--gpu-base", "--batch", "32", "--device", "cpu", "--no-append"])
    assert (args.batch, args.device, args.precision) == (32, "cpu", "bf16")
    assert args.vit == "vit_base_patch16_224"


def test_quick_shrinks_after_gpu_base(bts: ModuleType, fake_gpu: None) -> None:
    args = bts.parse_args(["--gpu-base", "--quick", "--no-append"])
    assert (args.batch, args.repeats, args.steps, args.text_len) == (4, 2, 1, 32)
    assert args.ecg_tower == "ecg_vit_conv1d"


@pytest.mark.parametrize("argv", [["--device", "cuda"], ["--gpu-base"]])
def test_cuda_without_gpu_is_one_line_error(
    bts: ModuleType, no_gpu: None, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        bts.parse_args([*argv, "--no-append"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--device cuda" in err and "no CUDA GPU" in err


def test_bf16_on_gpu_without_bf16_is_an_error(
    bts: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Old GPU")
    with pytest.raises(SystemExit) as exc:
        bts.parse_args(["--gpu-base", "--no-append"])
    assert exc.value.code == 2
    assert "Old GPU lacks bf16" in capsys.readouterr().err


@pytest.mark.parametrize(("available", "expected"), [(True, "cuda"), (False, "cpu")])
def test_auto_device(
    bts: ModuleType, monkeypatch: pytest.MonkeyPatch, available: bool, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert bts.parse_args(["--device", "auto", "--no-append"]).device == expected


def test_autocast_follows_device_and_precision(bts: ModuleType, no_gpu: None) -> None:
    bf16 = bts.parse_args(["--precision", "bf16", "--no-append"])
    with bts.autocast(bf16):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with bts.autocast(bts.parse_args(["--no-append"])):
        assert not torch.is_autocast_enabled("cpu")


def test_timed_steps_rate_cpu_time_and_nonfinite_loss(bts: ModuleType) -> None:
    calls: list[int] = []
    released: list[int] = []

    def step() -> torch.Tensor:
        calls.append(1)
        return torch.tensor(1.0)

    cpu: list[float] = []
    mem: list[int] = []
    run = bts.timed_steps(step, 3, 8, cpu, mem_log=mem, after=lambda: released.append(1))
    rate = run()
    assert len(calls) == 3 and len(cpu) == 1 and released == [1]
    assert rate > 0 and math.isfinite(rate)
    assert mem == []  # no GPU counters on the CPU

    bad = bts.timed_steps(lambda: torch.tensor(float("nan")), 2, 8, [])
    with pytest.raises(FloatingPointError, match="non-finite"):
        bad()


def test_side_state_bytes_counts_parameters_and_adamw_state(bts: ModuleType) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)  # 15 float32 parameters
    opt = torch.optim.AdamW(model.parameters())
    side = bts.Side("lin", model, lambda: torch.tensor(0.0), 15, opt)
    assert side.state_bytes() == 15 * 4
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    # + exp_avg and exp_avg_sq (15 floats each) + one step counter per parameter tensor
    steps = sum(st["step"].numel() * st["step"].element_size() for st in opt.state.values())
    assert side.state_bytes() == 15 * 4 * 3 + steps
    side.release()
    assert all(p.grad is None for p in model.parameters())


def test_device_description_names_cpu_and_gpu(
    bts: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    common = sys.modules["_common"]
    assert common.device_description("cpu").startswith("cpu (")
    props = SimpleNamespace(total_memory=141 * 2**30, major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    line = common.device_description("cuda")
    assert line.startswith("cuda:0: NVIDIA H200 (141 GiB, compute capability 9.0, 1 visible)")
    assert f"CUDA {torch.version.cuda}" in line and "bf16 yes" in line and "TF32 matmul" in line
