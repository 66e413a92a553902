"""``medclip fit``: tri-modal contrastive pre-training from a preset or YAML config.

``medclip fit --config tiny --out runs/tiny`` generates a synthetic dataset when
``data.dataset`` is ``synthetic`` and the data folder has none, trains with progress bars, and
writes ``OUT/checkpoints/{last,best}.ckpt`` (atomically), ``OUT/logs`` (CSV), ``OUT/tb``
(TensorBoard), ``OUT/logs/steps.csv`` (loss per optimizer step) and ``OUT/metrics.json``.
``--resume`` continues from ``OUT/checkpoints/last.ckpt`` (refreshed every ``--checkpoint-every``
steps), mid-epoch included, with the data order and random states of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``fit`` sub-command."""
    p = sub.add_parser(
        "fit",
        help="contrastive pre-training of X-ray, ECG and report towers (shared space)",
        description="Train the tri-modal shared embedding space (masked InfoNCE over X-ray-text, "
        "ECG-text and X-ray-ECG pairs, learnable temperature). Research use only.",
    )
    p.add_argument("--config", default="small", help="preset (tiny, small, base) or YAML path")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. optim.lr_towers=1e-4 (repeatable)",
    )
    p.add_argument("--data-root", default=None, help="data folder (overrides data.root)")
    p.add_argument("--out", default=None, help="run folder (default: trainer.out_dir/<name>)")
    p.add_argument("--max-time-s", type=float, default=None, help="stop after this many seconds")
    p.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=None,
        metavar="CKPT",
        help="continue from a checkpoint (default: OUT/checkpoints/last.ckpt)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=500,
        metavar="N",
        help="also refresh OUT/checkpoints/last.ckpt every N optimizer steps (0: only at epoch "
        "ends and when training stops); a killed run resumes from it with --resume",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train; prints the run folder, checkpoints and final metrics."""
    from pathlib import Path

    from medclip.config import load_config
    from medclip.fit import fit

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path(cfg.trainer.out_dir) / cfg.name
    result = fit(
        cfg,
        data_root=args.data_root,
        out_dir=out,
        max_time_s=args.max_time_s,
        resume=args.resume,
        enable_progress_bar=not args.no_progress,
        checkpoint_every_n_steps=args.checkpoint_every,
    )
    print(f"run folder:      {result.out_dir}")
    print(f"last checkpoint: {result.last_checkpoint}")
    if result.best_checkpoint:
        print(f"best checkpoint: {result.best_checkpoint}")
    print(f"optimizer steps: {result.global_step}")
    shown = {k: round(v, 4) for k, v in sorted(result.metrics.items())}
    print("metrics:", json.dumps(shown))
    print(f"export a bundle: medclip export {result.last_checkpoint} {result.out_dir / 'bundle'}")
    return 0
