"""Fine-tuning benchmark on real chest X-rays: Kermany NORMAL vs PNEUMONIA, cross-validated.

One command: with ``--bundle`` it uses that bundle; without, it first trains a quick bundle
(``--preset``, default ``tiny``, for ``--steps`` optimizer steps on a freshly generated synthetic
dataset) and exports it. Then ``medclip.finetune`` runs a patient-grouped, stratified K-fold
cross-validation of a linear head on the frozen X-ray tower (optionally also the last
``--train-blocks`` blocks) over the real images in
``../shared/data/real/cxr/kermany_test_224`` (313 images; byte-identical duplicates dropped,
folds grouped by patient). The out-of-fold AUROC with its bootstrap 95 % CI, per-fold AUROC,
accuracy and timings are printed as a Markdown block with the machine and the exact command,
and appended to ``BENCHMARKS.md``. Research use only.

    python benchmarks/bench_finetune_kermany.py                  # tiny bundle, 5 folds
    python benchmarks/bench_finetune_kermany.py --bundle runs/small/bundle --train-blocks 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "real" / "cxr" / "kermany_test_224"
HEADING = (
    "## Fine-tuning on real X-rays: Kermany pneumonia (`benchmarks/bench_finetune_kermany.py`)"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=None, help="bundle to fine-tune (default: train)")
    p.add_argument("--preset", default="tiny", help="preset for the quick bundle (tiny/small)")
    p.add_argument("--steps", type=int, default=30, help="training steps of the quick bundle")
    p.add_argument("--synth-n", type=int, default=120, help="synthetic patients for it")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ImageFolder of X-rays")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--features", choices=("tower", "embedding"), default="tower")
    p.add_argument("--train-blocks", type=int, default=0)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--device", default=None, help="default: cuda if available")
    p.add_argument("--work", type=Path, default=None, help="work folder (default: a temp dir)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    p.add_argument("--no-append", action="store_true", help="print only")
    return p.parse_args(argv)


def machine_info(device: str) -> dict[str, str]:
    """CPU, cores, accelerator and library versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "none (CPU run)"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "gpu": gpu,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": str(torch.__version__),
    }


def quick_bundle(args: argparse.Namespace, work: Path, device: str) -> tuple[Path, str]:
    """Train and export a bundle on synthetic data; returns its path and a description."""
    from datamodules.synthetic import generate
    from medclip.bundle import export_bundle
    from medclip.config import load_config
    from medclip.fit import fit

    data = work / "synthetic"
    if not (data / "synthetic.json").is_file():
        generate(data, n=args.synth_n, seed=args.seed, progress=True)
    accel = "gpu" if device.startswith("cuda") else "cpu"
    cfg = load_config(
        args.preset,
        [
            f"trainer.max_steps={args.steps}",
            "trainer.max_epochs=1000",
            f"trainer.accelerator={accel}",
            "trainer.val_check_interval=0",
            f"trainer.seed={args.seed}",
            f"trainer.out_dir={work / 'run'}",
            f"data.synth_n={args.synth_n}",
            f"data.synth_seed={args.seed}",
        ],
    )
    result = fit(cfg, data_root=data, checkpoint_every_n_steps=0)
    bundle = export_bundle(result.last_checkpoint, work / "bundle", overwrite=True)
    text = (
        f"`{args.preset}` preset trained {result.global_step} steps on {args.synth_n} synthetic "
        "patients (no real data)"
    )
    return bundle, text


def run(args: argparse.Namespace) -> str:
    """Fine-tune, cross-validate and return the Markdown block."""
    import torch

    from medclip.bundle import load_bundle
    from medclip.finetune import FinetuneConfig, finetune, load_image_folder

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.bundle is None:
        bundle_path, bundle_text = quick_bundle(args, work, device)
    else:
        bundle_path, bundle_text = args.bundle, f"`{args.bundle}`"
    t_bundle = time.perf_counter() - t0
    bundle = load_bundle(bundle_path, map_location=device)
    data = load_image_folder(args.data)
    cfg = FinetuneConfig(
        folds=args.folds,
        features=args.features,
        train_blocks=args.train_blocks,
        epochs=args.epochs,
        seed=args.seed,
        device=device,
        n_boot=args.n_boot,
    )
    t1 = time.perf_counter()
    result = finetune(bundle, data, work / "classifier", cfg)
    t_ft = time.perf_counter() - t1
    rep: dict[str, Any] = result.report
    b = rep["cv"]["binary_auroc"]
    s = rep["data"]
    cmd = shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv])
    lines = [
        HEADING,
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()}",
        f"- command: `{cmd}`",
        *[f"- {k}: {v}" for k, v in machine_info(device).items()],
        f"- bundle: {bundle_text}; trained on: {rep['trained_on']}",
        f"- data: {s['n']} real X-rays ("
        + ", ".join(f"{c} {n}" for c, n in s["per_class"].items())
        + f"), {s['groups']} patient groups, {s['dropped_duplicates']} duplicates dropped",
        f"- method: linear head on frozen `{args.features}` features, fine-tuned blocks: "
        f"{args.train_blocks}; {rep['folds']}-fold stratified CV grouped by patient",
        "",
        "| metric | value |",
        "|---|---|",
        f"| out-of-fold AUROC ({b['positive_class']}) | **{b['auroc']:.3f}** "
        f"[{b['ci'][0]:.3f}, {b['ci'][1]:.3f}] |",
        "| per-fold AUROC | " + ", ".join(f"{v:.3f}" for v in rep["fold_auroc"] if v) + " |",
        f"| accuracy (argmax) | {rep['cv']['accuracy']:.3f} |",
        f"| macro F1 (argmax) | {rep['cv']['macro_f1_argmax']:.3f} |",
        f"| time: bundle (train+export or given) | {t_bundle:.1f} s |",
        f"| time: features + CV + final fit | {t_ft:.1f} s |",
        "",
        "Chance AUROC is 0.5. Research use only; a small, single-centre paediatric test set.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run and append the block to BENCHMARKS.md."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = parse_args(argv)
    block = run(args)
    print(block)
    if not args.no_append:
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write("\n" + block)
        print(f"appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
