"""Similar-case retrieval benchmark: faiss exact / HNSW / IVF against a numpy matmul baseline.

One command builds an index of ``--n`` synthetic, clustered, L2-normalised embeddings (default
1M x 128-d), then measures, side by side in one run:

* query latency of numpy ``Q @ X.T`` + top-k (baseline), faiss ``IndexFlatIP`` (exact), faiss
  ``IndexHNSWFlat`` and ``IndexIVFFlat`` (both inner product, built with the same
  :func:`medclip.retrieval.create_faiss_index` that :class:`~medclip.retrieval.CaseIndex` uses),
  in batch mode (all queries in one call) and single-query mode;
* recall@k of HNSW and IVF against exact faiss, and of exact faiss against numpy.

Runs are repeated and interleaved (the method order rotates every repeat); the report gives
medians with min/max and ratios. A Markdown block with machine info and the exact command is
printed and appended to ``BENCHMARKS.md`` (append only).

    python benchmarks/bench_retrieval.py                # 1M vectors (minutes, several GB RAM)
    python benchmarks/bench_retrieval.py --n 20000      # smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from _common import append_section, cpu_model
from threadpoolctl import threadpool_limits

from medclip.retrieval import IndexParams, create_faiss_index, ivf_nlist_for

REPO_ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Similar-case retrieval (`benchmarks/bench_retrieval.py`)"
SearchFn = Callable[[np.ndarray], np.ndarray]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="indexed vectors")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--clusters", type=int, default=1000, help="Gaussian clusters in the data")
    p.add_argument("--spread", type=float, default=0.35, help="within-cluster noise std")
    p.add_argument("--queries", type=int, default=1000, help="queries in batch mode")
    p.add_argument("--single", type=int, default=100, help="queries in single-query mode")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=80)
    p.add_argument("--ef-search", type=int, default=64)
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default 4*sqrt(n))")
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    p.add_argument("--no-append", action="store_true", help="print only")
    return p.parse_args(argv)


def make_data(
    n: int, n_queries: int, dim: int, clusters: int, spread: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors: ``(n, dim)`` database and ``(n_queries, dim)`` held-out queries."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim), dtype=np.float32)

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, dim), dtype=np.float32)
        for i in range(0, m, 100_000):
            j = min(m, i + 100_000)
            a = rng.integers(0, clusters, j - i)
            out[i:j] = centers[a] + spread * rng.standard_normal((j - i, dim), dtype=np.float32)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    return draw(n), draw(n_queries)


def numpy_topk(x: np.ndarray, q: np.ndarray, k: int, chunk: int = 64) -> np.ndarray:
    """Exact top-k rows by inner product with a plain matmul + argpartition."""
    out = np.empty((len(q), k), dtype=np.int64)
    for i in range(0, len(q), chunk):
        s = q[i : i + chunk] @ x.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, 1), axis=1)
        out[i : i + chunk] = np.take_along_axis(part, order, 1)
    return out


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of ``truth``'s top-k rows that ``found`` also returns."""
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)]))


