"""``medclip index``: build and inspect similar-case indexes.

``medclip index build --bundle B --data D`` embeds every study of dataset ``D`` (X-ray, ECG and
report, each a case) with bundle ``B`` and saves a faiss case index into ``B/index`` (or
``--out``). ``--kind auto`` uses exact search below 100,000 cases per modality and HNSW above;
``exact``, ``hnsw`` or ``ivf`` force a kind. ``--append`` adds the studies not yet indexed.
The save is atomic and the index loads from JSON + faiss files (no pickle).
``medclip index info DIR`` prints the index's size and kinds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DATASETS: tuple[str, ...] = ("synthetic", "mimic", "ptbxl", "chexpert")
KINDS: tuple[str, ...] = ("auto", "exact", "hnsw", "ivf")
MODALITIES: tuple[str, ...] = ("xray", "ecg", "text")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``index`` sub-command (``build`` and ``info``)."""
    p = sub.add_parser(
        "index",
        help="build a similar-case index (faiss) from a dataset",
        description="Embed a dataset's X-rays, ECGs and reports with a bundle and save a case "
        "index (faiss + case table with ids, modality, labels, report snippet and preview "
        "images; no patient identifiers).",
    )
    actions = p.add_subparsers(dest="index_action", metavar="ACTION", required=True)
    b = actions.add_parser("build", help="build or extend an index")
    b.add_argument("--bundle", type=Path, required=True, help="model bundle folder")
    b.add_argument("--data", type=Path, required=True, help="dataset folder")
    b.add_argument(
        "--dataset", choices=DATASETS, default=None, help="dataset reader (default: detected)"
    )
    b.add_argument("--kind", choices=KINDS, default="auto", help="faiss index kind")
    b.add_argument("--out", type=Path, default=None, help="index folder (default: BUNDLE/index)")
    b.add_argument("--append", action="store_true", help="add new studies to an existing index")
    b.add_argument(
        "--force", action="store_true", help="--append even if built with another bundle"
    )
    b.add_argument("--split", default=None, help="only this split (train/val/test)")
    b.add_argument(
        "--modalities",
        nargs="+",
        choices=MODALITIES,
        default=list(MODALITIES),
        help="which modalities become cases",
    )
    b.add_argument("--limit", type=int, default=None, help="index at most N studies")
    previews = b.add_mutually_exclusive_group()
    previews.add_argument("--previews", action="store_true", help="always write preview PNGs")
    previews.add_argument("--no-previews", action="store_true", help="never write previews")
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    b.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    b.add_argument("--no-progress", action="store_true", help="hide progress bars")
    b.set_defaults(func=run)
    i = actions.add_parser("info", help="describe an index")
    i.add_argument("index_dir", type=Path, metavar="DIR", help="index folder")
    i.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch ``build`` / ``info``."""
    if args.index_action == "info":
        return _info(args.index_dir)
    return _build(args)


def _info(path: Path) -> int:
    from medclip.indexing import read_build_info
    from medclip.retrieval import CaseIndex

    index = CaseIndex.load(path)
    counts: dict[str, int] = {}
    for case in index.cases:
        counts[case.modality] = counts.get(case.modality, 0) + 1
    info = read_build_info(path)
    print(
        json.dumps(
            {
                "index": str(path),
                "cases": len(index),
                "per_modality": counts,
                "kinds": {m: index.kind_of(m) for m in index.modalities},
                "dim": index.dim,
                "bundle": info.get("bundle"),
                "builds": len(info.get("builds") or []),
            },
            indent=2,
        )
    )
    return 0


def _build(args: argparse.Namespace) -> int:
    import torch

    from datamodules.sources import load_studies
    from medclip.bundle import load_bundle
    from medclip.indexing import build_case_index, default_index_dir, detect_dataset

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dataset = args.dataset or detect_dataset(args.data)
    studies = load_studies(dataset, args.data, split=args.split)
    if args.limit is not None:
        studies = studies[: args.limit]
    out = args.out or default_index_dir(args.bundle)
    bundle = load_bundle(args.bundle, map_location=device)
    previews = True if args.previews else False if args.no_previews else None
    result = build_case_index(
        bundle,
        studies,
        out,
        kind=args.kind,
        modalities=args.modalities,
        append=args.append,
        previews=previews,
        batch_size=args.batch_size,
        device=device,
        num_workers=args.workers,
        progress=not args.no_progress,
        dataset=dataset,
        force=args.force,
    )
    added = ", ".join(f"{m} {n}" for m, n in result.n_added.items())
    print(f"index: {result.index_dir} ({result.n_total} cases; added {added})")
    skipped = sum(result.n_skipped.values())
    if skipped:
        print(f"already indexed, skipped: {skipped}")
    print("search: " + ", ".join(f"{m} {k}" for m, k in result.kinds.items()))
    return 0
