"""Memory: peak RSS while training the ``small`` preset and while serving the demo under load.

Run from the repository root (needs ``psutil`` and ``gradio_client``, in the ``bench``/``dev``
extras)::

    .venv/bin/python benchmarks/bench_memory.py                      # both parts, defaults
    .venv/bin/python benchmarks/bench_memory.py --what demo --bundle runs/small/bundle
    .venv/bin/python benchmarks/bench_memory.py --quick --no-append   # small sizes: checks it runs

Each part runs the real command line in a child process and samples the memory of that process
and all its descendants (DataLoader workers, ...) every ``--interval`` seconds with psutil:

* **train**: ``python -m medclip fit --config small`` for ``--steps`` optimizer steps (validation
  included) on the synthetic dataset, generated beforehand so that only training is measured.
* **demo**: ``python -m medclip demo --bundle B`` (``--bundle``, else the ``small`` preset with
  random weights exported to a temporary bundle: memory does not depend on the weights); the
  startup time until the page answers, the idle footprint, then ``--clients`` concurrent
  ``gradio_client`` clients each sending ``--requests`` ``/analyze`` calls (a DICOM X-ray and a
  WFDB ECG from the synthetic dataset).

Reported: the main process's peak RSS (``VmHWM`` from ``/proc``: exact), the sampled peak of the
whole process tree's RSS (pages shared between processes counted once per process) and PSS
(shared pages split between processes: the tree's real footprint), per phase.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    Stat,
    add_output_args,
    emit,
    report_header,
    stderr,
    table,
    usable_cores,
)

from apps.loadtest import PeriodicSampler, proc_status_mb

HEADING = "## Memory (`benchmarks/bench_memory.py`)"
PACKAGES = ("psutil", "gradio", "gradio_client", "lightning")
MB = 1024 * 1024


# ------------------------------------------------------------------------------ sampling
@dataclass
class PhasePeak:
    """Peaks of one phase, in MiB."""

    rss: float = 0.0
    pss: float = 0.0
    procs: int = 0
    samples: int = 0


class TreeSampler(PeriodicSampler):
    """Samples RSS and PSS of a process and its descendants on a background thread.

    Attributes:
        phase: name the current samples are filed under (set by the caller).
        peaks: phase -> :class:`PhasePeak`.
        main_hwm: last read ``VmHWM`` of the main process (MiB).
    """

    def __init__(self, pid: int, interval: float = 0.25, pss: bool = True) -> None:
        super().__init__(interval)
        self.pid = pid
        self.pss = pss
        self.phase = "start"
        self.peaks: dict[str, PhasePeak] = {}
        self.main_hwm = 0.0

    def sample(self) -> None:
        """One sample of the tree (processes that vanish meanwhile are skipped)."""
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        rss = pss = 0.0
        alive = 0
        for p in procs:
            try:
                if self.pss:
                    info = p.memory_full_info()
                    pss += getattr(info, "pss", info.rss) / MB
                else:
                    info = p.memory_info()
                rss += info.rss / MB
                alive += 1
            except psutil.Error:
                continue
        hwm = proc_status_mb(self.pid, "VmHWM")
        if hwm is not None:
            self.main_hwm = max(self.main_hwm, hwm)
        peak = self.peaks.setdefault(self.phase, PhasePeak())
        peak.rss = max(peak.rss, rss)
        peak.pss = max(peak.pss, pss)
        peak.procs = max(peak.procs, alive)
        peak.samples += 1


def child_env(threads: int) -> dict[str, str]:
    """Environment of the measured commands: offline, no analytics, ``threads`` threads."""
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "OMP_NUM_THREADS": str(threads),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def stop_process(proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """Terminate a child this script started (by its handle), then kill it if needed."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def tail(path: Path, n: int = 25) -> str:
    """Last ``n`` lines of a log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------ data / bundle
def synthetic_data(root: Path, n: int, seed: int) -> Path:
    """The synthetic dataset at ``root`` (generated unless already there)."""
    if not (root / "synthetic.json").is_file():
        from datamodules.synthetic import generate  # type: ignore[attr-defined]

        stderr(f"generating {n} synthetic studies in {root} (not measured) ...")
        generate(root, n=n, seed=seed)
    return root


def demo_bundle(args: argparse.Namespace, tmp: Path) -> tuple[Path, str]:
    """The bundle to serve and a description of it."""
    if args.bundle is not None:
        return Path(args.bundle), f"bundle {args.bundle}"
    import torch

    from medclip.bundle import export_bundle
    from medclip.config import load_config
    from medclip.model import MedclipModel

    cfg = load_config(args.preset)
    torch.manual_seed(args.seed)
    path = export_bundle(MedclipModel(cfg.model).eval(), tmp / "bundle", config=cfg)
    return path, f"preset `{args.preset}` with random weights (no case index, no prototypes)"


def request_files(root: Path, k: int) -> list[tuple[str, list[str]]]:
    """``k`` (X-ray DICOM, [ECG .hea, .dat]) uploads from the synthetic dataset."""
    from datamodules.sources import load_studies

    out = []
    for s in load_studies("synthetic", root):
        if s.xray_path is None or s.ecg_path is None:
            continue
        stem = Path(s.ecg_path)
        hea, dat = stem.with_suffix(".hea"), stem.with_suffix(".dat")
        if Path(s.xray_path).is_file() and hea.is_file() and dat.is_file():
            out.append((str(s.xray_path), [str(hea), str(dat)]))
        if len(out) >= k:
            break
    if not out:
        raise SystemExit(f"{root}: no X-ray + WFDB ECG pairs found for the demo requests")
    return out


# ------------------------------------------------------------------------------ parts
@dataclass
class PartResult:
    """What one part measured."""

    name: str
    command: str
    peaks: dict[str, PhasePeak]
    main_hwm: float
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run_train(args: argparse.Namespace, tmp: Path) -> PartResult:
    """Peak memory of ``medclip fit`` on the preset for ``--steps`` steps."""
    from medclip.config import load_config

    cfg = load_config(args.preset)
    n = args.synth_n or cfg.data.synth_n
    data = synthetic_data(args.data_root or tmp / "train-data", n, cfg.data.synth_seed)
    cmd = [
        sys.executable,
        "-m",
        "medclip",
        "fit",
        "--config",
        args.preset,
        "--set",
        f"trainer.max_steps={args.steps}",
        "--set",
        f"data.synth_n={n}",
        "--data-root",
        str(data),
        "--out",
        str(tmp / "run"),
        "--no-progress",
    ]
    log = tmp / "fit.log"
    stderr(f"training: {' '.join(cmd[1:])}")
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=child_env(args.threads), cwd=tmp
        )
        sampler = TreeSampler(proc.pid, args.interval, pss=not args.no_pss)
        sampler.phase = "training"
        sampler.start()
        try:
            rc = proc.wait(args.timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            rc = -1
        sampler.stop()
    elapsed = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"medclip fit failed (exit {rc}); last lines:\n{tail(log)}")
    steps = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in log.read_text().splitlines()
            if ln.startswith("optimizer steps:")
        ),
        "?",
    )
    return PartResult(
        f"train `{args.preset}`",
        " ".join(["python", *cmd[1:]]).replace(str(tmp), "$TMP"),
        sampler.peaks,
        sampler.main_hwm,
        {"wall s": elapsed},
        [
            f"{steps} optimizer steps on {n} synthetic studies, batch {cfg.data.batch_size}, "
            f"{cfg.data.num_workers} DataLoader worker(s)"
        ],
    )


def wait_ready(url: str, proc: subprocess.Popen[Any], timeout: float) -> float:
    """Seconds until ``url`` answers 200 (raises if the process exits or time runs out)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the demo exited with code {proc.returncode} during startup")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"the demo did not answer on {url} within {timeout:.0f} s")


