"""``medclip finetune --bundle B --data FOLDER|CSV [--out OUT] [--folds K]``.

``FOLDER``: ImageFolder-style tree of X-rays (``FOLDER/<class>/*.png|jpg|dcm``; an optional
``labels.csv`` with ``file``, ``patient`` and ``duplicate_of`` columns groups folds by patient and
drops duplicates). ``CSV``: ECG records with ``path`` and ``label`` columns (optional
``patient``). Cross-validates a linear head on frozen tower features (optionally also the last
``--train-blocks`` blocks), then writes a classifier bundle (safetensors + JSON) and
``report.json`` / ``report.md`` to ``OUT``. See :mod:`medclip.finetune`. Research use only.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``finetune`` sub-command."""
    p = sub.add_parser(
        "finetune",
        help="fine-tune a classifier on labelled X-rays (class folders) or ECGs (CSV)",
        description="Train and cross-validate (patient-grouped K-fold) a classifier on top of a "
        "bundle's X-ray or ECG tower, then save it as a classifier bundle with an evaluation "
        "report. Research use only.",
    )
    p.add_argument("--bundle", type=Path, required=True, help="base model bundle folder")
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder of class sub-folders (X-rays) or CSV of ECG records (path,label)",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default: finetuned)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument(
        "--features",
        choices=("tower", "embedding"),
        default="tower",
        help="frozen features: tower output (default) or the shared embedding",
    )
    p.add_argument(
        "--train-blocks",
        type=int,
        default=0,
        help="also fine-tune the tower's last N blocks (default 0: frozen tower)",
    )
    p.add_argument("--epochs", type=int, default=5, help="epochs when fine-tuning blocks")
    p.add_argument("--lr", type=float, default=1e-4, help="block learning rate (head: 10x)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CI")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fine-tune, save, and print the cross-validated AUROC."""
    import torch

    from medclip.bundle import load_bundle
    from medclip.finetune import FinetuneConfig, finetune, load_finetune_data

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = FinetuneConfig(
        folds=args.folds,
        features=args.features,
        train_blocks=args.train_blocks,
        epochs=args.epochs,
        lr=args.lr,
        seed=args.seed,
        batch_size=args.batch_size,
        device=device,
        n_boot=args.n_boot,
        progress=not args.no_progress,
    )
    data = load_finetune_data(args.data)
    bundle = load_bundle(args.bundle, map_location=device)
    out = args.out or Path("finetuned")
    result = finetune(bundle, data, out, cfg)
    rep = result.report
    s = rep["data"]
    print("medclip finetune: research use only")
    print(
        f"data: {s['n']} {s['modality']} files, "
        + ", ".join(f"{c} {n}" for c, n in s["per_class"].items())
        + f"; {s['groups']} groups; {s['dropped_duplicates']} duplicates dropped"
    )
    cv = rep["cv"]
    b = cv.get("binary_auroc")
    if b and b.get("auroc") is not None:
        lo, hi = b["ci"]
        ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
        print(f"{rep['folds']}-fold CV AUROC ({b['positive_class']}): {b['auroc']:.3f}{ci}")
    macro = cv["auroc_one_vs_rest"]["macro_auroc"]
    if macro is not None:
        print(f"{rep['folds']}-fold CV macro AUROC (one-vs-rest): {macro:.3f}")
    print(f"accuracy (argmax): {cv['accuracy']:.3f}")
    print(f"classifier bundle: {out}; report: {out / 'report.md'}")
    return 0
