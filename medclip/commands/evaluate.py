"""``medclip evaluate PROTOCOL --bundle B --data ROOT [--out DIR]``: benchmark protocols.

Protocols: ``ptbxl`` (zero-shot + linear probe per task), ``chexpert-5x200``, ``chexpert``,
``mimic-cxr``, ``edema`` and ``retrieval``; see :mod:`medclip.evaluate`. Each writes
``results.json``, ``results.md`` and ROC PNGs into ``--out`` (default
``medclip-eval/<protocol>``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

PROTOCOLS: tuple[str, ...] = (
    "ptbxl",
    "chexpert-5x200",
    "chexpert",
    "mimic-cxr",
    "edema",
    "retrieval",
)
PTBXL_TASKS: tuple[str, ...] = (
    "all",
    "diagnostic",
    "subdiagnostic",
    "superdiagnostic",
    "form",
    "rhythm",
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command."""
    p = sub.add_parser(
        "evaluate",
        help="run an evaluation protocol (AUROC with bootstrap CIs, F1, R@K)",
        description="Evaluate a bundle with a benchmark protocol and write results.json, "
        "results.md and ROC PNGs. AUROC is computed once over the whole test set with "
        "bootstrap 95%% CIs; F1 thresholds are tuned on the validation split only. "
        "Research use only.",
    )
    p.add_argument("protocol", choices=PROTOCOLS, help="evaluation protocol")
    p.add_argument("--bundle", type=Path, required=True, help="model bundle folder")
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="dataset folder (PTB-XL, CheXpert, MIMIC root, or a synthetic OUT folder)",
    )
    p.add_argument("--out", type=Path, default=None, help="default: medclip-eval/PROTOCOL")
    p.add_argument(
        "--task",
        nargs="+",
        choices=PTBXL_TASKS,
        default=["superdiagnostic"],
        help="ptbxl: benchmark task(s)",
    )
    p.add_argument(
        "--fractions",
        nargs="+",
        type=float,
        default=[0.01, 0.1, 1.0],
        help="linear-probe label budgets (shares of the training rows)",
    )
    p.add_argument(
        "--probe",
        action="store_true",
        help="chexpert / mimic-cxr: also run linear probes (ptbxl always does)",
    )
    p.add_argument("--no-probe", action="store_true", help="ptbxl: zero-shot only")
    p.add_argument("--no-zero-shot", action="store_true", help="ptbxl: linear probe only")
    p.add_argument(
        "--features",
        choices=("tower", "embedding"),
        default="tower",
        help="probe features: tower output (default) or the shared embedding",
    )
    p.add_argument("--window-s", type=float, default=2.5, help="ptbxl probe window (0: whole)")
    p.add_argument("--stride-s", type=float, default=1.25, help="ptbxl probe window stride")
    p.add_argument("--n-per-class", type=int, default=200, help="chexpert-5x200 images per class")
    p.add_argument(
        "--threshold-rows",
        type=int,
        default=1000,
        help="chexpert: train images sampled to tune F1 thresholds",
    )
    p.add_argument(
        "--edema-labels",
        choices=("consensus", "expert", "regex"),
        default="consensus",
        help="edema: grade file",
    )
    p.add_argument(
        "--dataset",
        choices=("synthetic", "mimic", "ptbxl", "chexpert"),
        default=None,
        help="retrieval: dataset reader (default: detected)",
    )
    p.add_argument(
        "--split",
        default="test",
        help="retrieval: split to search within (train/val/test, or 'all')",
    )
    p.add_argument("--limit", type=int, default=None, help="at most N records per split")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the protocol; print where the results went and the headline numbers."""
    import torch

    from medclip.bundle import load_bundle
    from medclip.evaluate import EvalOptions, run_evaluation

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    opts = EvalOptions(
        batch_size=args.batch_size,
        device=device,
        num_workers=args.workers,
        n_boot=args.n_boot,
        seed=args.seed,
        limit=args.limit,
        fractions=tuple(args.fractions),
        probe=args.probe,
        features=args.features,
        progress=not args.no_progress,
        command=shlex.join(["medclip", *sys.argv[1:]]) if sys.argv else "medclip evaluate",
    )
    kwargs: dict[str, object] = {}
    if args.protocol == "ptbxl":
        kwargs = {
            "tasks": args.task,
            "zero_shot": not args.no_zero_shot,
            "probe": not args.no_probe,
            "window_s": args.window_s,
            "stride_s": args.stride_s,
        }
    elif args.protocol == "chexpert-5x200":
        kwargs = {"n_per_class": args.n_per_class}
    elif args.protocol == "chexpert":
        kwargs = {"threshold_rows": args.threshold_rows}
    elif args.protocol == "edema":
        kwargs = {"source": args.edema_labels}
    elif args.protocol == "retrieval":
        kwargs = {"dataset": args.dataset, "split": None if args.split == "all" else args.split}
    out = args.out or Path("medclip-eval") / args.protocol
    bundle = load_bundle(args.bundle, map_location=device)
    report = run_evaluation(args.protocol, bundle, args.data, out, opts, **kwargs)
    print(f"medclip evaluate {args.protocol}: research use only")
    for key, res in report.results.items():
        if not isinstance(res, dict):
            continue
        auroc = res.get("auroc") or res.get("auroc_one_vs_rest")
        if isinstance(auroc, dict):
            macro = auroc.get("macro_auroc")
            ci = auroc.get("macro_ci") or [None, None]
            text = "n/a" if macro is None else f"{macro:.3f}"
            if ci[0] is not None and ci[1] is not None:
                text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
            print(f"  {key}: macro AUROC {text} (n={res.get('n')})")
        elif key == "retrieval":
            for pair, m in res.items():
                print(f"  {pair}: R@1 {m['R@1']:.3f}  R@5 {m['R@5']:.3f}  R@10 {m['R@10']:.3f}")
    print(f"results: {out / 'results.json'}, {out / 'results.md'}")
    return 0
