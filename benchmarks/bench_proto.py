"""ProtoECGNet on synthetic PTB-XL: fit a preset from scratch, score the whole test fold.

Run from the repository root::

    .venv/bin/python benchmarks/bench_proto.py                        # small preset, n=600
    .venv/bin/python benchmarks/bench_proto.py --threads 2 --no-append

Steps (only step 3 is timed):

1. generate the seeded synthetic dataset (``datamodules.synthetic.generate``; its PTB-XL 1.0.3
   layout copy is used) unless ``--work-dir`` already holds it;
2. choose the torch thread count: ``--threads auto`` (default) times a few training steps of the
   preset's rhythm branch (the largest) with 1 thread and with every usable core, interleaved,
   and keeps the faster (on a shared 2-core machine one thread was ~4x faster per step);
3. :func:`medclip.proto.fit.fit_proto` from scratch in a new run folder, timed wall-clock and
   process CPU: reading and preprocessing the records, every stage (pretrain, joint, push,
   last/fusion), the evaluation of the validation and test folds, thresholds and the bundle;
4. report, per branch (rhythm, morphology, global) and fused: the macro AUROC computed once over
   the whole test fold (``strat_fold`` 10) with its percentile bootstrap CI, the records scored,
   the labels scored (labels with one class in the fold are listed, not averaged), and the
   seconds of every stage.

The Markdown report (targets with PASS/FAIL) is printed and appended to ``BENCHMARKS.md``
(``--no-append`` only prints); the same numbers go to ``<run folder>/bench_proto.json``. The exit
status is 0 whether or not the targets are met. Synthetic data only: the numbers say the pipeline
learns a known signal, nothing about clinical performance (see docs/evaluation.md for the real
PTB-XL reference figures and how to reproduce them on a GPU).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    add_output_args,
    add_synthetic_run_args,
    emit,
    report_header,
    set_threads,
    stderr,
    table,
    uptime_line,
    usable_cores,
)
from _common import (
    fmt_num as _f,
)

from medclip.safe_load import write_json_atomic

HEADING = "## ProtoECGNet on synthetic PTB-XL (`benchmarks/bench_proto.py`)"
PACKAGES = ("lightning", "numpy", "scipy")
BRANCHES: tuple[str, ...] = ("rhythm", "morphology", "global")
STAGES: tuple[str, ...] = ("pretrain", "joint", "push", "last")

#: Acceptance targets (medclip issue #5).
TARGET_FUSED_AUROC = 0.90
TARGET_FIT_S = 600.0

#: Default synthetic patients: the ``small`` preset's ``data.synth_n``; ~1.12 PTB-XL records per
#: patient, test fold = every 10th patient (~74 test records for 600).
DEFAULT_N = 600


# ------------------------------------------------------------------------------ results
@dataclass
class FitInfo:
    """The timed :func:`fit_proto` call.

    Attributes:
        wall_s: wall-clock seconds of the whole call.
        cpu_s: CPU seconds of this process (all threads) in the call.
        timing_s: seconds per step as reported by ``fit_proto`` (``load_data``, each unit,
            ``evaluate``, ``export``).
        run_dir: the run folder.
        units: units trained (all of them: the run starts from scratch).
    """

    wall_s: float
    cpu_s: float
    timing_s: dict[str, float]
    run_dir: str
    units: list[str] = field(default_factory=list)

    def stage_s(self, stage: str) -> float:
        """Seconds of every unit of ``stage`` (e.g. ``joint``) together."""
        return sum(v for k, v in self.timing_s.items() if k.split("/")[0] == stage)


@dataclass
class ThreadChoice:
    """Torch intra-op threads used for the fit and how they were chosen.

    Attributes:
        threads: the thread count used.
        mode: ``auto`` (calibrated) or ``fixed`` (``--threads N``).
        ms_per_step: calibration: median milliseconds per rhythm-branch training step per
            candidate thread count (empty when fixed).
    """

    threads: int
    mode: str
    ms_per_step: dict[int, float] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the report."""
        if not self.ms_per_step:
            return f"torch threads {self.threads} (fixed by --threads)"
        cands = ", ".join(f"{t} thread(s) {ms:.0f} ms" for t, ms in self.ms_per_step.items())
        return (
            f"torch threads {self.threads}, chosen by --threads auto (median rhythm-branch "
            f"training step before the fit: {cands})"
        )


