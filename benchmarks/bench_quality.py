"""Known-answer quality: train a preset on synthetic data for a few minutes, then score it.

Run from the repository root::

    .venv/bin/python benchmarks/bench_quality.py                       # small preset, 5 min
    .venv/bin/python benchmarks/bench_quality.py --max-time-s 120 --no-append   # a quick look

Steps (only step 3 is timed against ``--max-time-s``):

1. generate the seeded synthetic dataset (``datamodules.synthetic.generate``; reused from
   ``--work-dir`` when it is already there);
2. build the preprocessing cache of ``datamodules.cache`` (decoded, resized X-rays and filtered
   ECGs, like ``medclip cache``), unless ``--no-cache``;
3. train the preset with :func:`medclip.fit.fit` under a wall-clock cap of ``--max-time-s``
   (Lightning's timer; validation inside the run counts towards it). The report gives the
   measured seconds from the start to the end of the training loop;
4. export a bundle from the last checkpoint and reload it with :func:`medclip.bundle.load_bundle`;
5. on the held-out ``test`` split: zero-shot AUROC per label and macro (with a percentile
   bootstrap CI) for the X-ray labels and the ECG labels of the bundle that have both classes
   in the split (at least ``--min-class-count`` studies of each), from the bundle's prompt sets;
   text -> X-ray and text -> ECG Recall@1/5/10 where each study's report must retrieve its own
   X-ray / ECG among every test study's, with chance ``k / N`` and the ratio to chance.

The Markdown report (targets with PASS/FAIL) is printed and appended to ``BENCHMARKS.md``; the
same numbers go to ``<run folder>/quality.json``. The exit status is 0 whether or not the
targets are met. Synthetic data only: the numbers say the pipeline can learn a known signal,
nothing about clinical performance.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
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

HEADING = "## Known-answer quality on synthetic data (`benchmarks/bench_quality.py`)"
PACKAGES = ("lightning", "timm", "transformers", "peft")
RECALL_KS: tuple[int, ...] = (1, 5, 10)

#: Acceptance targets: macro AUROC per modality, R@10 / chance per retrieval direction.
TARGET_AUROC = 0.85
TARGET_RECALL_RATIO = 5.0
TARGET_K = 10
#: Performance target (issue #8): share of the training loop spent waiting on data.
TARGET_DATA_WAIT = 0.10

log = logging.getLogger("bench_quality")


# ------------------------------------------------------------------------------ results
@dataclass
class TrainInfo:
    """What the timed training did.

    Attributes:
        train_s: seconds from the start to the end of Lightning's training loop (with in-run
            validation), the number held against the cap.
        cpu_s: CPU seconds of this process (all its threads) in that loop; on a busy machine
            ``cpu_s / train_s`` shows the share of the cores the run got.
        fit_s: seconds of the whole ``fit()`` call (data setup, model build, checkpoints).
        max_time_s: the cap.
        steps: optimizer steps.
        epochs: epochs started.
        run_dir: the run folder (checkpoints, logs, bundle).
        metrics: final logged metrics of the run.
        data_wait: :class:`medclip.callbacks.DataWaitMonitor` summary (share of the training
            loop spent between batches, i.e. waiting on the DataLoader).
        num_workers: DataLoader workers of the run (the preset's default unless overridden).
    """

    train_s: float
    cpu_s: float
    fit_s: float
    max_time_s: float
    steps: int
    epochs: int
    run_dir: str
    metrics: dict[str, float] = field(default_factory=dict)
    data_wait: dict[str, float] = field(default_factory=dict)
    num_workers: int = 0


@dataclass
class ZeroShotBlock:
    """Zero-shot AUROC of one modality on the evaluation split."""

    modality: str
    labels: list[str]
    per_label: dict[str, float]
    ci: dict[str, tuple[float, float]]
    n_pos: dict[str, int]
    n_neg: dict[str, int]
    macro: float
    macro_ci: tuple[float, float]
    skipped: dict[str, str]
    n_studies: int


@dataclass
class RetrievalBlock:
    """Report -> modality retrieval on the evaluation split."""

    direction: str
    n_queries: int
    n_gallery: int
    recall: dict[int, float]
    chance: dict[int, float]
    mean_rank: float
    median_rank: float

    def ratio(self, k: int) -> float:
        """Recall@k divided by chance ``k / N``."""
        return self.recall[k] / self.chance[k] if self.chance[k] else float("nan")


@dataclass
class QualityResult:
    """Everything the report shows."""

    zeroshot: dict[str, ZeroShotBlock]
    retrieval: dict[str, RetrievalBlock]
    split: str
    n_studies: int
    query_text: str = "the whole report"


# ------------------------------------------------------------------------------ steps
def prepare_data(root: Path, n: int, seed: int) -> Path:
    """Generate the synthetic dataset under ``root`` unless it is already there."""
    from medclip.fit import ensure_synthetic

    return ensure_synthetic(root, n, seed)


def build_config(
    preset: str,
    n: int,
    seed: int,
    max_time_s: float,
    sets: Sequence[str] = (),
    cache_dir: Path | None = None,
    validate: bool = False,
) -> Any:
    """The preset with the bench's data size, seed, time cap and cache (and without in-run
    validation unless ``validate``), then the ``--set`` overrides."""
    from medclip.config import load_config

    overrides = [
        f"data.synth_n={n}",
        f"data.synth_seed={seed}",
        f"trainer.max_time_s={max_time_s}",
        f"trainer.seed={seed}",
        *([f"data.cache_dir={cache_dir}"] if cache_dir is not None else []),
        *([] if validate else ["trainer.val_check_interval=0"]),
        *sets,
    ]
    return load_config(preset, overrides)


def prepare_cache(cfg: Any, data_root: Path, cache_dir: Path) -> Path:
    """Build (or reuse) the preprocessing cache the training run will read."""
    from datamodules.cache import build_cache
    from datamodules.sources import load_studies
    from medclip.bundle import preprocessing_configs
    from medclip.model import MedclipModel

    d = cfg.data
    model = MedclipModel(cfg.model)  # only its towers' input specs are used
    ecg_cfg, cxr_cfg = preprocessing_configs(model, d)
    del model
    studies = load_studies(
        d.dataset,
        data_root,
        pair_window_days=d.pair_window_days,
        pairing=d.pairing,
        uncertainty_policy=d.uncertainty_policy,
    )
    path: Path = build_cache(studies, ecg_cfg, cxr_cfg, cache_dir, num_workers=0)
    return path


def train(
    cfg: Any, data_root: Path, run_dir: Path, max_time_s: float, reserve_s: float = 5.0
) -> TrainInfo:
    """Train ``cfg`` under a hard wall-clock cap; time the training loop.

    The cap is enforced twice: a callback stops before a step that would end past the cap
    (judged by the slowest of the last steps, keeping ``reserve_s`` for the final checkpoint),
    and Lightning's ``max_time`` is the backstop.
    """
    import lightning as L

    from medclip.fit import fit

    class _Clock(L.Callback):
        def __init__(self) -> None:
            self.start = self.end = self.last = 0.0
            self.cpu_start = self.cpu_end = 0.0
            self.recent: list[float] = []  # durations of the last steps (not the first)
            self.epochs = 0

        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.start = self.last = time.perf_counter()
            self.cpu_start = time.process_time()

        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.epochs += 1

        def on_train_batch_end(
            self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
        ) -> None:
            now = time.perf_counter()
            if trainer.global_step > 1:  # the first step also starts workers and allocators
                self.recent = [*self.recent[-4:], now - self.last]
            self.last = now
            # stop unless one more step (as slow as the slowest recent one) and the final
            # checkpoint write still fit under the cap
            if now - self.start + max(self.recent, default=0.0) + reserve_s > max_time_s:
                trainer.should_stop = True
            step = trainer.global_step
            if step % 10 == 0:
                loss = trainer.callback_metrics.get("train/loss")
                shown = f", train/loss {float(loss):.3f}" if loss is not None else ""
                stderr(f"[{now - self.start:6.0f} s] step {step}{shown}")

        def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.last = time.perf_counter()

        def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if trainer.sanity_checking or not self.start:
                return
            self.last = time.perf_counter()  # validation is not a training step
            if self.last - self.start > max_time_s:
                trainer.should_stop = True
            m = trainer.callback_metrics
            keys = (
                "val/loss",
                "val/zs_auroc_xray",
                "val/zs_auroc_ecg",
                "val/R@10_text2xray",
                "val/R@10_text2ecg",
            )
            shown = ", ".join(f"{k} {float(m[k]):.3f}" for k in keys if k in m)
            step = trainer.global_step
            stderr(f"[{self.last - self.start:6.0f} s] epoch {self.epochs} step {step}: {shown}")

        def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.end = time.perf_counter()
            self.cpu_end = time.process_time()

    clock = _Clock()
    started = time.perf_counter()
    result = fit(
        cfg,
        data_root=data_root,
        out_dir=run_dir,
        max_time_s=max_time_s,
        callbacks=[clock],
        enable_progress_bar=False,
        checkpoint_every_n_steps=0,
    )
    fit_s = time.perf_counter() - started
    return TrainInfo(
        train_s=clock.end - clock.start,
        cpu_s=clock.cpu_end - clock.cpu_start,
        fit_s=fit_s,
        max_time_s=max_time_s,
        steps=result.global_step,
        epochs=clock.epochs,
        run_dir=str(run_dir),
        metrics=dict(result.metrics),
        data_wait=dict(result.data_wait),
        num_workers=int(cfg.data.num_workers),
    )


def export(run_dir: Path, cfg: Any) -> Path:
    """Bundle of the run's last checkpoint (``<run>/bundle``, replaced)."""
    from medclip.bundle import export_bundle

    path: Path = export_bundle(
        run_dir / "checkpoints" / "last.ckpt", run_dir / "bundle", config=cfg, overwrite=True
    )
    return path


