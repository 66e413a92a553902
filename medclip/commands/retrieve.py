"""``medclip retrieve --bundle B --query FILE|TEXT -k 5 [--modality xray|ecg|text]``.

Searches the bundle's case index (``B/index``, built by ``medclip index build``; or ``--index``)
across modalities: an X-ray file finds similar X-rays, ECGs or reports, an ECG file likewise, and
a free-text query (anything that is not an existing file) finds X-rays, ECGs or reports.
``--modality`` restricts the hits to one modality. Prints rank, case id, modality, cosine score,
labels and a report snippet for each hit (``--json`` for JSON). Research use only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``retrieve`` sub-command."""
    p = sub.add_parser(
        "retrieve",
        help="find similar cases (X-ray / ECG / report) for a file or a text query",
        description="Embed a query (X-ray file, ECG record or free text) with the bundle and "
        "search its case index. Research use only: similar cases are not a diagnosis.",
    )
    p.add_argument("--bundle", type=Path, required=True, help="model bundle folder")
    p.add_argument("--query", required=True, help="X-ray / ECG file path, or a text query")
    p.add_argument("-k", type=int, default=5, help="number of hits (default 5)")
    p.add_argument(
        "--modality",
        choices=("xray", "ecg", "text"),
        default=None,
        help="only return cases of this modality (default: all)",
    )
    p.add_argument(
        "--query-as",
        choices=("xray", "ecg", "text"),
        default=None,
        help="treat the query as this modality (default: detected)",
    )
    p.add_argument("--index", type=Path, default=None, help="index folder (default BUNDLE/index)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=run)


def _short(text: str, n: int = 90) -> str:
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


def run(args: argparse.Namespace) -> int:
    """Search and print the hits."""
    from medclip.bundle import RESEARCH_NOTICE
    from medclip.errors import MedclipError
    from medclip.indexing import default_index_dir, preview_file, search_query
    from medclip.inference import Predictor
    from medclip.retrieval import CaseIndex

    if args.k < 1:
        raise MedclipError("-k must be >= 1")
    index_dir = args.index or default_index_dir(args.bundle)
    if not (index_dir / "index.json").is_file():
        raise MedclipError(
            f"{index_dir}: no case index; build one with "
            f"`medclip index build --bundle {args.bundle} --data DATA`"
        )
    index = CaseIndex.load(index_dir)
    pred = Predictor.from_path(args.bundle, device=args.device)
    if index.dim != int(pred.model.cfg.embed_dim):
        raise MedclipError(
            f"{index_dir}: {index.dim}-d index but the bundle embeds in "
            f"{pred.model.cfg.embed_dim}-d; rebuild the index with this bundle"
        )
    kind, hits = search_query(
        pred, index, args.query, k=args.k, modality=args.modality, query_as=args.query_as
    )
    if args.json:
        out = {
            "query_modality": kind,
            "hits": [
                {
                    "rank": h.rank,
                    "score": h.score,
                    **h.case.to_dict(),
                    "preview_file": str(preview_file(index_dir, h.case) or "") or None,
                }
                for h in hits
            ],
            "research_use_notice": RESEARCH_NOTICE,
        }
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    where = f" among {args.modality} cases" if args.modality else ""
    print(f"{RESEARCH_NOTICE} Similar cases are not a diagnosis.")
    print(f"query ({kind}) -> top {len(hits)}{where} of {len(index)} cases\n")
    for h in hits:
        labels = ", ".join(h.case.labels) or "-"
        print(f"{h.rank:>3}. {h.case.case_id}  [{h.case.modality}]  score {h.score:.3f}")
        print(f"     labels: {labels}")
        if h.case.report:
            print(f"     report: {_short(h.case.report)}")
    if not hits:
        print("no cases of that modality in the index")
    return 0