def machine_info(threads: int) -> dict[str, str]:
    """CPU model, cores, thread settings and library versions."""
    cpu = cpu_model()
    try:
        import torch

        torch_v = str(torch.__version__)
    except ImportError:  # pragma: no cover
        torch_v = "not installed"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "threads": f"{threads} (faiss OpenMP and numpy BLAS)",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "torch": torch_v,
    }


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def run(args: argparse.Namespace) -> str:
    """Build, measure and return the Markdown report."""
    faiss.omp_set_num_threads(args.threads)
    k = args.k
    print(f"generating {args.n:,} x {args.dim}-d clustered unit vectors ...", flush=True)
    x, q = make_data(args.n, args.queries, args.dim, args.clusters, args.spread, args.seed)
    q_single = q[: args.single]
    params = IndexParams(
        hnsw_m=args.hnsw_m,
        hnsw_ef_construction=args.ef_construction,
        hnsw_ef_search=args.ef_search,
        ivf_nlist=args.nlist,
        ivf_nprobe=args.nprobe,
    )
    indexes: dict[str, Any] = {}
    build_s: dict[str, float] = {"numpy": 0.0}
    for kind in ("exact", "hnsw", "ivf"):
        print(f"building {kind} ...", flush=True)
        t0 = time.perf_counter()
        index = create_faiss_index(kind, args.dim, params, n_train=args.n)
        if kind == "ivf":
            rng = np.random.default_rng(args.seed + 1)
            n_train = min(args.n, 64 * ivf_nlist_for(args.n, params))
            index.train(x[rng.choice(args.n, n_train, replace=False)])
        index.add(x)
        build_s[kind] = time.perf_counter() - t0
        indexes[kind] = index

    def faiss_fn(index: Any) -> SearchFn:
        return lambda qq: index.search(qq, k)[1]

    methods: dict[str, SearchFn] = {
        "numpy": lambda qq: numpy_topk(x, qq, k),
        **{kind: faiss_fn(idx) for kind, idx in indexes.items()},
    }
    names = list(methods)
    batch: dict[str, list[float]] = {m: [] for m in names}
    single: dict[str, list[float]] = {m: [] for m in names}
    results: dict[str, np.ndarray] = {}
    with threadpool_limits(limits=args.threads):
        for m in names:  # warm-up, and the results used for recall
            results[m] = methods[m](q)
        for r in range(args.repeats):
            order = names[r % len(names) :] + names[: r % len(names)]
            print(f"repeat {r + 1}/{args.repeats}: {' -> '.join(order)}", flush=True)
            for m in order:
                t0 = time.perf_counter()
                methods[m](q)
                batch[m].append((time.perf_counter() - t0) / len(q) * 1e3)
                t0 = time.perf_counter()
                for i in range(len(q_single)):
                    methods[m](q_single[i : i + 1])
                single[m].append((time.perf_counter() - t0) / max(len(q_single), 1) * 1e3)

    recall = {
        "numpy": 1.0,
        "exact": recall_at(results["exact"], results["numpy"]),
        "hnsw": recall_at(results["hnsw"], results["exact"]),
        "ivf": recall_at(results["ivf"], results["exact"]),
    }
    ref = {"numpy": "-", "exact": "vs numpy", "hnsw": "vs exact", "ivf": "vs exact"}
    med_b = {m: statistics.median(v) for m, v in batch.items()}
    med_s = {m: statistics.median(v) for m, v in single.items()}
    info = machine_info(args.threads)
    nlist = ivf_nlist_for(args.n, params)
    labels = {
        "numpy": "numpy matmul + argpartition",
        "exact": "faiss IndexFlatIP (exact)",
        "hnsw": f"faiss IndexHNSWFlat M={args.hnsw_m} efC={args.ef_construction} "
        f"efS={args.ef_search}",
        "ivf": f"faiss IndexIVFFlat nlist={nlist} nprobe={min(args.nprobe, nlist)}",
    }
    lines = [
        "",
        f"### n = {args.n:,} x {args.dim}-d, {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Command: `{shlex.join(['python', *sys.argv])}`",
        "",
        "Machine: " + "; ".join(f"{key} {val}" for key, val in info.items()),
        "",
        f"Data: {args.clusters} Gaussian clusters (noise std {args.spread}), L2-normalised, "
        f"seed {args.seed}; {len(q)} held-out queries (batch mode, one call), "
        f"{len(q_single)} queries one by one (single mode); k = {k}; "
        f"{args.repeats} interleaved repeats, median (min-max).",
        "",
        f"| method | build s | batch ms/query | single-query ms | recall@{k} | "
        "batch speed-up vs exact | single speed-up vs exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in names:
        lines.append(
            f"| {labels[m]} | {build_s[m]:.2f} | {_fmt(batch[m])} | {_fmt(single[m])} | "
            f"{recall[m]:.4f} {ref[m]} | {med_b['exact'] / med_b[m]:.2f}x | "
            f"{med_s['exact'] / med_s[m]:.2f}x |"
        )
    lines += [
        "",
        f"Ratios (median latency): numpy/exact batch {med_b['numpy'] / med_b['exact']:.2f}x, "
        f"single {med_s['numpy'] / med_s['exact']:.2f}x; "
        f"exact/HNSW batch {med_b['exact'] / med_b['hnsw']:.2f}x, "
        f"single {med_s['exact'] / med_s['hnsw']:.2f}x; "
        f"exact/IVF batch {med_b['exact'] / med_b['ivf']:.2f}x, "
        f"single {med_s['exact'] / med_s['ivf']:.2f}x.",
        "",
    ]
    return "\n".join(lines)


def append_report(path: Path, block: str) -> None:
    """Append ``block`` under :data:`HEADING` (added first if the file lacks it)."""
    append_section(path, HEADING, block)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    if args.n < args.k or args.queries < 1 or args.repeats < 1:
        raise SystemExit("need --n >= --k, --queries >= 1 and --repeats >= 1")
    block = run(args)
    print(block)
    if not args.no_append:
        append_report(args.out, block)
        print(f"appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
