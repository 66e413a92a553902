"""Inference: zero-shot latency per study and batch embedding throughput for index builds.

Run from the repository root::

    .venv/bin/python benchmarks/bench_inference.py                       # small preset, defaults
    .venv/bin/python benchmarks/bench_inference.py --bundle runs/x/bundle  # a trained bundle
    .venv/bin/python benchmarks/bench_inference.py --quick --no-append     # seconds: checks it runs

Model: ``--bundle`` (a bundle folder), else the ``--preset`` config with random weights exported
to a temporary bundle and loaded with :func:`medclip.bundle.load_bundle` (speed does not depend on
the weights). Data: the synthetic generator (MIMIC-like DICOM X-rays of ``--source-size`` px and
WFDB ECGs), in a temporary folder.

Measured side by side, runs interleaved and repeated, eval mode, ``torch.no_grad``:

* **zero-shot per study** (one X-ray + one ECG, batch 1, ``--studies`` studies per run):
  ``Predictor.zeroshot`` (preprocessing + towers + heads + classifier + fusion) against the
  **bare towers' forward** (X-ray tower + ECG tower on already preprocessed tensors); target
  ratio <= 1.2 with inputs already at the model's size and rate (an ``S x S`` image, ``12 x T``
  at the model's Hz: what remains of preprocessing is the high-pass, standardisation and
  normalisation). Also shown: the same from decoded source-size inputs (adds resizing and
  resampling, which grow with the source), from files (adds DICOM/WFDB decoding), and the
  source-size preprocessing alone. The classifier's prompt embeddings are built once before
  timing (their one-off cost is reported). The headline ratio comes from a second
  measurement of just the first two runs, alternating, ``--pair-repeats`` times: on this VM
  timings drift over seconds, and in the five-run rotation the two runs of a pair can be
  seconds apart.
* **index-build throughput** (studies/s, X-ray + ECG + report each): ``medclip.indexing.
  embed_studies`` from files in batches of ``--batch`` against the model alone
  (``encode_xray``/``encode_ecg``/``encode_text`` on preprocessed tensors, same batches).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
from _common import (
    Stat,
    add_output_args,
    emit,
    interleave,
    paired_ratios,
    report_header,
    set_threads,
    stderr,
    table,
    usable_cores,
)

from datamodules.types import Cxr, Ecg, Study

HEADING = "## Inference (`benchmarks/bench_inference.py`)"
PACKAGES = ("timm", "transformers", "numpy", "scipy")


# ------------------------------------------------------------------------------ setup
def load_model_bundle(args: argparse.Namespace, tmp: Path) -> tuple[Any, str]:
    """The bundle to benchmark and a description of it."""
    from medclip.bundle import export_bundle, load_bundle

    if args.bundle is not None:
        return load_bundle(args.bundle), f"bundle {args.bundle}"
    from medclip.config import load_config
    from medclip.model import MedclipModel

    cfg = load_config(args.preset, args.overrides)
    torch.manual_seed(args.seed)
    model = MedclipModel(cfg.model).eval()
    path = export_bundle(model, tmp / "bundle", config=cfg)
    m = cfg.model
    sets = f" with {', '.join(args.overrides)}" if args.overrides else ""
    return load_bundle(path), (
        f"preset `{args.preset}`{sets}, random weights (X-ray {m.xray.name}, ECG {m.ecg.name}, "
        f"text {m.text.name}, {m.embed_dim}-d, head {m.head})"
    )


def synthetic_studies(args: argparse.Namespace, tmp: Path) -> list[Study]:
    """Readable tri-modal studies from the synthetic generator."""
    from datamodules.sources import load_studies
    from datamodules.synthetic import generate  # type: ignore[attr-defined]

    # the throughput runs cycle over these studies; a few extra patients for unpaired rows
    n_patients = max(args.studies, min(args.n, 64)) + 8
    generate(tmp / "data", n=n_patients, seed=args.seed, image_size=args.source_size)
    studies = load_studies("synthetic", tmp / "data")
    full = [s for s in studies if s.xray_path and s.ecg_path and s.report]
    if len(full) < 2:
        raise SystemExit("the synthetic generator gave fewer than 2 tri-modal studies")
    return full


@dataclass
class Decoded:
    """One study decoded and preprocessed."""

    cxr: Cxr  # source resolution
    ecg: Ecg  # source sampling rate
    cxr_model: Cxr  # already S x S (no resize left to do)
    ecg_model: Ecg  # already at the model's rate and length (no resampling left to do)
    x: torch.Tensor  # (1, 1, S, S) preprocessed
    e: torch.Tensor  # (1, 12, T) preprocessed
    report: str


def decode(studies: Sequence[Study], predictor: Any) -> list[Decoded]:
    """Read and preprocess every study once (outside the timed runs)."""
    from datamodules.cxr_io import read_cxr
    from datamodules.ecg_io import read_ecg
    from datamodules.transforms import (
        crop_or_pad,
        impute_nan,
        preprocess_cxr,
        preprocess_ecg,
        resample,
    )

    cc, ec = predictor.cxr_cfg, predictor.ecg_cfg
    out = []
    for s in studies:
        assert s.xray_path is not None and s.ecg_path is not None
        cxr, ecg = read_cxr(s.xray_path), read_ecg(s.ecg_path)
        x = preprocess_cxr(cxr, cc)
        pix = np.clip(x * np.float32(cc.std) + np.float32(cc.mean), 0.0, 1.0)
        sig = crop_or_pad(resample(impute_nan(ecg.signal), ecg.fs, ec.fs_hz), ec.length)
        out.append(
            Decoded(
                cxr,
                ecg,
                dataclasses.replace(cxr, pixels=pix),
                dataclasses.replace(ecg, signal=np.ascontiguousarray(sig), fs=ec.fs_hz),
                torch.from_numpy(x)[None, None],
                torch.from_numpy(preprocess_ecg(ecg, ec))[None],
                str(s.report),
            )
        )
    return out


# ------------------------------------------------------------------------------ runs
def per_study(items: Sequence[Any], fn: Callable[[Any], object]) -> Callable[[], float]:
    """A run: ``fn`` on every item, one at a time -> milliseconds per item."""

    def run() -> float:
        start = time.perf_counter()
        for it in items:
            fn(it)
        return 1000.0 * (time.perf_counter() - start) / len(items)

    return run


def throughput(n: int, fn: Callable[[], object]) -> Callable[[], float]:
    """A run: ``fn()`` processes ``n`` studies -> studies/s."""

    def run() -> float:
        start = time.perf_counter()
        fn()
        return n / (time.perf_counter() - start)

    return run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: --preset)")
    p.add_argument("--preset", default="small", help="config preset when no --bundle (small)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for --preset, e.g. model.xray.name=xray_vit_small_dropkey",
    )
    p.add_argument("--studies", type=int, default=20, help="studies per zero-shot run (20)")
    p.add_argument("--n", type=int, default=128, help="studies per throughput run (128)")
    p.add_argument("--batch", type=int, default=32, help="index-build batch size (32)")
    p.add_argument(
        "--workers", type=int, default=2, help="DataLoader workers of the extra index-build row (2)"
    )
    p.add_argument("--repeats", type=int, default=5, help="timed runs per variant (5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (1)")
    p.add_argument(
        "--pair-repeats",
        type=int,
        default=30,
        help="repeats of the headline pair (bare towers, zero-shot) on its own (30)",
    )
    p.add_argument(
        "--source-size",
        type=int,
        default=512,
        help="synthetic X-ray height in px (512; MIMIC-CXR DICOMs are ~2500-3000)",
    )
    p.add_argument("--threads", type=int, default=usable_cores(), help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick", action="store_true", help="4 studies, n 8, batch 4, 2 repeats (checks it runs)"
    )
    add_output_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.studies, args.n, args.batch, args.repeats, args.source_size = 4, 8, 4, 2, 256
        args.pair_repeats = 2
    if min(args.studies, args.n, args.batch, args.repeats, args.pair_repeats, args.threads) < 1:
        p.error("--studies, --n, --batch, --repeats, --pair-repeats and --threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    set_threads(args.threads)
    from transformers.utils import logging as hf_logging

    from datamodules.transforms import preprocess_cxr, preprocess_ecg
    from medclip.indexing import embed_studies
    from medclip.inference import Predictor

    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="medclip-bench-inf-") as tmp_text:
        tmp = Path(tmp_text)
        stderr("building the bundle and the synthetic data ...")
        bundle, origin = load_model_bundle(args, tmp)
        studies = synthetic_studies(args, tmp)
        pred = Predictor(bundle)
        model = pred.model
        t0 = time.perf_counter()
        _ = pred.classifier  # prompt embeddings, once per Predictor
        clf_s = time.perf_counter() - t0
        n_labels = len(pred.labels)
        zs_studies = studies[: args.studies]
        zs = decode(zs_studies, pred)
        tp_studies = [studies[i % len(studies)] for i in range(args.n)]
        tp = decode(tp_studies, pred)
        xb = torch.cat([d.x for d in tp])
        eb = torch.cat([d.e for d in tp])
        reports = [d.report for d in tp]
        xt, et = model.towers["xray"], model.towers["ecg"]

        @torch.no_grad()
        def bare(d: Decoded) -> None:
            xt(d.x)
            et(d.e)

        def prep(d: Decoded) -> None:
            preprocess_cxr(d.cxr, pred.cxr_cfg)
            preprocess_ecg(d.ecg, pred.ecg_cfg)

        by_path = list(zip(zs_studies, zs))

        @torch.no_grad()
        def model_only() -> None:
            for i in range(0, args.n, args.batch):
                model.encode_xray(xb[i : i + args.batch])
                model.encode_ecg(eb[i : i + args.batch])
                model.encode_text(reports[i : i + args.batch])

        def index_build(workers: int = 0) -> None:
            embed_studies(
                bundle, tp_studies, batch_size=args.batch, num_workers=workers, progress=False
            )

        latency_runs = {
            "bare towers (X-ray + ECG forward, preprocessed tensors)": per_study(zs, bare),
            "Predictor.zeroshot (inputs already at model size / rate)": per_study(
                zs, lambda d: pred.zeroshot(xray=d.cxr_model, ecg=d.ecg_model)
            ),
            "Predictor.zeroshot (decoded, source size / rate)": per_study(
                zs, lambda d: pred.zeroshot(xray=d.cxr, ecg=d.ecg)
            ),
            "Predictor.zeroshot (files: DICOM + WFDB)": per_study(
                by_path, lambda sd: pred.zeroshot(xray=sd[0].xray_path, ecg=sd[0].ecg_path)
            ),
            "preprocessing only (source size / rate)": per_study(zs, prep),
        }
        tp_runs = {
            "model only (encode_xray/ecg/text on preprocessed batches)": throughput(
                args.n, model_only
            ),
            "embed_studies from files (index build, `medclip index` default: 0 workers)": (
                throughput(args.n, index_build)
            ),
        }
        if args.workers > 0:
            tp_runs[f"embed_studies from files, {args.workers} DataLoader workers"] = throughput(
                args.n, lambda: index_build(args.workers)
            )
        stderr("timing zero-shot latency ...")
        lat = interleave(latency_runs, args.repeats, warmup=args.warmup, log=stderr)
        stderr("timing the headline pair back to back ...")
        pair_names = list(latency_runs)[:2]
        pair = interleave(
            {n: latency_runs[n] for n in pair_names}, args.pair_repeats, warmup=args.warmup
        )
        stderr("timing index-build throughput ...")
        thr = interleave(tp_runs, args.repeats, warmup=args.warmup, log=stderr)
        src = zs[0].cxr.pixels.shape

    names = list(latency_runs)
    ref = lat[names[0]]
    rows = [
        [
            n,
            Stat.of(v).fmt(".2f"),
            "1 (reference)" if i == 0 else Stat.of(paired_ratios(v, ref)).fmt(".2f"),
        ]
        for i, (n, v) in enumerate(lat.items())
    ]
    zs_ratio = Stat.of(paired_ratios(pair[names[1]], pair[names[0]]))
    zs_table = Stat.of(paired_ratios(lat[names[1]], ref))
    pair_bare, pair_zs = Stat.of(pair[names[0]]), Stat.of(pair[names[1]])
    zs_src = Stat.of(paired_ratios(lat[names[2]], ref))
    verdict = "met" if zs_ratio.median <= 1.2 else "NOT met"
    tnames = list(tp_runs)
    tref = thr[tnames[0]]
    trows = [
        [
            n,
            Stat.of(v).fmt(",.1f"),
            "1 (reference)" if i == 0 else Stat.of(paired_ratios(v, tref)).fmt(".3f"),
        ]
        for i, (n, v) in enumerate(thr.items())
    ]
    spec_x, spec_e = pred.cxr_cfg, pred.ecg_cfg
    block = "\n".join(
        [
            report_header(
                f"Inference, {origin.split(' (')[0]}",
                PACKAGES,
                [
                    f"Model: {origin}; input X-ray {spec_x.image_size}x{spec_x.image_size}, ECG "
                    f"12x{spec_e.length} at {spec_e.fs_hz:g} Hz; {n_labels} zero-shot labels "
                    f"(prompt embeddings built once in {clf_s:.2f} s, not timed below)",
                    f"Data: synthetic generator, DICOM X-rays {src[0]}x{src[1]} px, WFDB ECGs; "
                    f"eval mode, no_grad, {args.threads} torch thread(s)",
                    f"{args.repeats} interleaved repeats after {args.warmup} warm-up round(s); "
                    f"ratios per repeat, median (min-max)",
                ],
            ),
            f"Zero-shot latency per study (one X-ray + one ECG, batch 1, {len(zs)} studies "
            "per run):",
            "",
            table(["path", "ms/study", "vs bare towers"], rows),
            "",
            f"Predictor.zeroshot / bare towers, inputs at model size and rate: "
            f"**{zs_ratio.fmt('.2f')}** (target <= 1.2: {verdict}), over {args.pair_repeats} "
            f"repeats of just these two runs back to back (bare {pair_bare.fmt('.2f')} ms, "
            f"zero-shot {pair_zs.fmt('.2f')} ms per study); "
            f"{zs_table.fmt('.2f')} in the table above, where the five runs rotate. From "
            f"source-size decoded inputs (adds X-ray resizing and ECG resampling): "
            f"{zs_src.fmt('.2f')}.",
            "",
            f"Index-build embedding throughput ({args.n} studies, X-ray + ECG + report each, "
            f"batch {args.batch}):",
            "",
            table(["path", "studies/s", "vs model only"], trows),
            "",
        ]
    )
    emit(args, HEADING, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
