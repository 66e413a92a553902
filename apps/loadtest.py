"""Load test of a running demo: parallel ``gradio_client`` clients and the server's memory.

    requests = [LoadRequest("x-ray + ECG", "/analyze", (Path("cxr.jpeg"), [hea, mat])), ...]
    with RssSampler(server_pid) as rss:
        result = run_load("http://127.0.0.1:7860/", requests, clients=8, duration_s=60, rss=rss)
    result.errors, result.latency_ms("x-ray + ECG"), result.rss_growth_mb

Each client is its own :class:`gradio_client.Client` on its own thread and loops over the
requests (each client starts at a different one) until the time is up. Every client first sends
each request once (warm-up, not counted); the memory baseline is taken when all clients are
through it. A request counts as an error when it raises (refused by the server, timed out, ...)
or when its error panel (the first output) does not say what was expected: empty for a valid
input, a given phrase for a refused one.

Memory is the resident set size (RSS) of the server process and its children, sampled on a
background thread from psutil (``/proc/<pid>/status`` ``VmRSS`` when psutil is absent).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

log = logging.getLogger(__name__)

_MB = 1024 * 1024


# ----------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class LoadRequest:
    """One API call the clients repeat.

    Attributes:
        name: short name in reports (e.g. ``"x-ray + ECG"``).
        api_name: the endpoint, e.g. ``"/analyze"``.
        args: its inputs; a :class:`~pathlib.Path` (also inside a list) is uploaded as a file.
        expect_error: a phrase the error panel (first output) must contain; empty: the panel must
            be empty (a valid request).
    """

    name: str
    api_name: str
    args: tuple[Any, ...]
    expect_error: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.api_name.startswith("/"):
            raise ValueError(f"bad request {self.name!r} -> {self.api_name!r}")

    def problem(self, outputs: Any) -> str:
        """Why ``outputs`` are not what this request expects ("" when they are)."""
        panel = outputs[0] if isinstance(outputs, (list, tuple)) and outputs else outputs
        if not isinstance(panel, str):
            return f"unexpected outputs ({type(outputs).__name__})"
        if self.expect_error:
            found = self.expect_error in panel
            return "" if found else f"expected {self.expect_error!r}, got {panel!r}"
        return f"error panel: {panel}" if panel else ""


def _upload_args(args: Sequence[Any]) -> list[Any]:
    """Paths -> ``handle_file`` uploads (lists of paths too); everything else as it is."""
    from gradio_client import handle_file

    def conv(a: Any) -> Any:
        if isinstance(a, Path):
            return handle_file(str(a))
        if isinstance(a, list):
            return [conv(x) for x in a]
        return a

    return [conv(a) for a in args]


# ----------------------------------------------------------------------------- memory
def tree_rss_mb(pid: int) -> float | None:
    """RSS of process ``pid`` plus its descendants in MiB (None once it is gone).

    Pages shared between processes count once per process (an upper bound).
    """
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is in the dev/bench extras
        return proc_status_mb(pid)
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for p in procs:
        try:
            total += p.memory_info().rss / _MB
        except psutil.Error:  # a child that exited meanwhile
            continue
    return total


def proc_status_mb(pid: int, key: str = "VmRSS") -> float | None:
    """A memory line of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``, ...) in MiB; None if
    unavailable (no such process, not Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


_S = TypeVar("_S", bound="PeriodicSampler")


class PeriodicSampler:
    """Calls :meth:`sample` every ``interval_s`` seconds on a daemon thread until :meth:`stop`.

    Subclasses implement :meth:`sample`; :meth:`stop` takes one last sample.
    """

    def __init__(self, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> object:
        """Take one sample now."""
        raise NotImplementedError

    def start(self: _S) -> _S:
        """Start sampling."""
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take a last sample and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)


class RssSampler(PeriodicSampler):
    """Samples :func:`tree_rss_mb` of a process every ``interval_s`` on a daemon thread.

    Use as a context manager (or :meth:`start` / :meth:`stop`); :attr:`samples` holds
    ``(seconds since start, MiB)`` pairs.
    """

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        super().__init__(interval_s)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._t0 = time.perf_counter()
        self._lock = threading.Lock()

    def sample(self) -> float | None:
        """Take one sample now (also recorded); None when the process is gone."""
        mb = tree_rss_mb(self.pid)
        if mb is not None:
            with self._lock:
                self.samples.append((time.perf_counter() - self._t0, mb))
        return mb

    def since(self, t_s: float) -> list[float]:
        """MiB of the samples taken at or after ``t_s`` seconds."""
        return [mb for _, mb in self.trace(t_s)]

    def trace(self, t_s: float = 0.0) -> list[tuple[float, float]]:
        """``(seconds after t_s, MiB)`` of the samples taken at or after ``t_s`` seconds."""
        with self._lock:
            return [(t - t_s, mb) for t, mb in self.samples if t >= t_s]

    def now_s(self) -> float:
        """Seconds since the sampler was created (the samples' time axis)."""
        return time.perf_counter() - self._t0

    def __enter__(self) -> RssSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------- load
@dataclass
class RequestRecord:
    """One counted request: its name, latency (s) and problem ("" when it went as expected)."""

    name: str
    latency_s: float
    problem: str = ""


@dataclass
class LoadResult:
    """What :func:`run_load` saw.

    Attributes:
        clients: parallel clients.
        duration_s: wall seconds of the counted load (after the warm-up).
        records: every counted request.
        warmup_errors: problems during the warm-up round (a client that could not connect, a
            request that failed); they count as errors.
        rss_baseline_mb: server RSS once every client finished its warm-up (MiB; NaN unsampled).
        rss_peak_mb: highest RSS from the baseline to the end of the load.
        rss_final_mb: RSS after the load, once ``settle_s`` passed.
        rss_trace: ``(seconds since the load started, MiB)`` samples from the baseline on.
    """

    clients: int
    duration_s: float
    records: list[RequestRecord] = field(default_factory=list)
    warmup_errors: list[str] = field(default_factory=list)
    rss_baseline_mb: float = float("nan")
    rss_peak_mb: float = float("nan")
    rss_final_mb: float = float("nan")
    rss_trace: list[tuple[float, float]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """Counted requests."""
        return len(self.records)

    @property
    def errors(self) -> int:
        """Requests that raised or gave an unexpected answer (warm-up problems included)."""
        return len(self.warmup_errors) + sum(1 for r in self.records if r.problem)

    def problems(self, limit: int = 5) -> list[str]:
        """Up to ``limit`` distinct ``name: problem`` texts (warm-up ones first)."""
        seen = dict.fromkeys(
            [*self.warmup_errors, *(f"{r.name}: {r.problem}" for r in self.records if r.problem)]
        )
        return list(seen)[:limit]

    @property
    def rss_growth_mb(self) -> float:
        """Peak minus baseline RSS during the load (MiB): what the load added at worst."""
        return self.rss_peak_mb - self.rss_baseline_mb

    @property
    def rss_retained_mb(self) -> float:
        """Final minus baseline RSS (MiB): what stayed after the load."""
        return self.rss_final_mb - self.rss_baseline_mb

    def rss_every(self, step_s: float) -> list[float]:
        """The highest RSS in each ``step_s`` window of :attr:`rss_trace` (MiB), in order."""
        out: dict[int, float] = {}
        for t, mb in self.rss_trace:
            k = int(t // step_s)
            out[k] = max(out.get(k, mb), mb)
        return [out[k] for k in sorted(out)]

    def names(self) -> list[str]:
        """Request names in first-seen order."""
        return list(dict.fromkeys(r.name for r in self.records))

    def latency_ms(self, name: str | None = None) -> tuple[float, float, int]:
        """``(median, p95, count)`` latency in ms of one request type (None: all requests)."""
        vals = [r.latency_s * 1000 for r in self.records if name is None or r.name == name]
        if not vals:
            return float("nan"), float("nan"), 0
        return float(np.median(vals)), float(np.percentile(vals, 95)), len(vals)


def run_load(
    url: str,
    requests: Sequence[LoadRequest],
    *,
    clients: int = 8,
    duration_s: float = 60.0,
    rss: RssSampler | None = None,
    auth: tuple[str, str] | None = None,
    warmup_rounds: int = 1,
    settle_s: float = 2.0,
) -> LoadResult:
    """``clients`` parallel clients send ``requests`` in a loop for ``duration_s`` seconds.

    Args:
        url: the demo's address, e.g. ``http://127.0.0.1:7860/``.
        requests: what each client sends, round-robin (client ``i`` starts at request ``i``).
        clients: parallel clients (one thread and one ``gradio_client.Client`` each).
        duration_s: seconds of counted load after the warm-up; a request in flight at the end
            finishes and counts.
        rss: a started sampler of the server process (None: no memory figures).
        auth: ``(user, password)`` for a demo with a login.
        warmup_rounds: uncounted rounds over ``requests`` per client before the baseline.
        settle_s: wait after the load before the final RSS sample.

    Returns:
        The counted requests, their problems and the RSS baseline / peak / final.
    """
    if clients < 1 or duration_s <= 0 or warmup_rounds < 0 or not requests:
        raise ValueError("need clients >= 1, duration_s > 0, warmup_rounds >= 0 and requests")
    from gradio_client import Client

    result = LoadResult(clients=clients, duration_s=0.0)
    lock = threading.Lock()
    warmed = threading.Barrier(clients + 1)
    start = threading.Event()
    deadline = [0.0]

    def call(client: Any, req: LoadRequest) -> tuple[float, str]:
        t0 = time.perf_counter()
        try:
            out = client.predict(*_upload_args(req.args), api_name=req.api_name)
            problem = req.problem(out)
        except Exception as exc:  # any failure of a request is counted, never fatal
            problem = f"{type(exc).__name__}: {exc}"[:300]
        return time.perf_counter() - t0, problem

    def worker(i: int) -> None:
        client: Any = None
        try:
            client = Client(
                url, auth=auth, verbose=False, download_files=False, analytics_enabled=False
            )
            for req in list(requests) * warmup_rounds:
                _, problem = call(client, req)
                if problem:
                    with lock:
                        result.warmup_errors.append(f"{req.name} (warm-up): {problem}")
        except Exception as exc:
            with lock:
                result.warmup_errors.append(f"client {i}: {type(exc).__name__}: {exc}"[:300])
        finally:
            warmed.wait()
        start.wait()
        if client is None:
            return
        try:
            k = i
            while time.perf_counter() < deadline[0]:
                req = requests[k % len(requests)]
                k += 1
                latency, problem = call(client, req)
                with lock:
                    result.records.append(RequestRecord(req.name, latency, problem))
        finally:
            client.close()

    threads = [
        threading.Thread(target=worker, args=(i,), name=f"load-client-{i}", daemon=True)
        for i in range(clients)
    ]
    for t in threads:
        t.start()
    warmed.wait()
    t_base = 0.0
    if rss is not None:
        t_base = rss.now_s()
        base = rss.sample()
        result.rss_baseline_mb = base if base is not None else float("nan")
    t0 = time.perf_counter()
    deadline[0] = t0 + duration_s
    start.set()
    for t in threads:
        t.join()
    result.duration_s = time.perf_counter() - t0
    if rss is not None:
        rss.sample()
        during = rss.since(t_base)
        result.rss_peak_mb = max(during) if during else float("nan")
        time.sleep(settle_s)
        final = rss.sample()
        result.rss_final_mb = final if final is not None else float("nan")
        result.rss_trace = rss.trace(t_base)
    log.info("load: %d requests, %d errors", result.requests, result.errors)
    return result


__all__ = [
    "LoadRequest",
    "LoadResult",
    "RequestRecord",
    "RssSampler",
    "run_load",
    "tree_rss_mb",
]
