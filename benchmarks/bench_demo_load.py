"""Demo under load: parallel clients against the local server, errors, latency and memory growth.

Run from the repository root (needs ``gradio_client``; ``psutil`` for child processes' memory)::

    .venv/bin/python benchmarks/bench_demo_load.py                  # small quick-start, 8 x 60 s
    .venv/bin/python benchmarks/bench_demo_load.py --bundle PATH    # any bundle
    .venv/bin/python benchmarks/bench_demo_load.py --quick          # tiny quick-start, 8 x 15 s

Starts ``python -m medclip demo --bundle B`` in a child process on a free ``127.0.0.1`` port (the
default bind), then ``--clients`` parallel ``gradio_client`` clients (:mod:`apps.loadtest`) loop
for ``--duration`` seconds over realistic requests:

* ``/analyze`` with a real chest X-ray (Kermany JPEG) and a real 500 Hz WFDB ECG (``.hea`` +
  ``.mat``) from ``../shared/data/real``;
* ``/analyze`` with a real 1955 x 1841 chest CR DICOM (pydicom-data ``RG1_UNCR.dcm``) and the
  native 100 Hz PTB-XL record (``.hea`` + ``.dat``);
* ``/analyze_example`` (the bundle's first example) and ``/search`` (a free-text query);
* two refused uploads that must come back as readable messages: an ``.exe`` as the X-ray (type
  allowlist) and a ``.hea`` without its signal file.

Without the real samples the bundle's examples are uploaded instead. Counted: requests, errors
(an exception, or an error panel that is not the expected one), latency median / p95 per request
type. The server's RSS (with its children) is sampled every ``--interval`` s: at startup, the
baseline once every client finished its warm-up round, the peak under load, the final value
after the load, and the highest value per 10 s (a leak climbs, a working set levels off); the
growth is peak - baseline. Prints PASS/FAIL for "no errors" and "growth within
``--max-rss-growth-mb``" and appends the report to BENCHMARKS.md (``--no-append``: print only).
The exit status is 0 whatever the verdicts (non-zero only when the run itself fails).

The bound, 300 MiB by default: on the tiny bundle (2 cores) the server's RSS levelled off within
+135 to +190 MiB of the baseline over 60-150 s of this load. Before the demo tuned glibc's malloc
(``apps.demo.tune_malloc``; a ``MALLOC_ARENA_MAX`` or ``MALLOC_MMAP_THRESHOLD_`` given with
``--server-env`` turns the tuning off) it rose by ~300 MiB in 60 s and kept rising (+420 to
+520 MiB after 3 minutes), which the bound catches.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import add_output_args, emit, report_header, stderr, table, usable_cores  # noqa: E402
from bench_memory import child_env, free_port, stop_process, tail, wait_ready  # noqa: E402

SECTION = "## Demo under load (benchmarks/bench_demo_load.py)"
PACKAGES = ("gradio", "gradio_client", "psutil")
REAL = REPO.parent / "shared" / "data" / "real"
QUERY = "ECGs with atrial fibrillation and a rapid ventricular response"
#: Default bound on peak - baseline RSS under load (MiB); see the --max-rss-growth-mb help.
DEFAULT_MAX_GROWTH_MB = 300.0


def default_requests(bundle: Path, scratch: Path, real: Path = REAL) -> tuple[list[Any], str]:
    """The request mix (:class:`apps.loadtest.LoadRequest`) and a description of its inputs."""
    from apps.handlers import load_examples
    from apps.loadtest import LoadRequest

    reqs: list[LoadRequest] = []
    kermany = sorted((real / "cxr" / "kermany_test_224" / "PNEUMONIA").glob("*.jpeg"))
    cinc = real / "ecg" / "cinc2021" / "HR06000.hea"
    ptbxl = real / "ecg" / "ptbxl_native" / "records100" / "00000" / "00001_lr.hea"
    described: list[str] = []
    if kermany and cinc.is_file():
        reqs.append(
            LoadRequest(
                "JPEG X-ray + 500 Hz ECG",
                "/analyze",
                (kermany[0], [cinc, cinc.with_suffix(".mat")]),
            )
        )
        described.append("Kermany JPEG + CinC HR06000 (.hea/.mat)")
    try:
        from pydicom.data import get_testdata_file

        cr = get_testdata_file("RG1_UNCR.dcm")
    except Exception:  # pydicom-data absent: skip this request
        cr = None
    if cr and ptbxl.is_file():
        reqs.append(
            LoadRequest(
                "DICOM CR + 100 Hz ECG",
                "/analyze",
                (Path(str(cr)), [ptbxl, ptbxl.with_suffix(".dat")]),
            )
        )
        described.append("RG1_UNCR.dcm (1955x1841 CR) + PTB-XL 00001_lr (.hea/.dat)")
    examples = load_examples(bundle)
    if examples:
        ex = examples[0]
        reqs.append(LoadRequest("bundled example", "/analyze_example", (ex.title,)))
        if not reqs[:-1] and ex.xray is not None and ex.ecg is not None:
            ecg_files = sorted(p for p in ex.ecg.parent.glob(f"{ex.ecg.stem}.*"))
            reqs.append(LoadRequest("example upload", "/analyze", (ex.xray, ecg_files)))
            described.append(f"bundled example {ex.name} uploaded (synthetic)")
    if not reqs:
        raise SystemExit("no real samples and the bundle has no examples: nothing to send")
    reqs.append(LoadRequest("text search", "/search", (QUERY, "ECG")))
    exe = scratch / "setup.exe"
    exe.write_bytes(b"MZ" + b"\0" * 2046)
    reqs.append(LoadRequest("refused: .exe as X-ray", "/analyze", (exe, None), "is not accepted"))
    if cinc.is_file():
        lone = scratch / "lone" / cinc.name
        lone.parent.mkdir(exist_ok=True)
        lone.write_bytes(cinc.read_bytes())
        reqs.append(
            LoadRequest(
                "refused: .hea without .mat", "/analyze", (None, [lone]), "needs its signal file"
            )
        )
    return reqs, "; ".join(described) or "bundled examples"


def resolve_bundle(args: argparse.Namespace) -> tuple[Path, str]:
    """The bundle to serve and its description (the quick-start one is built when absent)."""
    if args.bundle is not None:
        if not (args.bundle / "config.json").is_file():
            raise SystemExit(f"{args.bundle}: not a model bundle (no config.json)")
        return args.bundle, f"`{args.bundle}`"
    from medclip.quickstart import QuickstartOptions, build_quickstart

    stderr(f"quick-start bundle ({args.preset}); built now if absent")
    qs = build_quickstart(args.quickstart_home, QuickstartOptions(preset=args.preset))
    return qs.bundle, f"quick-start `{args.preset}` preset"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=None, help="bundle (default: the quick-start)")
    p.add_argument("--preset", default="small", help="quick-start preset without --bundle")
    p.add_argument("--quickstart-home", default=None, help="quick-start home folder")
    p.add_argument("--clients", type=int, default=8, help="parallel clients (8)")
    p.add_argument("--duration", type=float, default=None, help="seconds of load (60)")
    p.add_argument("--interval", type=float, default=0.5, help="RSS sampling period, s (0.5)")
    p.add_argument(
        "--max-rss-growth-mb",
        type=float,
        default=DEFAULT_MAX_GROWTH_MB,
        help="bound on peak - baseline server RSS under load, MiB (default 300: about twice "
        "the measured working set of requests in flight, too little for a leak or allocator "
        "creep over a 60 s run)",
    )
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="server upload limit (50)")
    p.add_argument("--auth", default=None, metavar="USER:PASSWORD", help="serve with a login")
    p.add_argument("--threads", type=int, default=usable_cores(), help="server OMP threads")
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of the server, e.g. MALLOC_ARENA_MAX=2 (repeatable)",
    )
    p.add_argument("--startup-timeout", type=float, default=600.0, help="seconds (600)")
    p.add_argument(
        "--quick", action="store_true", help="tiny quick-start, 15 s of load unless --duration"
    )
    add_output_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.preset = "tiny"
    if args.duration is None:
        args.duration = 15.0 if args.quick else 60.0
    if args.clients < 1 or args.duration <= 0 or args.threads < 1:
        p.error("--clients and --threads must be >= 1, --duration > 0")
    if any("=" not in kv for kv in args.server_env):
        p.error("--server-env takes KEY=VALUE")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the load test; returns 0 whatever the verdicts."""
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from apps.demo import parse_auth
    from apps.loadtest import RssSampler, run_load

    auth = parse_auth(args.auth)
    bundle, bundle_text = resolve_bundle(args)
    with tempfile.TemporaryDirectory(prefix="medclip-bench-load-") as tmp_text:
        tmp = Path(tmp_text)
        requests, inputs_text = default_requests(bundle, tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        cmd = [
            sys.executable,
            "-m",
            "medclip",
            "demo",
            "--bundle",
            str(bundle),
            "--port",
            str(port),
        ]
        cmd += ["--max-upload-mb", f"{args.max_upload_mb:g}", "--no-progress"]
        if args.auth:
            cmd += ["--auth", args.auth]
        log_path = tmp / "demo.log"
        stderr(f"starting the demo on {url} ...")
        env = child_env(args.threads)
        env.update(kv.split("=", 1) for kv in args.server_env)
        with open(log_path, "w") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=tmp)
            sampler = RssSampler(proc.pid, args.interval).start()
            try:
                try:
                    startup_s = wait_ready(url, proc, args.startup_timeout)
                except (RuntimeError, TimeoutError) as exc:
                    msg = f"{exc}; last lines of the demo log:\n{tail(log_path)}"
                    raise SystemExit(msg) from exc
                ready_mb = sampler.sample()
                stderr(
                    f"ready after {startup_s:.1f} s; {args.clients} clients x "
                    f"{args.duration:g} s over {len(requests)} request types"
                )
                result = run_load(
                    url,
                    requests,
                    clients=args.clients,
                    duration_s=args.duration,
                    rss=sampler,
                    auth=auth[0] if auth else None,
                )
            finally:
                sampler.stop()
                stop_process(proc)
        server_alive = "yes" if proc.returncode in (0, -15) else f"exit {proc.returncode}"

    rows = []
    for name in [*result.names(), None]:
        med, p95, n = result.latency_ms(name)
        errs = sum(1 for r in result.records if r.problem and (name is None or r.name == name))
        rows.append([name or "**all**", str(n), str(errs), f"{med:,.0f}", f"{p95:,.0f}"])
    mem = [
        ["at startup (page answers)", f"{ready_mb or float('nan'):,.0f}"],
        ["baseline (after warm-up)", f"{result.rss_baseline_mb:,.0f}"],
        ["peak under load", f"{result.rss_peak_mb:,.0f}"],
        ["final (2 s after the load)", f"{result.rss_final_mb:,.0f}"],
        ["growth (peak - baseline)", f"{result.rss_growth_mb:+,.0f}"],
        ["retained (final - baseline)", f"{result.rss_retained_mb:+,.0f}"],
    ]
    no_errors = result.errors == 0
    within = result.rss_growth_mb <= args.max_rss_growth_mb
    verdicts = [
        f"- **{'PASS' if no_errors else 'FAIL'}** no errors: {result.errors} error(s) in "
        f"{result.requests} counted requests (+ {args.clients * len(requests)} warm-up)",
        f"- **{'PASS' if within else 'FAIL'}** memory growth within bound: "
        f"{result.rss_growth_mb:+,.0f} MiB <= {args.max_rss_growth_mb:g} MiB",
    ]
    verdicts += [f"  - problem: {p}" for p in result.problems()]
    notes = [
        f"Bundle: {bundle_text}; server `python -m medclip demo --bundle B` on 127.0.0.1 "
        f"(OMP_NUM_THREADS={args.threads}{''.join(', ' + kv for kv in args.server_env)}, "
        f"upload limit {args.max_upload_mb:g} MB"
        f"{', with login' if auth else ''}); started in {startup_s:.1f} s; "
        f"server shut down cleanly: {server_alive}",
        f"Load: {args.clients} parallel gradio_client clients for {args.duration:g} s "
        f"({result.duration_s:.1f} s with the requests in flight at the end), "
        f"{result.requests / result.duration_s:.2f} requests/s; inputs: {inputs_text}",
        f"RSS of the server and its children sampled every {args.interval:g} s (MiB = 2^20 "
        "bytes); clients run in this process, not counted. Highest RSS per 10 s of load: "
        + ", ".join(f"{mb:,.0f}" for mb in result.rss_every(10.0)),
    ]
    block = "\n".join(
        [
            report_header(f"Demo under load, {args.clients} clients", PACKAGES, notes),
            table(["request", "count", "errors", "median ms", "p95 ms"], rows),
            "",
            table(["server RSS", "MiB"], mem),
            "",
            *verdicts,
            "",
        ]
    )
    emit(args, SECTION, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
