"""Helpers shared by the benchmark scripts: machine description, interleaved timing, Markdown.

Every script prints one Markdown block (heading with a UTC time stamp, the exact command, the
machine, medians with min/max over repeated interleaved runs, ratios measured in the same run)
and appends it under its own ``## ...`` section of ``BENCHMARKS.md`` (append only; ``--out`` to
write elsewhere, ``--no-append`` to only print).

Scripts import this module as ``from _common import ...``: running ``python benchmarks/x.py``
puts ``benchmarks/`` first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "BENCHMARKS.md"

if str(REPO) not in sys.path:  # run from anywhere without an editable install
    sys.path.insert(1, str(REPO))


# ------------------------------------------------------------------------------ machine
def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` (else what :mod:`platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity), else the logical core count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def package_version(name: str) -> str:
    """Installed version of a distribution, or ``"not installed"``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(packages: Iterable[str] = ()) -> dict[str, str]:
    """CPU, cores, load, torch version and thread settings, Python and ``packages`` versions."""
    info = {
        "CPU": cpu_model(),
        "cores": f"{os.cpu_count()} logical, {usable_cores()} usable",
    }
    if hasattr(os, "getloadavg"):
        info["load avg (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        import torch

        info["torch"] = str(torch.__version__)
        info["torch threads"] = (
            f"{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op"
        )
        if torch.cuda.is_available():
            info["GPU"] = gpu_description(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        info["torch"] = "not installed"
    info["Python"] = platform.python_version()
    info["OS"] = f"{platform.system()} {platform.release()}"
    for name in packages:
        info[name] = package_version(name)
    return info


def gpu_description(index: int = 0) -> str:
    """Name, memory, compute capability, CUDA version and bf16 support of CUDA device ``index``."""
    import torch

    props = torch.cuda.get_device_properties(index)
    bf16 = "yes" if torch.cuda.is_bf16_supported() else "no"
    return (
        f"{torch.cuda.get_device_name(index)} ({props.total_memory / 2**30:.0f} GiB, compute "
        f"capability {props.major}.{props.minor}, {torch.cuda.device_count()} visible), CUDA "
        f"{torch.version.cuda}, bf16 {bf16}"
    )


def device_description(device: str) -> str:
    """One line naming the device a benchmark ran on (``"cpu"`` or ``"cuda[:i]"``)."""
    if not device.startswith("cuda"):
        return f"{device} ({cpu_model()}, {usable_cores()} usable cores)"
    import torch

    index = torch.device(device).index or 0
    tf32 = "on" if torch.backends.cuda.matmul.allow_tf32 else "off"
    return f"cuda:{index}: {gpu_description(index)}, TF32 matmul {tf32}"


def machine_line(packages: Iterable[str] = ()) -> str:
    """:func:`machine_info` as one ``key value; ...`` line."""
    return "; ".join(f"{k} {v}" for k, v in machine_info(packages).items())


def uptime_line() -> str:
    """``uptime`` output (machine load), else the load average, else ``"unknown"``."""
    import subprocess

    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        if hasattr(os, "getloadavg"):
            return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
        return "unknown"


def command_line() -> str:
    """The command that started this process (interpreter path relative to the cwd if inside)."""
    exe = Path(sys.executable)
    try:
        exe_text = str(exe.relative_to(Path.cwd()))
    except ValueError:
        exe_text = str(exe)
    return shlex.join([exe_text, *sys.argv])


def timestamp() -> str:
    """Current UTC time, minutes resolution."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def set_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads in torch (and as the OpenMP default for child processes)."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ statistics
@dataclass(frozen=True)
class Stat:
    """Median, min and max of repeated measurements."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        """Summary of a non-empty sequence."""
        if not values:
            raise ValueError("no measurements")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def fmt(self, spec: str = ".2f") -> str:
        """``median (min-max)``."""
        return f"{self.median:{spec}} ({self.min:{spec}}-{self.max:{spec}})"


def paired_ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """Per-repeat ratios ``num[i] / den[i]`` (runs of one repeat ran back to back)."""
    return [a / b for a, b in zip(num, den) if b]


def interleave(
    runs: Mapping[str, Callable[[], float]],
    repeats: int,
    *,
    warmup: int = 1,
    rotate: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:
    """Call every run once per repeat, alternating between runs.

    Args:
        runs: name -> callable returning one measurement (e.g. samples/s or seconds).
        repeats: measurements kept per run.
        warmup: untimed rounds over all runs first (allocator, first-call overheads).
        rotate: start each repeat with the next run, so none always goes first.
        log: progress messages (e.g. to stderr).

    Returns:
        name -> ``repeats`` measurements, in repeat order.
    """
    names = list(runs)
    for w in range(warmup):
        for name in names:
            if log:
                log(f"warm-up {w + 1}/{warmup}: {name}")
            runs[name]()
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names) if rotate else 0
        order = names[k:] + names[:k]
        for name in order:
            value = runs[name]()
            out[name].append(value)
            if log:
                log(f"repeat {r + 1}/{repeats}: {name} = {value:.4g}")
    return out


def timed(fn: Callable[[], object], n: int = 1) -> float:
    """Seconds per call of ``fn`` over ``n`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def stderr(msg: str) -> None:
    """Progress message on stderr (stdout carries only the report)."""
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ markdown
def table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> str:
    """A Markdown table; ``align`` is one of ``l``/``r`` per column (default: first l, rest r)."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(sep) + " |",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    return "\n".join(lines)


def report_header(title: str, packages: Iterable[str] = (), notes: Iterable[str] = ()) -> str:
    """``### title, time`` then the command, the machine and ``notes`` as bullets."""
    lines = [
        f"### {title}, {timestamp()}",
        "",
        f"- Command: `{command_line()}`",
        f"- Machine: {machine_line(packages)}",
        *(f"- {n}" for n in notes),
        "",
    ]
    return "\n".join(lines)


def append_section(path: Path, heading: str, block: str) -> None:
    """Append ``block`` to ``path`` under ``heading`` (added once); never rewrites the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    with open(path, "a", encoding="utf-8") as fh:
        if not existing:
            fh.write("# Benchmarks\n")
        elif not existing.endswith("\n"):
            fh.write("\n")
        if heading not in existing:
            fh.write(f"\n{heading}\n")
        fh.write("\n" + block.strip("\n") + "\n")


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """``--out PATH`` (alias ``--output``) and ``--no-append``."""
    parser.add_argument(
        "--out",
        "--output",
        dest="out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"Markdown file the report is appended to (default {DEFAULT_OUT.name} in the repo)",
    )
    parser.add_argument("--no-append", action="store_true", help="only print the report")


def add_synthetic_run_args(
    parser: argparse.ArgumentParser, *, default_n: int, work_dir: str, set_example: str
) -> None:
    """The options of a bench that trains a preset on a seeded synthetic dataset: ``--preset``,
    ``--n``, ``--seed``, repeatable ``--set KEY=VALUE``, ``--work-dir`` (``runs/<work_dir>``)
    and ``--run-name``."""
    parser.add_argument(
        "--preset", default="small", help="preset name or YAML path (default small)"
    )
    parser.add_argument(
        "--n", type=int, default=default_n, help=f"synthetic patients (default {default_n})"
    )
    parser.add_argument("--seed", type=int, default=0, help="data and training seed (default 0)")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"config override, e.g. {set_example} (repeatable)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=REPO / "runs" / work_dir,
        help=f"data and run folders (default runs/{work_dir})",
    )
    parser.add_argument("--run-name", default=None, help="run folder name (default: a time stamp)")


def fmt_num(v: float | None, spec: str = ".3f") -> str:
    """``format(v, spec)``, or ``n/a`` for None and NaN."""
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def emit(args: argparse.Namespace, heading: str, block: str) -> None:
    """Print the report and append it unless ``--no-append``."""
    print(block, flush=True)
    if not getattr(args, "no_append", False):
        append_section(args.out, heading, block)
        stderr(f"appended to {args.out}")