def zeroshot_block(
    predictor: Any,
    embeddings: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    modality: str,
    *,
    min_class_count: int = 1,
    n_boot: int = 1000,
    seed: int = 0,
) -> ZeroShotBlock:
    """Zero-shot AUROC of ``(N, E)`` embeddings against ``(N, L)`` labels ``y`` (1/0/NaN).

    Labels with fewer than ``min_class_count`` positives or negatives are skipped (listed with
    the reason).
    """
    from medclip.metrics import bootstrap_auroc

    skipped: dict[str, str] = {}
    keep: list[int] = []
    for j, lab in enumerate(labels):
        col = y[:, j]
        pos = int(np.nansum(col == 1))
        neg = int(np.nansum(col == 0))
        if min(pos, neg) < max(1, min_class_count):
            skipped[lab] = f"{pos} pos / {neg} neg"
        else:
            keep.append(j)
    names = [labels[j] for j in keep]
    if not names:
        nan = float("nan")
        return ZeroShotBlock(modality, [], {}, {}, {}, {}, nan, (nan, nan), skipped, len(y))
    clf = predictor.classifier
    all_labels = list(clf.labels)
    cols = [all_labels.index(lab) for lab in names]
    scores = clf.predict_proba(embeddings, modality).cpu().numpy().astype(np.float64)[:, cols]
    yk = y[:, keep]
    ci = bootstrap_auroc(yk, scores, names, n_boot=n_boot, seed=seed)
    p = ci.point
    return ZeroShotBlock(
        modality=modality,
        labels=names,
        per_label={lab: float(v) for lab, v in zip(names, p.per_label)},
        ci={
            lab: (float(lo), float(hi))
            for lab, lo, hi in zip(names, ci.per_label_low, ci.per_label_high)
        },
        n_pos={lab: int(v) for lab, v in zip(names, p.n_positive)},
        n_neg={lab: int(v) for lab, v in zip(names, p.n_negative)},
        macro=float(p.macro),
        macro_ci=(float(ci.macro_low), float(ci.macro_high)),
        skipped=skipped,
        n_studies=len(y),
    )


