"""Scoring blocks and report files shared by the evaluation protocols.

A protocol collects scores, then calls :func:`score_multilabel` (per-label and macro AUROC with
bootstrap 95 % CIs; F1 at thresholds tuned on the validation scores only; the CAFA-style sample F
at a validation-tuned threshold) or :func:`score_multiclass` (accuracy, macro F1 at the argmax,
one-vs-rest AUROC with CIs). Each block returns a JSON-ready dict and Markdown lines, and writes
ROC PNGs. :class:`Report` gathers the blocks and writes ``results.json`` and ``results.md``
atomically.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medclip.metrics import (
    SingleClassWarning,
    bootstrap_auroc,
    f1_at,
    fit_thresholds,
    fmax,
    sample_f1_at,
)
from medclip.plots import plot_roc_curves
from medclip.safe_load import write_json_atomic

RESEARCH_LINE = (
    "Research use only: model evaluation on retrospective data; not a medical device, not for "
    "clinical decisions."
)
#: Labels per ROC figure (larger label sets are drawn on several figures).
ROC_LABELS_PER_FIGURE = 12


def fmt(v: Any, digits: int = 3) -> str:
    """A number for Markdown tables (``n/a`` for None/NaN)."""
    if v is None:
        return "n/a"
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _ci(lo: Any, hi: Any) -> str:
    return "" if lo is None or hi is None else f" [{fmt(lo)}, {fmt(hi)}]"


def slug(text: str) -> str:
    """File-name friendly form of a section name."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "block"


def clean_json(value: Any) -> Any:
    """Recursively turn NaN/inf into None and numpy scalars/arrays into Python values."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


@contextlib.contextmanager
def quiet_metrics() -> Iterator[None]:
    """Silence single-class warnings and their log lines (they are reported in the results'
    ``excluded`` lists instead)."""
    log = logging.getLogger("medclip.metrics")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingleClassWarning)
            yield
    finally:
        log.setLevel(level)


def quiet_auroc(y: np.ndarray, s: np.ndarray, labels: Sequence[str], n_boot: int, seed: int) -> Any:
    """:func:`~medclip.metrics.bootstrap_auroc` inside :func:`quiet_metrics`."""
    with quiet_metrics():
        return bootstrap_auroc(y, s, labels, n_boot=n_boot, seed=seed)


def _rocs(
    y: np.ndarray, s: np.ndarray, labels: Sequence[str], out_dir: Path, name: str, title: str
) -> list[Path]:
    """ROC PNGs of a block: ``roc_<name>.png``, or ``roc_<name>_<k>.png`` per 12 labels."""
    if len(y) == 0:
        return []
    n = ROC_LABELS_PER_FIGURE
    parts = [list(range(i, min(i + n, len(labels)))) for i in range(0, len(labels), n)]
    files = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, cols in enumerate(parts, start=1):
            suffix = "" if len(parts) == 1 else f"_{k}"
            sub = f"{title} ({k}/{len(parts)})" if len(parts) > 1 else title
            files.append(
                plot_roc_curves(
                    y[:, cols],
                    s[:, cols],
                    out_dir / f"roc_{name}{suffix}.png",
                    [labels[c] for c in cols],
                    sub,
                )
            )
    return files


def score_multilabel(
    name: str,
    y_test: Any,
    s_test: Any,
    labels: Sequence[str],
    out_dir: Path,
    *,
    y_val: Any | None = None,
    s_val: Any | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    title: str | None = None,
) -> tuple[dict[str, Any], list[str], list[Path]]:
    """AUROC (+ CIs), validation-tuned F1 and ROC PNGs of one multi-label score matrix.

    Args:
        name: section name (used in file names).
        y_test: ``(N, L)`` 1/0/NaN.
        s_test: ``(N, L)`` scores.
        labels: ``L`` names.
        out_dir: where ROC PNGs go.
        y_val: validation labels for threshold tuning (no F1 without them).
        s_val: validation scores.
        n_boot: bootstrap resamples.
        seed: bootstrap seed.
        title: ROC figure title.

    Returns:
        ``(results, markdown_lines, files)``.
    """
    y = np.asarray(y_test, dtype=np.float64)
    s = np.asarray(s_test, dtype=np.float64)
    ci = quiet_auroc(y, s, labels, n_boot, seed)
    res: dict[str, Any] = {"n": len(y), "auroc": ci.as_dict()}
    f1_per: dict[str, Any] = {}
    if y_val is not None and s_val is not None and len(y_val):
        yv = np.asarray(y_val, dtype=np.float64)
        sv = np.asarray(s_val, dtype=np.float64)
        with quiet_metrics():
            thr = fit_thresholds(yv, sv, labels)
        f1 = f1_at(y, s, thr, labels)
        t_sample = fmax(yv, sv).threshold
        f1_per = dict(zip(labels, f1.per_label.tolist()))
        res["f1"] = {
            "thresholds_from": "validation",
            "n_val": len(yv),
            "macro": f1.macro,
            "micro": f1.micro,
            "per_label": f1_per,
            "thresholds": dict(zip(labels, thr.tolist())),
        }
        res["sample_f"] = {
            "threshold_from": "validation",
            "threshold": t_sample,
            "test": sample_f1_at(y, s, t_sample),
        }
    else:
        res["f1"] = None
    files = _rocs(y, s, labels, out_dir, slug(name), title or name)
    a = res["auroc"]
    md = [
        f"### {title or name}",
        "",
        f"n = {res['n']}; macro AUROC **{fmt(a['macro_auroc'])}**"
        f"{_ci(*a['macro_ci'])} (bootstrap {a['n_boot']}, 95 % CI)"
        + (
            f"; macro F1 {fmt(res['f1']['macro'])} at validation-tuned thresholds; "
            f"sample F {fmt(res['sample_f']['test'])}"
            if res["f1"]
            else "; F1 not reported (no validation scores to tune thresholds on)"
        ),
        "",
        "| label | positives | AUROC [95 % CI] | F1 |",
        "|---|---|---|---|",
    ]
    for lab in labels:
        lo, hi = a["per_label_ci"][lab]
        md.append(
            f"| {lab} | {a['n_positive'][lab]} | {fmt(a['per_label'][lab])}{_ci(lo, hi)} | "
            f"{fmt(f1_per.get(lab))} |"
        )
    if a["excluded"]:
        md += ["", f"No AUROC (one class only): {', '.join(a['excluded'])}."]
    md.append("")
    return res, md, files


def score_multiclass(
    name: str,
    y_true: Any,
    probs: Any,
    classes: Sequence[str],
    out_dir: Path,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    title: str | None = None,
) -> tuple[dict[str, Any], list[str], list[Path]]:
    """Accuracy, macro F1 at the argmax, one-vs-rest AUROC (+ CIs) and a confusion matrix.

    Args:
        y_true: ``(N,)`` integer class ids.
        probs: ``(N, C)`` class probabilities (or scores).
        classes: ``C`` names.
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    pred = p.argmax(axis=1)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    ci = quiet_auroc(onehot, p, classes, n_boot, seed)
    conf = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(conf, (y, pred), 1)
    f1s = []
    for k in range(len(classes)):
        tp = conf[k, k]
        denom = conf[k, :].sum() + conf[:, k].sum()
        f1s.append(2 * tp / denom if denom else float("nan"))
    defined = [f for f in f1s if not math.isnan(f)]
    res: dict[str, Any] = {
        "n": len(y),
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "macro_f1_argmax": float(np.mean(defined)) if defined else float("nan"),
        "per_class_f1": dict(zip(classes, f1s)),
        "auroc_one_vs_rest": ci.as_dict(),
        "confusion": {"classes": list(classes), "rows_true_cols_pred": conf.tolist()},
    }
    files = _rocs(onehot, p, classes, out_dir, slug(name), title or name)
    a = res["auroc_one_vs_rest"]
    md = [
        f"### {title or name}",
        "",
        f"n = {res['n']}; accuracy **{fmt(res['accuracy'])}**; macro F1 (argmax) "
        f"{fmt(res['macro_f1_argmax'])}; macro one-vs-rest AUROC {fmt(a['macro_auroc'])}"
        f"{_ci(*a['macro_ci'])}",
        "",
        "| class | n | AUROC [95 % CI] | F1 |",
        "|---|---|---|---|",
    ]
    for j, c in enumerate(classes):
        lo, hi = a["per_label_ci"][c]
        md.append(
            f"| {c} | {int((y == j).sum())} | {fmt(a['per_label'][c])}{_ci(lo, hi)} | "
            f"{fmt(f1s[j])} |"
        )
    md += ["", "Confusion matrix (rows: truth, columns: prediction):", ""]
    md.append("| | " + " | ".join(classes) + " |")
    md.append("|---" * (len(classes) + 1) + "|")
    for j, c in enumerate(classes):
        md.append(f"| {c} | " + " | ".join(str(v) for v in conf[j]) + " |")
    md.append("")
    return res, md, files


