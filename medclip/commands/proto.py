"""``medclip proto``: train ProtoECGNet (``fit``), explain an ECG with its prototypes (``explain``).

``medclip proto fit --config small --data ROOT [--out DIR]`` runs every stage on a PTB-XL-layout
folder, resumes an interrupted run in the same ``--out`` folder, and writes ``OUT/bundle``.

``medclip proto explain --bundle OUT/bundle RECORD`` prints, for each predicted label, the top
prototypes (branch, class, similarity, contribution, source ECG and window) and writes a PNG that
draws them over the record's 12 leads. Research use only.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``proto`` sub-command (with ``fit`` and ``explain``)."""
    p = sub.add_parser(
        "proto",
        help="ProtoECGNet: train interpretable prototype ECG classifiers, explain ECGs",
        description="ProtoECGNet (arXiv 2504.08713): rhythm / morphology / global prototype "
        "branches, projection onto training ECGs, fusion, case-based explanations. "
        "Research use only.",
    )
    ps = p.add_subparsers(dest="proto_command", metavar="ACTION")

    f = ps.add_parser(
        "fit",
        help="run all stages on PTB-XL-layout data and export a bundle (resumable)",
        description="Run BCE pre-training, joint prototype training, projection and fusion on a "
        "folder in the PTB-XL layout (ptbxl_database.csv, scp_statements.csv, records100/). "
        "Rerunning with the same --out continues an interrupted run.",
    )
    f.add_argument("--config", default="small", help="preset (tiny, small, base) or YAML path")
    f.add_argument("--data", required=True, help="PTB-XL-layout folder (or a folder holding one)")
    f.add_argument("--out", default=None, help="run folder (default: <trainer.out_dir>/proto)")
    f.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. proto.epochs_joint=3 (repeatable)",
    )
    f.add_argument("--restart", action="store_true", help="discard an earlier run in --out")
    f.add_argument("--no-progress", action="store_true", help="hide progress bars")
    f.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: torch's choice, one per core); on a CPU shared with "
        "other jobs, 1 can be several times faster for the small preset",
    )
    f.set_defaults(func=run_fit)

    e = ps.add_parser(
        "explain",
        help="explain one ECG record with its most contributing prototypes",
        description="Predict labels for RECORD (WFDB stem/.hea/.mat or DICOM waveform) and list, "
        "for each predicted label, the top prototypes with their source training ECG.",
    )
    e.add_argument("--bundle", required=True, help="ProtoECGNet bundle folder")
    e.add_argument("record", help="ECG record: WFDB stem, .hea, .dat, .mat or DICOM .dcm")
    e.add_argument("-k", "--top-k", type=int, default=None, help="prototypes per label (5)")
    e.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="one probability threshold for every label (default: tuned on validation)",
    )
    e.add_argument(
        "--png",
        default="proto_explanation.png",
        help="where to write the figure (default: ./proto_explanation.png)",
    )
    e.add_argument("--json", action="store_true", help="print JSON instead of the table")
    e.set_defaults(func=run_explain)
    p.set_defaults(func=lambda args: _help(p))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def run_fit(args: argparse.Namespace) -> int:
    """``medclip proto fit``."""
    from medclip.config import load_config
    from medclip.proto.fit import fit_proto

    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise SystemExit("--threads: must be >= 1")
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    result = fit_proto(
        cfg, args.data, args.out, progress=not args.no_progress, restart=args.restart
    )
    test = result.metrics.get("test", {})
    print("ProtoECGNet test macro AUROC (whole test fold; research use only):")
    for name, m in test.items():
        if m.get("macro_auroc") is None:
            continue
        ci = m.get("macro_ci") or [None, None]
        ci_txt = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if None not in ci else ""
        print(f"  {name:<11} {m['macro_auroc']:.4f}{ci_txt}  n={m.get('n')}")
    stages: dict[str, float] = {}
    for unit, sec in result.timing_s.items():
        key = unit.split("/")[0]
        stages[key] = stages.get(key, 0.0) + sec
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()))
    if result.units_skipped:
        print(f"resumed: skipped {len(result.units_skipped)} finished stage unit(s)")
    print(f"bundle: {result.bundle_dir}")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    """``medclip proto explain``."""
    import json

    from datamodules.ecg_io import read_ecg
    from medclip.proto.bundle import load_proto_bundle
    from medclip.proto.explain import explain_ecg, format_table
    from medclip.proto.plot import plot_explanation

    bundle = load_proto_bundle(args.bundle)
    ecg = read_ecg(args.record)
    result = explain_ecg(bundle, ecg, k=args.top_k, threshold=args.threshold)
    png = plot_explanation(result, Path(args.png), max_prototypes=args.top_k or 5)
    if args.json:
        payload = {
            "note": result.note,
            "training_data": result.training_data,
            "labels": [
                {
                    "label": lab.label,
                    "probability": lab.probability,
                    "threshold": lab.threshold,
                    "above_threshold": lab.above_threshold,
                    "prototypes": [
                        {
                            "branch": e.branch,
                            "prototype_id": e.prototype_id,
                            "prototype_class": e.prototype_class,
                            "similarity": e.similarity,
                            "contribution": e.contribution,
                            "source_ecg_id": e.source_ecg_id,
                            "source_window_s": list(e.source_window_s),
                            "input_window_s": list(e.input_window_s),
                        }
                        for e in lab.prototypes
                    ],
                }
                for lab in result.labels
            ],
            "png": str(png),
        }
        print(json.dumps(payload, indent=2))
    else:
        print(format_table(result))
        print(f"figure: {png}")
    return 0
