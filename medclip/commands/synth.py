"""``medclip synth OUT``: write synthetic look-alike datasets in the real on-disk formats."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``synth`` sub-command."""
    p = sub.add_parser(
        "synth",
        help="write synthetic PTB-XL / MIMIC / CheXpert look-alikes (not real patients)",
        description="Write small synthetic datasets in the exact on-disk formats of PTB-XL, "
        "MIMIC-IV-ECG, MIMIC-CXR (DICOM + reports), MIMIC-CXR-JPG, CheXpert and the MIMIC-CXR "
        "edema grades, drawn from one seeded population of synthetic patients whose conditions "
        "agree across X-ray, ECG and report. SYNTHETIC DATA: not real patients.",
    )
    p.add_argument("out", help="output folder (absent, empty, or a previous synthetic dataset)")
    p.add_argument("--n", type=int, default=200, help="number of synthetic patients (200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument(
        "--with-corrupt",
        action="store_true",
        help="also write corrupt/ with broken files for reader error tests",
    )
    p.add_argument("--image-size", type=int, default=256, help="X-ray image height in pixels (256)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the dataset and print where it went."""
    from datamodules.synthetic import NOTICE, generate

    try:
        layout = generate(
            args.out,
            n=args.n,
            seed=args.seed,
            with_corrupt=args.with_corrupt,
            image_size=args.image_size,
            progress=not args.no_progress,
        )
    except FileExistsError as exc:
        raise ValueError(str(exc)) from exc
    print(f"{NOTICE}: wrote {args.n} synthetic patients (seed {args.seed}) to {layout.root}")
    for name in (
        "ptbxl",
        "mimic_ecg",
        "mimic_cxr",
        "mimic_cxr_jpg",
        "chexpert",
        "edema",
        "corrupt",
    ):
        path = getattr(layout, name)
        if path is not None:
            print(f"  {name:14s} {path}")
    return 0
