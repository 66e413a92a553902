"""Data-pipeline benchmark: per-sample decoding vs the preprocessing cache, and data wait.

Run from the repository root::

    .venv/bin/python benchmarks/bench_data.py            # defaults
    .venv/bin/python benchmarks/bench_data.py --quick    # small, seconds (checks it works)

Measures, with repeated *interleaved* runs (decode, cache, decode, cache, ...):

* ECG samples/s: WFDB record -> read_ecg -> preprocess_ecg, vs reading the cache;
* CXR samples/s: DICOM -> read_cxr -> preprocess_cxr, vs reading the cache;
* the fraction of training-step time a small model waits on ``next(iter(loader))`` with the
  ContrastiveDataModule's default loader settings, without and with the cache.

Prints a Markdown block (machine, exact command, medians with min/max, ratios) and appends it to
BENCHMARKS.md (``--output``; ``--no-append`` to only print). Data: the synthetic generator's
output when available, else WFDB/DICOM files written here; all in a temporary folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import append_section, command_line, machine_line  # noqa: E402

from datamodules.cache import build_cache, open_cache  # noqa: E402
from datamodules.datamodule import ContrastiveDataModule  # noqa: E402
from datamodules.dataset import StudyDataset  # noqa: E402
from datamodules.transforms import CxrTransformConfig, EcgTransformConfig  # noqa: E402
from datamodules.types import CANONICAL_LEADS, Batch, Study  # noqa: E402

SECTION = "## Data pipeline (benchmarks/bench_data.py)"


# ------------------------------------------------------------------------------------------
# data


def synthetic_studies(
    out: Path, n: int, seed: int, image_size: int
) -> tuple[list[Study], str] | None:
    """Studies from the synthetic generator, or None when it is not available."""
    try:
        from datamodules.sources import load_studies
        from datamodules.synthetic import generate  # type: ignore[attr-defined]
    except ImportError:
        return None
    generate(out, n=n, seed=seed, image_size=image_size)
    studies = load_studies("synthetic", out)
    return studies, f"synthetic generator output (n={n}, seed={seed}, image_size={image_size})"


def written_studies(out: Path, n: int, cxr_side: int, seed: int) -> tuple[list[Study], str]:
    """Write n MIMIC-like pairs: WFDB 500 Hz x 5000 samples and uncompressed 12-bit DICOMs."""
    import wfdb
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    rng = np.random.default_rng(seed)
    t = np.arange(5000) / 500.0
    studies = []
    for i in range(n):
        folder = out / f"s{i:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        beats = np.sin(2 * np.pi * 1.2 * t)[:, None] ** 15 * rng.uniform(0.5, 1.5, 12)
        sig = beats + rng.normal(0, 0.02, (5000, 12))
        wfdb.wrsamp(
            "ecg",
            fs=500,
            units=["mV"] * 12,
            sig_name=list(CANONICAL_LEADS),
            p_signal=sig,
            fmt=["16"] * 12,
            adc_gain=[200.0] * 12,
            baseline=[0] * 12,
            write_dir=str(folder),
        )
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "CR"
        ds.Rows, ds.Columns = cxr_side, int(cxr_side * 0.8)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        pixels = rng.integers(0, 4096, (ds.Rows, ds.Columns), dtype=np.uint16)
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / "cxr.dcm", enforce_file_format=True)
        studies.append(
            Study(
                f"s{i}",
                f"p{i}",
                xray_path=folder / "cxr.dcm",
                ecg_path=folder / "ecg",
                report=f"synthetic report {i}",
                split="train",
            )
        )
    return studies, f"files written by this script (n={n}, DICOM {cxr_side}x{int(cxr_side * 0.8)})"


def describe_sources(studies: Sequence[Study]) -> str:
    """Source format of the first ECG and X-ray (size, rate) for the report."""
    from datamodules.cxr_io import read_cxr
    from datamodules.ecg_io import read_ecg

    parts = []
    ecg = next((s.ecg_path for s in studies if s.ecg_path is not None), None)
    if ecg is not None:
        e = read_ecg(ecg)
        parts.append(f"ECG WFDB {e.fs:g} Hz x {e.n_samples} samples")
    xray = next((s.xray_path for s in studies if s.xray_path is not None), None)
    if xray is not None:
        c = read_cxr(xray)
        parts.append(
            f"CXR {Path(xray).suffix.lstrip('.').upper()} {c.pixels.shape[0]}x{c.pixels.shape[1]}"
        )
    return ", ".join(parts)


# ------------------------------------------------------------------------------------------
# measurements


def read_all(ds: StudyDataset) -> float:
    """Seconds to fetch every sample of ``ds`` once."""
    start = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    return time.perf_counter() - start


def interleaved(
    runs: dict[str, Callable[[], float]], n_items: int, repeats: int
) -> dict[str, list[float]]:
    """samples/s of each run, interleaved ``repeats`` times."""
    out: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            out[name].append(n_items / fn())
    return out


class TinyModel(torch.nn.Module):
    """A small tri-modal model (~60k parameters) standing in for a training step."""

    def __init__(self) -> None:
        super().__init__()
        self.ecg = torch.nn.Sequential(
            torch.nn.Conv1d(12, 32, 7, stride=4),
            torch.nn.ReLU(),
            torch.nn.Conv1d(32, 64, 7, stride=4),
            torch.nn.AdaptiveAvgPool1d(1),
            torch.nn.Flatten(),
        )
        self.xray = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 7, stride=4),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 64, 5, stride=4),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        e = torch.nn.functional.normalize(self.ecg(batch.ecg), dim=-1)
        x = torch.nn.functional.normalize(self.xray(batch.xray), dim=-1)
        logits = 10.0 * x @ e.T
        target = torch.arange(len(batch), device=logits.device)
        return torch.nn.functional.cross_entropy(logits, target)


def data_wait_fraction(
    dm: ContrastiveDataModule, steps: int, seed: int, warmup: int = 2
) -> tuple[float, float]:
    """(fraction of step time blocked in next(loader), seconds per step) over ``steps`` steps.

    The first ``warmup`` steps (allocator, first-call overheads) are run but not counted.
    """
    torch.manual_seed(seed)
    model = TinyModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    waited = 0.0
    done = -warmup
    start = time.perf_counter()
    while done < steps:
        it = iter(dm.train_dataloader())
        while done < steps:
            if done == 0:
                waited, start = 0.0, time.perf_counter()
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            waited += time.perf_counter() - t0
            loss = model(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
    total = time.perf_counter() - start
    return waited / total, total / steps


# ------------------------------------------------------------------------------------------
# report


def row(name: str, values: list[float]) -> str:
    return (
        f"| {name} | {statistics.median(values):,.1f} | {min(values):,.1f} | "
        f"{max(values):,.1f} | {len(values)} |"
    )


def append_report(path: Path, block: str) -> None:
    """Append ``block`` under the data-pipeline section (created if missing); never rewrites."""
    append_section(path, SECTION, block)


# ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=200, help="number of studies (default 200)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved runs per path (default 5)")
    p.add_argument("--steps", type=int, default=40, help="training steps per wait measurement")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--ecg-fs", type=float, default=100.0)
    p.add_argument("--ecg-length", type=int, default=1000)
    p.add_argument(
        "--cxr-side",
        type=int,
        default=1024,
        help="source X-ray height in pixels (MIMIC-CXR DICOMs are ~2500-3000; larger sources "
        "make decoding slower and the cache's advantage larger)",
    )
    p.add_argument("--own-files", action="store_true", help="skip the synthetic generator")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    p.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    p.add_argument("--no-append", action="store_true", help="print only")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.repeats, args.steps, args.batch_size = 16, 2, 4, 4
        args.image_size, args.cxr_side = 64, 256
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(args.seed)
    ecg_cfg = EcgTransformConfig(fs_hz=args.ecg_fs, length=args.ecg_length)
    cxr_cfg = CxrTransformConfig(image_size=args.image_size)
    with tempfile.TemporaryDirectory(prefix="medclip-bench-") as tmp_text:
        tmp = Path(tmp_text)
        found = (
            None
            if args.own_files
            else synthetic_studies(tmp / "data", args.n, args.seed, args.cxr_side)
        )
        if found is None:
            found = written_studies(tmp / "data", args.n, args.cxr_side, args.seed)
        studies, origin = found
        print(f"{len(studies)} studies: {origin}; building the cache ...", file=sys.stderr)
        t0 = time.perf_counter()
        build_cache(studies, ecg_cfg, cxr_cfg, tmp / "cache", progress=True)
        build_s = time.perf_counter() - t0
        cache = open_cache(tmp / "cache", ecg_cfg, cxr_cfg)
        assert cache is not None
        # time readable files only (unreadable ones fail fast and would flatter decoding)
        ok = cache.present
        bad = int(sum(s.present[0] and not ok[i, 0] for i, s in enumerate(studies)))
        bad += int(sum(s.present[1] and not ok[i, 1] for i, s in enumerate(studies)))
        studies = [
            replace(
                s,
                xray_path=s.xray_path if ok[i, 0] else None,
                ecg_path=s.ecg_path if ok[i, 1] else None,
            )
            for i, s in enumerate(studies)
        ]
        sources = describe_sources(studies)
        ecg_studies = [replace(s, xray_path=None) for s in studies if s.ecg_path is not None]
        cxr_studies = [replace(s, ecg_path=None) for s in studies if s.xray_path is not None]

        ecg_plain = StudyDataset(ecg_studies, ecg_cfg, None, [])
        ecg_cached = StudyDataset(ecg_studies, ecg_cfg, None, [], cache=cache)
        cxr_plain = StudyDataset(cxr_studies, None, cxr_cfg, [])
        cxr_cached = StudyDataset(cxr_studies, None, cxr_cfg, [], cache=cache)
        read_all(ecg_plain), read_all(cxr_plain)  # warm-up: OS page cache, imports
        print("timing per-sample decoding vs cache ...", file=sys.stderr)
        ecg = interleaved(
            {"decode": lambda: read_all(ecg_plain), "cache": lambda: read_all(ecg_cached)},
            len(ecg_studies),
            args.repeats,
        )
        cxr = interleaved(
            {"decode": lambda: read_all(cxr_plain), "cache": lambda: read_all(cxr_cached)},
            len(cxr_studies),
            args.repeats,
        )
        print("timing the training loop's data wait ...", file=sys.stderr)
        train = [replace(s, split="train") for s in studies]
        waits = {}
        for name, cache_dir in (("decode", None), ("cache", tmp / "cache")):
            dm = ContrastiveDataModule(
                train,
                ecg_cfg=ecg_cfg,
                cxr_cfg=cxr_cfg,
                batch_size=args.batch_size,
                seed=args.seed,
                cache_dir=cache_dir,
            )
            dm.setup("fit")
            waits[name] = data_wait_fraction(dm, args.steps, args.seed)
        workers = ContrastiveDataModule(train, batch_size=args.batch_size).num_workers

    ecg_ratio = statistics.median(ecg["cache"]) / statistics.median(ecg["decode"])
    cxr_ratio = statistics.median(cxr["cache"]) / statistics.median(cxr["decode"])
    verdict = "met" if min(ecg_ratio, cxr_ratio) >= 10 else "NOT met"
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"### {stamp}",
        "",
        f"- Command: `{command_line()}`",
        f"- Machine: {machine_line()}",
        f"- Data: {origin}; {sources}; preprocessed to ECG 12x{args.ecg_length} at "
        f"{args.ecg_fs:g} Hz, CXR {args.image_size}x{args.image_size}; cache ECG float16, "
        f"CXR uint8 (build {build_s:.1f} s); OS page cache warm for both paths; "
        f"{bad} unreadable file(s) left out",
        f"- {args.repeats} interleaved runs per path, each over all {len(ecg_studies)} ECGs / "
        f"{len(cxr_studies)} X-rays, single process",
        "",
        "| path | samples/s median | min | max | runs |",
        "|---|---:|---:|---:|---:|",
        row("ECG decode (WFDB -> read_ecg -> preprocess_ecg)", ecg["decode"]),
        row("ECG cache (memory-mapped .npy)", ecg["cache"]),
        row("CXR decode (DICOM -> read_cxr -> preprocess_cxr)", cxr["decode"]),
        row("CXR cache (memory-mapped .npy)", cxr["cache"]),
        "",
        f"Speed-up of the cache (median/median): ECG {ecg_ratio:.1f}x, CXR {cxr_ratio:.1f}x "
        f"(target >= 10x: {verdict}).",
        "",
        f"Training-loop data wait (TinyModel, batch {args.batch_size}, {args.steps} steps, "
        f"default loader settings: num_workers={workers}): time blocked in `next(loader)` / "
        f"total step time = {waits['decode'][0]:.0%} decoding per sample "
        f"({waits['decode'][1] * 1000:.0f} ms/step), {waits['cache'][0]:.0%} with the cache "
        f"({waits['cache'][1] * 1000:.0f} ms/step).",
        "",
    ]
    block = "\n".join(lines)
    print(block)
    if not args.no_append:
        append_report(args.output, block)
        print(f"appended to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