@dataclass
class Report:
    """Results of one protocol run: JSON blocks, Markdown and the files written.

    Attributes:
        protocol: protocol name.
        header: run description (bundle, data, options...).
        results: section -> results dict.
        markdown: Markdown lines (sections appended by :meth:`add`).
        files: PNGs and other files written.
    """

    protocol: str
    header: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)
    markdown: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def add(
        self, key: str, result: Any, md: Sequence[str] = (), files: Sequence[Path] = ()
    ) -> None:
        """Add one section."""
        self.results[key] = result
        self.markdown.extend(md)
        self.files.extend(files)

    def to_json(self) -> dict[str, Any]:
        """The ``results.json`` content."""
        return clean_json(
            {
                **self.header,
                "protocol": self.protocol,
                "research_use_notice": RESEARCH_LINE,
                "results": self.results,
                "files": [p.name for p in self.files],
            }
        )

    def render_markdown(self) -> str:
        """The ``results.md`` content."""
        h = self.header
        head = [
            f"# medclip evaluation: {self.protocol}",
            "",
            f"*{RESEARCH_LINE}*",
            "",
            f"- bundle: `{h.get('bundle', '')}` (trained on: {h.get('trained_on', 'unknown')})",
            f"- data: `{h.get('data', '')}`",
            f"- command: `{h.get('command', '')}`",
            f"- created: {h.get('created', '')}; medclip {h.get('medclip_version', '')}",
            "",
        ]
        return "\n".join(head + list(self.markdown)) + "\n"

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``results.json`` and ``results.md`` atomically; returns their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        j = write_json_atomic(out / "results.json", self.to_json(), allow_nan=False)
        m = out / "results.md"
        fd, tmp = tempfile.mkstemp(prefix=".results.md.", suffix=".tmp", dir=out)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(self.render_markdown())
            os.replace(tmp, m)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return j, m