# ------------------------------------------------------------------------------ steps
def prepare_data(root: Path, n: int, seed: int) -> Path:
    """Generate the synthetic dataset under ``root`` unless ``root/synthetic.json`` exists.

    Images are generated at 64 px: only the PTB-XL copy is read here, and its files do not
    depend on the image size.
    """
    if not (root / "synthetic.json").is_file():
        from datamodules.synthetic import generate

        generate(root, n=n, seed=seed, image_size=64, progress=False)
    return root


def build_config(preset: str, seed: int, sets: Sequence[str] = ()) -> Any:
    """``preset`` with ``trainer.seed`` set to ``seed``, then the ``--set`` overrides."""
    from medclip.config import load_config

    return load_config(preset, [f"trainer.seed={seed}", *sets])


def calibrate_threads(
    cfg: Any, candidates: Sequence[int], steps: int = 3, rounds: int = 2
) -> dict[int, float]:
    """Median milliseconds per training step of the preset's rhythm branch per thread count.

    Forward, BCE, backward and an Adam step on a random ``(batch, 12, length)`` batch; the
    candidates are interleaved over ``rounds`` after one untimed step each.
    """
    import torch

    from medclip.proto.model import build_branch

    torch.manual_seed(0)
    pcfg = cfg.proto
    length = int(cfg.data.ecg_length)
    branch = build_branch("rhythm", pcfg, tuple(f"c{i}" for i in range(8)), length)
    opt = torch.optim.Adam(branch.parameters(), lr=pcfg.lr)
    x = torch.randn(pcfg.batch_size, 12, length)
    y = (torch.rand(pcfg.batch_size, 8) < 0.3).float()

    def step() -> None:
        out = branch(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    times: dict[int, list[float]] = {t: [] for t in candidates}
    for r in range(rounds):
        order = list(candidates) if r % 2 == 0 else list(reversed(candidates))
        for t in order:
            torch.set_num_threads(t)
            step()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[t].append(1000 * (time.perf_counter() - start) / steps)
    return {t: statistics.median(v) for t, v in times.items()}


def choose_threads(spec: str, cfg: Any) -> ThreadChoice:
    """``--threads``: an integer, or ``auto`` (the faster of 1 and every usable core)."""
    if spec != "auto":
        n = int(spec)
        if n < 1:
            raise SystemExit("--threads: must be >= 1 or auto")
        set_threads(n)
        return ThreadChoice(n, "fixed")
    cands = sorted({1, usable_cores()})
    if len(cands) == 1:
        set_threads(1)
        return ThreadChoice(1, "auto")
    ms = calibrate_threads(cfg, cands)
    best = min(ms, key=lambda t: ms[t])
    set_threads(best)
    return ThreadChoice(best, "auto", ms)


def run_fit(cfg: Any, data_root: Path, run_dir: Path) -> tuple[FitInfo, dict[str, Any]]:
    """``fit_proto`` from scratch in ``run_dir``; returns the timing and the metrics."""
    from medclip.proto.fit import fit_proto

    wall = time.perf_counter()
    cpu = time.process_time()
    result = fit_proto(cfg, data_root, run_dir, progress=False, restart=True)
    info = FitInfo(
        wall_s=time.perf_counter() - wall,
        cpu_s=time.process_time() - cpu,
        timing_s={k: float(v) for k, v in result.timing_s.items()},
        run_dir=str(run_dir),
        units=list(result.units_run),
    )
    return info, result.metrics


# ------------------------------------------------------------------------------ report
def _ci(lo: float | None, hi: float | None) -> str:
    return "n/a" if lo is None or hi is None else f"{_f(lo)}-{_f(hi)}"


def _secs(v: float) -> str:
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def block_summary(m: dict[str, Any]) -> dict[str, Any]:
    """The figures of one test-fold block of ``metrics["test"]`` (fused or a branch)."""
    per_label = m.get("per_label", {})
    excluded = list(m.get("excluded", []))
    scored = [k for k in per_label if k not in excluded]
    pos = m.get("n_positive", {})
    ci = m.get("macro_ci") or [None, None]
    return {
        "macro_auroc": m.get("macro_auroc"),
        "macro_ci": list(ci),
        "n_records": m.get("n"),
        "n_labels": len(per_label),
        "labels_scored": len(scored),
        "not_scored": excluded,
        "min_positives_scored": min((int(pos[k]) for k in scored), default=None),
        "n_boot": m.get("n_boot"),
    }


def summarise(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``fused`` and each branch present in the test metrics."""
    test = metrics.get("test", {})
    return {k: block_summary(test[k]) for k in ("fused", *BRANCHES) if k in test}


def checks(summary: dict[str, dict[str, Any]], info: FitInfo) -> list[tuple[str, str, bool]]:
    """``(target, measured, passed)`` for each acceptance target."""
    fused = summary.get("fused", {})
    macro = fused.get("macro_auroc")
    lo, hi = (fused.get("macro_ci") or [None, None])[:2]
    measured = _f(macro) + (f" [{_f(lo)}, {_f(hi)}]" if lo is not None else "")
    return [
        (
            f"fused macro AUROC >= {TARGET_FUSED_AUROC:.2f} (whole test fold)",
            measured,
            macro is not None and macro >= TARGET_FUSED_AUROC,
        ),
        (
            f"whole fit <= {TARGET_FIT_S:.0f} s (wall clock)",
            f"{info.wall_s:.0f} s",
            info.wall_s <= TARGET_FIT_S,
        ),
    ]


def render(
    summary: dict[str, dict[str, Any]],
    metrics: dict[str, Any],
    info: FitInfo,
    threads: ThreadChoice,
    *,
    preset: str,
    n: int,
    seed: int,
    sets: Sequence[str],
    load_before: str,
    load_after: str,
) -> str:
    """The Markdown block of one run."""
    data = metrics.get("data", {})
    counts = data.get("n", {})
    split_txt = "/".join(str(counts.get(s, "?")) for s in ("train", "val", "test"))
    notes = [
        f"Preset `{preset}`"
        + (f" with `{' '.join(shlex.quote(s) for s in sets)}`" if sets else "")
        + f"; {threads.describe()}",
        f"Synthetic PTB-XL (medclip generator, n={n} patients, seed {seed}): train/val/test "
        f"{split_txt} records (`strat_fold` 1-8 / 9 / 10). SYNTHETIC DATA: a known-answer check "
        "of the pipeline, no clinical meaning.",
        f"Whole fit from scratch (reading + preprocessing the records, all stages, validation "
        f"and test evaluation, thresholds, bundle): {info.wall_s:.0f} s wall clock, "
        f"{info.cpu_s:.0f} s process CPU",
        f"Machine load before the fit: `{load_before}`",
        f"Machine load after the fit: `{load_after}`",
    ]
    parts = [report_header("ProtoECGNet on synthetic PTB-XL", PACKAGES, notes)]
    rows = [(t, m, "PASS" if ok else "FAIL") for t, m, ok in checks(summary, info)]
    parts += ["**Targets**", "", table(["target", "measured", "result"], rows, "llr"), ""]
    n_boot = summary.get("fused", {}).get("n_boot")
    arows = []
    for name, s in summary.items():
        lo, hi = (s.get("macro_ci") or [None, None])[:2]
        arows.append(
            (
                f"**{name}**" if name == "fused" else name,
                str(s.get("n_records")),
                f"{s['labels_scored']} of {s['n_labels']}",
                _f(s.get("macro_auroc")),
                _ci(lo, hi),
                str(s.get("min_positives_scored") or "n/a"),
                ", ".join(s["not_scored"]) or "-",
            )
        )
    parts += [
        "**Test-fold macro AUROC** (computed once over the whole fold, never a mean of batch "
        f"AUROCs; 95% percentile bootstrap CI, {n_boot} resamples of records; a branch scores "
        "the records with a label of its group; labels with one class in the fold are not "
        "scored)",
        "",
        table(
            [
                "model",
                "records",
                "labels scored",
                "macro AUROC",
                "95% CI",
                "fewest positives",
                "not scored (one class)",
            ],
            arows,
            "lrrrrrl",
        ),
        "",
    ]
    fused = metrics.get("test", {}).get("fused", {})
    branch_of = {lab: name for name, labs in (data.get("labels") or {}).items() for lab in labs}
    lrows = []
    for lab, v in (fused.get("per_label") or {}).items():
        if v is None:
            continue
        clo, chi = (fused.get("per_label_ci") or {}).get(lab, [None, None])
        lrows.append(
            (
                lab,
                branch_of.get(lab, "?"),
                str(fused["n_positive"][lab]),
                str(fused["n_negative"][lab]),
                _f(v),
                _ci(clo, chi),
            )
        )
    if lrows:
        parts += [
            "**Fused, per scored label** (test fold)",
            "",
            table(["label", "branch", "pos", "neg", "AUROC", "95% CI"], lrows, "llrrrr"),
            "",
        ]
    total = info.wall_s or 1.0
    srows = [("load data (read + preprocess records)", info.timing_s.get("load_data"))]
    for stage in STAGES:
        units = [k for k in info.timing_s if k.split("/")[0] == stage]
        detail = " / ".join(f"{k.split('/')[1]} {_secs(info.timing_s[k])}" for k in units)
        srows.append((f"{stage} ({detail})" if detail else stage, info.stage_s(stage)))
    srows += [
        ("evaluate (val + test, bootstrap, thresholds)", info.timing_s.get("evaluate")),
        ("export bundle", info.timing_s.get("export")),
    ]
    known = sum(v for _, v in srows if v is not None)
    srows.append(("other (model build, Lightning setup)", max(0.0, info.wall_s - known)))
    parts += [
        "**Time per stage** (wall clock, seconds; unit seconds in brackets)",
        "",
        table(
            ["stage", "seconds", "share"],
            [(k, _f(v, ".1f"), f"{100 * (v or 0.0) / total:.0f} %") for k, v in srows],
        ),
        "",
    ]
    return "\n".join(parts)


def to_json(
    summary: dict[str, dict[str, Any]],
    metrics: dict[str, Any],
    info: FitInfo,
    threads: ThreadChoice,
    **context: Any,
) -> dict[str, Any]:
    """JSON-serialisable form of a run (``context``: preset, n, seed, sets, loads)."""
    return {
        **context,
        "threads": {
            "threads": threads.threads,
            "mode": threads.mode,
            "ms_per_step": {str(k): v for k, v in threads.ms_per_step.items()},
        },
        "fit": {**asdict(info), "stages_s": {s: info.stage_s(s) for s in STAGES}},
        "data": metrics.get("data", {}).get("n", {}),
        "test": summary,
        "checks": [{"target": t, "measured": m, "pass": ok} for t, m, ok in checks(summary, info)],
    }


# ------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_synthetic_run_args(
        p, default_n=DEFAULT_N, work_dir="bench-proto", set_example="proto.epochs_joint=10"
    )
    p.add_argument(
        "--threads",
        default="auto",
        help="torch threads, or auto: the faster of 1 and all usable cores (default auto)",
    )
    add_output_args(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the exit status is 0 whether or not the targets are met."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("medclip.metrics").setLevel(logging.ERROR)  # one-class labels: reported
    work = args.work_dir.expanduser().resolve()
    data_root = work / f"data-n{args.n}-seed{args.seed}"
    stderr(f"synthetic data: {data_root} (generated once, not timed)")
    prepare_data(data_root, args.n, args.seed)
    cfg = build_config(args.preset, args.seed, args.sets)
    threads = choose_threads(str(args.threads), cfg)
    stderr(threads.describe())
    run_dir = work / (args.run_name or time.strftime("run-%Y%m%d-%H%M%S"))
    load_before = uptime_line()
    stderr(f"fitting ProtoECGNet ({args.preset}) from scratch -> {run_dir}")
    info, metrics = run_fit(cfg, data_root, run_dir)
    load_after = uptime_line()
    stderr(f"fit took {info.wall_s:.0f} s")
    summary = summarise(metrics)
    context = {
        "preset": args.preset,
        "n": args.n,
        "seed": args.seed,
        "sets": list(args.sets),
        "load_before": load_before,
        "load_after": load_after,
    }
    block = render(
        summary,
        metrics,
        info,
        threads,
        preset=args.preset,
        n=args.n,
        seed=args.seed,
        sets=args.sets,
        load_before=load_before,
        load_after=load_after,
    )
    payload = to_json(summary, metrics, info, threads, **context)
    write_json_atomic(run_dir / "bench_proto.json", payload)
    emit(args, HEADING, block)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.exit(main())
