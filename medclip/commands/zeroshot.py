"""``medclip zeroshot --bundle B FILE...``: zero-shot label probabilities (research use only).

Files: chest X-rays (DICOM, PNG, JPEG) and 12-lead ECGs (WFDB record: ``.hea``, ``.dat``,
``.mat`` or the stem; DICOM waveform). Grouping: when the files are at most one X-ray and at
most one ECG they are **one study** and every label is scored from the modalities that may score
it (X-ray findings from the X-ray, ECG labels from the ECG); otherwise, or with ``--each``, each
file is scored alone. Prints one table per study, labels sorted by probability, after a line
naming what the bundle was trained on. ``--json`` prints one JSON object per study instead.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any


def _problem(exc: Exception) -> str:
    """The error's problem with the file's name only (folders can carry patient ids)."""
    path = getattr(exc, "path", None)
    problem = getattr(exc, "problem", None)
    if path and problem:
        return f"{Path(path).name}: {problem}"
    return str(exc)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``zeroshot`` sub-command."""
    p = sub.add_parser(
        "zeroshot",
        help="zero-shot label probabilities for X-ray / ECG files (research use only)",
        description="Score chest X-rays (DICOM/PNG/JPEG) and 12-lead ECGs (WFDB/DICOM) against "
        "the bundle's prompt sets (positive vs negated prompts per label). At most one X-ray "
        "and one ECG form one study (fused); otherwise, or with --each, each file is scored "
        "alone. Research use only: not a diagnosis.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="X-ray or ECG file(s)")
    p.add_argument("--bundle", required=True, help="model bundle folder")
    p.add_argument("--each", action="store_true", help="score every file as its own study")
    p.add_argument("--top", type=int, default=None, help="show only the K most likely labels")
    p.add_argument(
        "--labels", nargs="+", default=None, help="score these labels (default: the bundle's)"
    )
    p.add_argument("--json", action="store_true", help="print JSON (one object per study)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=run)


def _fmt(v: float) -> str:
    return "    -" if math.isnan(v) else f"{v:.3f}"


def _relevant(cfg: Any, label: str, modality: str) -> bool:
    from medclip.prompts import DEFAULT_LABEL_MODALITIES

    mods = cfg.label_modalities.get(label) or DEFAULT_LABEL_MODALITIES.get(label, ("xray", "ecg"))
    return modality in mods


def format_table(result: Any, top: int | None = None, cfg: Any | None = None) -> list[str]:
    """Text table of a :class:`~medclip.zeroshot.ZeroShotResult`, most likely label first.

    Per-modality columns show ``-`` where that modality does not score the label (``cfg``:
    the :class:`~medclip.zeroshot_config.ZeroShotConfig` in use).
    """
    mods = list(result.per_modality)
    rows = result.top(len(result.labels) if top is None else top)
    width = max([len(lab) for lab, _ in rows] + [5])
    head = f"  {'label':<{width}}  prob." + "".join(f"  {m:>5}" for m in mods)
    if result.thresholds is not None:
        head += "  call"
    lines = [head, "  " + "-" * (len(head) - 2)]
    index = {lab: i for i, lab in enumerate(result.labels)}
    for lab, prob in rows:
        i = index[lab]
        line = f"  {lab:<{width}}  {prob:.3f}"
        for m in mods:
            v = float(result.per_modality[m][i])
            shown = cfg is None or _relevant(cfg, lab, m)
            line += f"  {_fmt(v if shown else math.nan)}"
        if result.thresholds is not None:
            line += "  yes" if lab in result.predicted else "   - "
        lines.append(line)
    return lines


def run(args: argparse.Namespace) -> int:
    """Score every study; returns 1 when a file could not be read, else 0."""
    from datamodules.errors import MedclipDataError
    from medclip.inference import Predictor
    from medclip.inputs import group_studies

    pred = Predictor.from_path(args.bundle, device=args.device, labels=args.labels)
    studies = group_studies(args.files, each=args.each)
    # file names only: MIMIC / CheXpert folder names carry patient ids
    names = [[Path(f).name for f in s.files] for s in studies]
    notice = (
        f"RESEARCH USE ONLY - not a diagnosis, not a medical device. Model trained on: "
        f"{pred.trained_on}"
    )
    if not args.json:
        print(notice)
    failed = 0
    for k, (study, files) in enumerate(zip(studies, names), start=1):
        try:
            result = pred.zeroshot(xray=study.xray, ecg=study.ecg)
        except (MedclipDataError, OSError) as exc:
            failed += 1
            if args.json:
                print(
                    json.dumps(
                        {"files": files, "error": exc.__class__.__name__ + ": " + _problem(exc)},
                        ensure_ascii=False,
                    )
                )
            else:
                print(f"\nstudy {k}: {', '.join(files)}\n  error: {_problem(exc)}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"files": files, **result.to_dict()}, ensure_ascii=False))
            continue
        print(f"\nstudy {k}: {', '.join(files)}")
        for line in format_table(result, args.top, pred.zeroshot_config):
            print(line)
    if not args.json:
        print(f"\n{notice}")
    return 1 if failed else 0