def free_port() -> int:
    """An unused local TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_clients(
    url: str, files: Sequence[tuple[str, list[str]]], clients: int, requests: int
) -> tuple[list[float], int, float]:
    """``clients`` threads, each its own gradio_client sending ``requests`` ``/analyze`` calls.

    Returns:
        (request latencies in s, failed requests, wall seconds of the whole load).
    """
    from gradio_client import Client, handle_file

    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def worker(i: int) -> None:
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        for r in range(requests):
            xray, ecg = files[(i * requests + r) % len(files)]
            t0 = time.perf_counter()
            try:
                out = client.predict(
                    handle_file(xray), [handle_file(p) for p in ecg], api_name="/analyze"
                )
                ok = not (isinstance(out, (list, tuple)) and out and out[0])
            except Exception as exc:  # a failed request is counted, not fatal
                stderr(f"client {i}: request failed: {type(exc).__name__}: {exc}")
                ok = False
            with lock:
                latencies.append(time.perf_counter() - t0)
                failures[0] += 0 if ok else 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, failures[0], time.perf_counter() - t0


def run_demo(args: argparse.Namespace, tmp: Path) -> PartResult:
    """Startup, idle and under-load memory of ``medclip demo --bundle``."""
    bundle, origin = demo_bundle(args, tmp)
    data = synthetic_data(args.data_root or tmp / "demo-data", max(8, args.clients), args.seed)
    files = request_files(data, max(1, args.clients * args.requests))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "medclip", "demo", "--bundle", str(bundle), "--port", str(port)]
    log = tmp / "demo.log"
    stderr(f"starting the demo: {' '.join(cmd[1:])}")
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=child_env(args.threads), cwd=tmp
        )
        sampler = TreeSampler(proc.pid, args.interval, pss=not args.no_pss)
        sampler.phase = "startup"
        sampler.start()
        try:
            try:
                startup = wait_ready(url, proc, args.timeout)
            except (RuntimeError, TimeoutError) as exc:
                raise SystemExit(f"{exc}; last lines of the demo log:\n{tail(log)}") from exc
            sampler.phase = "idle"
            time.sleep(max(args.idle_s, 2 * args.interval))
            sampler.phase = f"{args.clients} clients x {args.requests} requests"
            stderr(f"load: {args.clients} concurrent clients x {args.requests} /analyze requests")
            lat, failed, load_s = load_clients(url, files, args.clients, args.requests)
            sampler.sample()
        finally:
            sampler.stop()
            stop_process(proc)
    stat = Stat.of(lat) if lat else None
    notes = [
        f"Model: {origin}",
        f"requests: {len(lat)} in {load_s:.1f} s ({len(lat) / load_s:.2f}/s), {failed} failed; "
        f"latency s median (min-max): {stat.fmt('.2f') if stat else 'n/a'}",
    ]
    return PartResult(
        "demo",
        " ".join(["python", *cmd[1:]]).replace(str(tmp), "$TMP"),
        sampler.peaks,
        sampler.main_hwm,
        {"startup s (until the page answers)": startup},
        notes,
    )


# ------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--what", choices=("train", "demo", "both"), default="both")
    p.add_argument("--preset", default="small", help="config preset (default small)")
    p.add_argument("--steps", type=int, default=60, help="training steps (default 60)")
    p.add_argument("--synth-n", type=int, default=None, help="synthetic studies (preset's)")
    p.add_argument("--data-root", type=Path, default=None, help="reuse a synthetic dataset")
    p.add_argument("--bundle", type=Path, default=None, help="bundle to serve (default: preset)")
    p.add_argument("--clients", type=int, default=4, help="concurrent demo clients (4)")
    p.add_argument("--requests", type=int, default=5, help="requests per client (5)")
    p.add_argument("--idle-s", type=float, default=5.0, help="idle sampling after startup")
    p.add_argument("--interval", type=float, default=0.25, help="sampling period in s")
    p.add_argument("--no-pss", action="store_true", help="sample RSS only (cheaper)")
    p.add_argument("--threads", type=int, default=usable_cores(), help="OMP/torch threads")
    p.add_argument("--timeout", type=float, default=1800.0, help="per command, seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick",
        action="store_true",
        help="4 steps on 40 studies, 2 clients x 2 requests (checks that it runs)",
    )
    add_output_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.synth_n, args.clients, args.requests, args.idle_s = 4, 40, 2, 2, 1.0
    if min(args.steps, args.clients, args.requests, args.threads) < 1:
        p.error("--steps, --clients, --requests and --threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parts: list[Callable[[argparse.Namespace, Path], PartResult]] = []
    if args.what in ("train", "both"):
        parts.append(run_train)
    if args.what in ("demo", "both"):
        parts.append(run_demo)
    results = []
    with tempfile.TemporaryDirectory(prefix="medclip-bench-mem-") as tmp_text:
        for part in parts:
            tmp = Path(tmp_text) / part.__name__
            tmp.mkdir()
            results.append(part(args, tmp))
    rows = []
    for r in results:
        for phase, pk in r.peaks.items():
            rows.append(
                [
                    r.name,
                    phase,
                    f"{pk.rss:,.0f}",
                    f"{pk.pss:,.0f}" if not args.no_pss else "-",
                    str(pk.procs),
                    str(pk.samples),
                ]
            )
    lines = [
        report_header(
            f"Memory, preset `{args.preset}`",
            PACKAGES,
            [
                f"sampled every {args.interval} s; child processes get OMP_NUM_THREADS="
                f"{args.threads}; MiB = 2^20 bytes"
            ],
        ),
        table(
            ["part", "phase", "peak tree RSS MiB", "peak tree PSS MiB", "processes", "samples"],
            rows,
        ),
        "",
    ]
    for r in results:
        extra = "; ".join(f"{k} {v:.1f}" for k, v in r.seconds.items())
        lines.append(
            f"- {r.name}: `{r.command}`; main process peak RSS (VmHWM) {r.main_hwm:,.0f} MiB; "
            f"{extra}; " + "; ".join(r.notes)
        )
    lines.append("")
    emit(args, HEADING, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