def retrieval_block(
    text: np.ndarray,
    text_rows: np.ndarray,
    gallery: np.ndarray,
    gallery_rows: np.ndarray,
    direction: str,
    ks: Sequence[int] = RECALL_KS,
) -> RetrievalBlock:
    """Each study's report retrieves its own item among every gallery item of the split."""
    from medclip.metrics import retrieval_metrics

    pos = {int(r): i for i, r in enumerate(gallery_rows)}
    mask = np.asarray([int(r) in pos for r in text_rows], dtype=bool)
    targets = np.asarray([pos[int(r)] for r in text_rows[mask]], dtype=np.int64)
    n = len(gallery)
    m = retrieval_metrics(text[mask], gallery, targets, ks)
    return RetrievalBlock(
        direction=direction,
        n_queries=m.n_queries,
        n_gallery=n,
        recall={int(k): float(v) for k, v in m.recall.items()},
        chance={int(k): min(1.0, k / n) for k in ks},
        mean_rank=m.mean_rank,
        median_rank=m.median_rank,
    )


def evaluate(
    bundle_path: Path,
    data_root: Path,
    *,
    split: str = "test",
    min_class_count: int = 1,
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> QualityResult:
    """Zero-shot AUROC and report retrieval of a bundle on one split of the synthetic data."""
    from datamodules.dataset import labels_matrix
    from datamodules.sources import load_studies
    from medclip.bundle import load_bundle
    from medclip.indexing import embed_studies
    from medclip.inference import Predictor

    bundle = load_bundle(bundle_path)
    studies = load_studies("synthetic", data_root, split=split)
    if not studies:
        raise SystemExit(f"no {split} studies in {data_root}")
    emb = embed_studies(bundle, studies, batch_size=batch_size, progress=progress)
    vocab = {m: list(bundle.labels.get(m) or []) for m in ("xray", "ecg")}
    predictor = Predictor(bundle, labels=[*vocab["xray"], *vocab["ecg"]])
    zs: dict[str, ZeroShotBlock] = {}
    for modality in ("xray", "ecg"):
        vec, rows = emb.get(modality)
        if len(rows) == 0 or not vocab[modality]:
            continue
        y = labels_matrix([studies[int(r)] for r in rows], vocab[modality]).astype(np.float64)
        zs[modality] = zeroshot_block(
            predictor,
            vec,
            y,
            vocab[modality],
            modality,
            min_class_count=min_class_count,
            n_boot=n_boot,
            seed=seed,
        )
    ret: dict[str, RetrievalBlock] = {}
    for modality in ("xray", "ecg"):
        vec, rows = emb.get(modality)
        text, text_rows = query_texts(predictor, studies, emb, modality)
        if len(rows) >= 2 and len(text_rows):
            key = f"text->{modality}"
            ret[key] = retrieval_block(text, text_rows, vec, rows, key)
    mode = getattr(bundle.config.model, "text_mode", "combined")
    query = (
        "the radiology report (X-ray) / the ECG statements (ECG)"
        if mode == "per_modality"
        else "the whole report (radiology report + ECG statements)"
    )
    return QualityResult(zs, ret, split, len(studies), query)


def query_texts(
    predictor: Any, studies: Sequence[Any], emb: Any, modality: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors, rows)`` of the report text that the model pairs with ``modality``.

    The whole report (``Study.report``) for ``text_mode: combined``; for ``per_modality`` the
    modality's own part (``Study.extra["cxr_report"]`` / ``["ecg_report"]``, as in training),
    embedded with that modality's text tower.
    """
    mode = getattr(getattr(predictor.config, "model", None), "text_mode", "combined")
    if mode != "per_modality":
        vectors, rows = emb.get("text")
        return vectors, rows
    key = "cxr_report" if modality == "xray" else "ecg_report"
    keep = [i for i, s in enumerate(studies) if (s.extra.get(key) or s.report)]
    if not keep:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    texts = [str(studies[i].extra.get(key) or studies[i].report) for i in keep]
    vectors = np.asarray(predictor.embed_text(texts, target=modality), dtype=np.float32)
    return vectors, np.asarray(keep, dtype=np.int64)


# ------------------------------------------------------------------------------ report
def checks(result: QualityResult, k: int = TARGET_K) -> list[tuple[str, str, bool]]:
    """``(target, measured, passed)`` for every acceptance target."""
    out: list[tuple[str, str, bool]] = []
    for modality, name in (("xray", "X-ray"), ("ecg", "ECG")):
        block = result.zeroshot.get(modality)
        macro = block.macro if block else float("nan")
        out.append(
            (
                f"{name} zero-shot macro AUROC >= {TARGET_AUROC}",
                _f(macro),
                bool(macro >= TARGET_AUROC),
            )
        )
    for modality, name in (("xray", "X-ray"), ("ecg", "ECG")):
        r = result.retrieval.get(f"text->{modality}")
        ratio = r.ratio(k) if r else float("nan")
        measured = f"{_f(r.recall[k])} = {_f(ratio, '.1f')}x chance" if r else "n/a"
        out.append(
            (
                f"text->{name} R@{k} >= {TARGET_RECALL_RATIO:g}x chance",
                measured,
                bool(ratio >= TARGET_RECALL_RATIO),
            )
        )
    return out


def render(
    result: QualityResult,
    info: TrainInfo | None,
    *,
    preset: str,
    n: int,
    seed: int,
    sets: Sequence[str],
    load_before: str,
    load_after: str,
) -> str:
    """The Markdown block of one run."""
    notes = [
        f"Preset `{preset}`"
        + (f" with `{' '.join(shlex.quote(s) for s in sets)}`" if sets else ""),
        f"Synthetic dataset: n={n} patients, seed {seed}; evaluated on the held-out "
        f"`{result.split}` split ({result.n_studies} studies). SYNTHETIC DATA: known-answer "
        "check of the pipeline, no clinical meaning.",
        f"Machine load before training: `{load_before}`",
        f"Machine load after evaluation: `{load_after}`",
    ]
    if info is not None:
        notes.insert(
            1,
            f"Training: {info.train_s:.0f} s measured in the training loop (cap "
            f"{info.max_time_s:.0f} s; whole `fit()` call {info.fit_s:.0f} s; process CPU time "
            f"in the loop {info.cpu_s:.0f} s), {info.steps} optimizer steps, {info.epochs} "
            "epoch(s) started",
        )
        if info.data_wait.get("steps"):
            w = info.data_wait
            notes.insert(
                2,
                f"Data wait (DataLoader num_workers={info.num_workers}, preprocessing cache): "
                f"{100 * w['fraction']:.1f}% of the training loop ({w['wait_s']:.1f} s of "
                f"{w['loop_s']:.1f} s over {w['steps']:.0f} steps, {w['step_ms']:.0f} ms/step; "
                "`medclip.callbacks.DataWaitMonitor`: time between one batch's end and the "
                "next one's start)",
            )
    parts = [report_header("Known-answer quality", PACKAGES, notes)]
    rows = [(t, m, "PASS" if ok else "FAIL") for t, m, ok in checks(result)]
    if info is not None and info.data_wait.get("steps"):
        frac = info.data_wait["fraction"]
        rows.append(
            (
                f"data wait < {TARGET_DATA_WAIT:.0%} of the training loop (issue #8)",
                f"{100 * frac:.1f}%",
                "PASS" if frac < TARGET_DATA_WAIT else "FAIL",
            )
        )
    parts += ["**Targets**", "", table(["target", "measured", "result"], rows, "llr"), ""]
    zrows = []
    for modality in ("xray", "ecg"):
        block = result.zeroshot.get(modality)
        if block is None:
            continue
        lo, hi = block.macro_ci
        zrows.append(
            (
                f"**{modality} macro** ({len(block.labels)} labels)",
                "",
                "",
                f"**{_f(block.macro)}**",
                f"{_f(lo)}-{_f(hi)}",
            )
        )
        for lab in block.labels:
            clo, chi = block.ci[lab]
            zrows.append(
                (
                    f"{modality}: {lab}",
                    str(block.n_pos[lab]),
                    str(block.n_neg[lab]),
                    _f(block.per_label[lab]),
                    f"{_f(clo)}-{_f(chi)}",
                )
            )
    parts += [
        "**Zero-shot AUROC** (positive/negative prompt pairs from the bundle; 95% percentile "
        "bootstrap CI, 1000 resamples of studies)",
        "",
        table(["label", "pos", "neg", "AUROC", "95% CI"], zrows),
        "",
    ]
    skipped = {
        f"{m}: {lab}": why for m, b in result.zeroshot.items() for lab, why in b.skipped.items()
    }
    if skipped:
        parts += [
            "Not scored (a class missing or too rare in the split): "
            + "; ".join(f"{k} ({v})" for k, v in skipped.items()),
            "",
        ]
    rrows = []
    for key, r in result.retrieval.items():
        cells = [key, str(r.n_queries), str(r.n_gallery)]
        for k in RECALL_KS:
            cells.append(f"{_f(r.recall[k])} ({_f(r.chance[k])}; {_f(r.ratio(k), '.1f')}x)")
        cells += [_f(r.mean_rank, ".1f"), _f(r.median_rank, ".1f")]
        rrows.append(cells)
    parts += [
        f"**Report -> modality retrieval** (query: {result.query_text}; each must find its own "
        f"study's item among all {result.split} items; cells: recall (chance k/N; ratio))",
        "",
        table(
            [
                "direction",
                "queries",
                "gallery",
                *(f"R@{k}" for k in RECALL_KS),
                "mean rank",
                "median",
            ],
            rrows,
        ),
        "",
    ]
    return "\n".join(parts)


def to_json(result: QualityResult, info: TrainInfo | None) -> dict[str, Any]:
    """JSON-serialisable form of a run."""
    return {
        "train": asdict(info) if info is not None else None,
        "split": result.split,
        "n_studies": result.n_studies,
        "zeroshot": {m: asdict(b) for m, b in result.zeroshot.items()},
        "retrieval": {
            k: {**asdict(r), "ratio": {kk: r.ratio(kk) for kk in r.recall}}
            for k, r in result.retrieval.items()
        },
        "checks": [{"target": t, "measured": m, "pass": ok} for t, m, ok in checks(result)],
    }


# ------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_synthetic_run_args(
        p, default_n=1200, work_dir="bench-quality", set_example="optim.lr_towers=2e-3"
    )
    p.add_argument("--max-time-s", type=float, default=300.0, help="training cap in seconds")
    p.add_argument("--no-cache", action="store_true", help="decode files during training")
    p.add_argument(
        "--val",
        action="store_true",
        help="keep the preset's in-run validation (counts towards the cap; default: off, the "
        "bench scores the test split itself)",
    )
    p.add_argument("--split", default="test", help="evaluation split (default test)")
    p.add_argument(
        "--min-class-count",
        type=int,
        default=1,
        help="score a label only with at least this many positives and negatives (default 1)",
    )
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument(
        "--threads", type=int, default=usable_cores(), help="torch threads (default: all usable)"
    )
    p.add_argument(
        "--bundle", type=Path, default=None, help="evaluate this bundle; skip data prep/training"
    )
    add_output_args(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the exit status is 0 whether or not the targets are met."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    set_threads(args.threads)
    work = args.work_dir.expanduser().resolve()
    data_root = work / f"data-n{args.n}-seed{args.seed}"
    stderr(f"synthetic data: {data_root} (generated once, not timed)")
    prepare_data(data_root, args.n, args.seed)
    info: TrainInfo | None = None
    load_before = uptime_line()
    if args.bundle is None:
        cache_dir = None if args.no_cache else work / f"cache-n{args.n}-seed{args.seed}"
        cfg = build_config(args.preset, args.n, args.seed, args.max_time_s, args.sets)
        if cache_dir is not None:
            stderr(f"preprocessing cache: {cache_dir} (built once, not timed)")
            prepare_cache(cfg, data_root, cache_dir)
        cfg = build_config(
            args.preset, args.n, args.seed, args.max_time_s, args.sets, cache_dir, args.val
        )
        name = args.run_name or time.strftime("run-%Y%m%d-%H%M%S")
        run_dir = work / name
        load_before = uptime_line()
        stderr(f"training {args.preset} for at most {args.max_time_s:.0f} s -> {run_dir}")
        info = train(cfg, data_root, run_dir, args.max_time_s)
        stderr(f"trained {info.steps} steps in {info.train_s:.0f} s; exporting the bundle")
        bundle_path = export(run_dir, cfg)
    else:
        bundle_path = args.bundle
        run_dir = bundle_path.parent
    stderr(f"evaluating {bundle_path} on the {args.split} split")
    result = evaluate(
        bundle_path,
        data_root,
        split=args.split,
        min_class_count=args.min_class_count,
        n_boot=args.n_boot,
        seed=args.seed,
    )
    block = render(
        result,
        info,
        preset=args.preset,
        n=args.n,
        seed=args.seed,
        sets=args.sets,
        load_before=load_before,
        load_after=uptime_line(),
    )
    write_json_atomic(run_dir / "quality.json", to_json(result, info))
    emit(args, HEADING, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
