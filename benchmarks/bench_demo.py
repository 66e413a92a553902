"""Demo latency: one request (X-ray + ECG) against the bare encoders' forward pass.

Run from the repository root::

    .venv/bin/python benchmarks/bench_demo.py                 # small quick-start bundle (CPU)
    .venv/bin/python benchmarks/bench_demo.py --bundle PATH   # any bundle
    .venv/bin/python benchmarks/bench_demo.py --quick         # tiny, 3 repeats (a quick check)

Measures, with repeated *interleaved* runs on the same inputs (a real chest X-ray and a real
12-lead ECG from ``../shared/data/real`` when present, else the bundle's first example):

* ``request``: what one click on "Analyse" costs in the app (:func:`apps.handlers.analyze_paths`):
  read and check both files, preprocess, embed, zero-shot, similar-case search, the 12-lead plot,
  the X-ray view and, with prototypes, the ProtoECGNet explanation and its figures;
* ``inference``: :meth:`medclip.inference.Predictor.zeroshot` from the same files (read,
  preprocess, embed, classify; no search, no figures);
* ``encoders``: the bare X-ray and ECG towers' forward pass on the already preprocessed tensors;
* optionally (``--http``) ``http request``: the same request through the running Gradio server
  with ``gradio_client`` (upload, queue, JSON, image encoding).

Reports medians with min/max and the per-repeat ratios request / encoders (and inference /
encoders), prints a Markdown block and appends it to BENCHMARKS.md (``--no-append``: print only).
Without ``--bundle`` the quick-start bundle of ``--preset`` is used (built first if absent, which
takes minutes for ``small``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import (  # noqa: E402
    Stat,
    add_output_args,
    emit,
    interleave,
    paired_ratios,
    report_header,
    set_threads,
    stderr,
    table,
)

SECTION = "## Demo request latency (benchmarks/bench_demo.py)"
REAL = REPO.parent / "shared" / "data" / "real"


def default_inputs(res: Any) -> tuple[Path, Path, str]:
    """(X-ray, ECG record, description): real public samples if present, else an example."""
    xrays = sorted((REAL / "cxr" / "kermany_test_224" / "PNEUMONIA").glob("*.jpeg"))
    ecg = REAL / "ecg" / "cinc2021" / "HR06000.hea"
    if xrays and ecg.is_file():
        return xrays[0], ecg, "real: Kermany 224x224 JPEG X-ray + CinC 2021 HR06000 (500 Hz, 10 s)"
    if not res.examples:
        raise SystemExit("no real samples and the bundle has no examples: pass --xray and --ecg")
    ex = res.examples[0]
    return ex.xray, ex.ecg, f"bundled example {ex.name} (synthetic)"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=None, help="bundle (default: the quick-start)")
    p.add_argument("--preset", default="small", help="quick-start preset without --bundle")
    p.add_argument("--quickstart-home", default=None, help="quick-start home folder")
    p.add_argument("--xray", type=Path, default=None, help="X-ray file (default: real sample)")
    p.add_argument("--ecg", type=Path, default=None, help="ECG record (default: real sample)")
    p.add_argument("--repeats", type=int, default=10, help="timed repeats per run (10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (2)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--http", action="store_true", help="also time the request over HTTP")
    p.add_argument("--quick", action="store_true", help="tiny preset, 3 repeats, 1 warm-up")
    add_output_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.repeats, args.warmup = "tiny", 3, 1
    if args.threads:
        set_threads(args.threads)

    import torch

    from apps.handlers import analyze_paths, load_resources

    if args.bundle is None:
        from medclip.quickstart import QuickstartOptions, build_quickstart

        stderr(f"quick-start bundle ({args.preset}); built now if absent")
        qs = build_quickstart(args.quickstart_home, QuickstartOptions(preset=args.preset))
        bundle_dir, bundle_text = qs.bundle, f"quick-start `{args.preset}` preset"
    else:
        bundle_dir, bundle_text = args.bundle, f"`{args.bundle}`"
    res = load_resources(bundle_dir)
    xray, ecg, inputs_text = default_inputs(res)
    if args.xray or args.ecg:
        if not (args.xray and args.ecg):
            raise SystemExit("give both --xray and --ecg")
        xray, ecg, inputs_text = args.xray, args.ecg, f"`{args.xray.name}` + `{args.ecg.name}`"

    pred = res.predictor
    from medclip.io import read_cxr, read_ecg

    x = torch.from_numpy(pred._prep_xray(read_cxr(xray)))[None, None]  # (1, 1, S, S)
    e = torch.from_numpy(pred._prep_ecg(read_ecg(ecg)))[None]  # (1, 12, T)
    model = pred.model

    def run_request() -> float:
        t0 = time.perf_counter()
        out = analyze_paths(res, xray, ecg)
        dt = time.perf_counter() - t0
        if out.error:
            raise SystemExit(f"request failed: {out.error}")
        return dt

    def run_inference() -> float:
        t0 = time.perf_counter()
        pred.zeroshot(xray=xray, ecg=ecg)
        return time.perf_counter() - t0

    @torch.no_grad()
    def run_encoders() -> float:
        t0 = time.perf_counter()
        model.towers["xray"](x)
        model.towers["ecg"](e)
        return time.perf_counter() - t0

    runs = {"request": run_request, "inference": run_inference, "encoders": run_encoders}
    app = None
    if args.http:
        import socket

        from gradio_client import Client, handle_file

        from apps.demo import launch

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        app = launch(resources=res, port=port, block=False, quiet=True)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        ecg_files = [ecg, *sorted(ecg.parent.glob(f"{ecg.stem}.*"))]
        ecg_files = sorted({f for f in ecg_files if f.suffix.lower() in (".hea", ".dat", ".mat")})

        def run_http() -> float:
            t0 = time.perf_counter()
            out = client.predict(
                handle_file(str(xray)),
                [handle_file(str(f)) for f in ecg_files],
                api_name="/analyze",
            )
            dt = time.perf_counter() - t0
            if out[0]:
                raise SystemExit(f"HTTP request failed: {out[0]}")
            return dt

        runs["http request"] = run_http
    try:
        times = interleave(runs, args.repeats, warmup=args.warmup, log=stderr)
    finally:
        if app is not None:
            app.close()

    stats = {k: Stat.of([v * 1000 for v in vals]) for k, vals in times.items()}
    rows = [[name, s.fmt(".1f")] for name, s in stats.items()]
    ratios = {
        f"{name} / encoders": Stat.of(paired_ratios(times[name], times["encoders"]))
        for name in times
        if name != "encoders"
    }
    notes = [
        f"Bundle: {bundle_text}; towers `{res.bundle.config.model.xray.name}` + "
        f"`{res.bundle.config.model.ecg.name}`; ProtoECGNet: "
        f"{'yes' if res.proto is not None else 'no'}; index: "
        f"{len(res.index) if res.index is not None else 0} cases",
        f"Inputs: {inputs_text}; X-ray tensor {tuple(x.shape)}, ECG tensor {tuple(e.shape)}",
        f"{args.repeats} interleaved repeats after {args.warmup} warm-up round(s), batch 1, CPU",
    ]
    block = "\n".join(
        [
            report_header("Demo request vs bare encoders", ["gradio"], notes),
            table(["run", "ms per request, median (min-max)"], rows),
            "",
            table(
                ["ratio (per repeat)", "median (min-max)"],
                [[k, s.fmt(".1f")] for k, s in ratios.items()],
            ),
            "",
        ]
    )
    emit(args, SECTION, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
