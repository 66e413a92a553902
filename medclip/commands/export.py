"""``medclip export CKPT OUT``: write a model bundle (DESIGN.md §3) from a training checkpoint.

The checkpoint is read with ``torch.load(weights_only=True)``; the bundle holds
``config.json``, ``model.safetensors``, the tokenizer, ``labels.json`` and ``card.md`` and loads
offline without pickle (``medclip.load_bundle``). LoRA adapters are merged into the text weights
unless ``--keep-lora``. Metrics for the card come from ``--metrics`` or the run's
``metrics.json`` (two folders above the checkpoint) when present.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    p = sub.add_parser(
        "export",
        help="turn a training checkpoint into a model bundle (safetensors + JSON)",
        description="Write a model bundle folder from a `medclip fit` checkpoint. The bundle "
        "loads offline without pickle. Research use only.",
    )
    p.add_argument("checkpoint", help="Lightning checkpoint from `medclip fit` (.ckpt)")
    p.add_argument("out", help="bundle folder to create")
    p.add_argument(
        "--keep-lora",
        action="store_true",
        help="keep LoRA adapters as separate tensors instead of merging them (default: merge)",
    )
    p.add_argument("--metrics", default=None, help="JSON file with metrics for the model card")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT folder")
    p.set_defaults(func=run)


def _metrics(args: argparse.Namespace) -> dict[str, float]:
    import json
    from pathlib import Path

    path = (
        Path(args.metrics)
        if args.metrics
        else Path(args.checkpoint).parent.parent / ("metrics.json")
    )
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    values = data.get("metrics", data) if isinstance(data, dict) else {}
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}


def run(args: argparse.Namespace) -> int:
    """Export; prints the bundle folder."""
    from medclip.bundle import export_bundle

    out = export_bundle(
        args.checkpoint,
        args.out,
        metrics=_metrics(args),
        merge_lora=not args.keep_lora,
        overwrite=args.overwrite,
    )
    print(f"bundle written: {out}")
    print("load it with: medclip.load_bundle(PATH)  (offline, no pickle)")
    return 0
