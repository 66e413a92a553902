"""The demo under load (:mod:`apps.loadtest`): 8 parallel clients, no errors, bounded memory.

The same machinery as ``benchmarks/bench_demo_load.py``, against the session's in-process demo
server (tiny bundle, 1 MB upload limit) for a few seconds; memory is the RSS of this process,
which holds the server and the clients. Nothing is timed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from apps.loadtest import LoadRequest, RssSampler, run_load, tree_rss_mb

pytest.importorskip("gradio_client")

CLIENTS = 8
DURATION_S = 8.0
#: Generous: the bound of the benchmark (300 MiB) plus room for the clients in this process.
MAX_GROWTH_MB = 400.0


def test_expected_answers_and_problems() -> None:
    ok = LoadRequest("search", "/search", ("query", "ECG"))
    assert ok.problem(("", [], {})) == ""
    assert "error panel: **Could not" in ok.problem(("**Could not analyse**", None))
    refused = LoadRequest("exe", "/analyze", (Path("x.exe"), None), expect_error="is not accepted")
    assert refused.problem(["X-ray: file type .exe of x.exe is not accepted", None]) == ""
    assert "expected 'is not accepted'" in refused.problem(["", None])
    assert "unexpected outputs" in ok.problem(None)
    with pytest.raises(ValueError):
        LoadRequest("bad", "analyze", ())
    with pytest.raises(ValueError):
        run_load("http://127.0.0.1:1/", [ok], clients=0)


def test_rss_sampler_reads_this_process() -> None:
    mb = tree_rss_mb(os.getpid())
    assert mb is not None and mb > 10
    with RssSampler(os.getpid(), interval_s=0.05) as rss:
        rss.sample()
    assert len(rss.samples) >= 2 and all(m > 10 for _, m in rss.samples)
    assert rss.since(1e9) == []
    assert tree_rss_mb(2**22 + 12345) is None  # no such process


def test_eight_clients_get_no_errors_and_memory_stays_bounded(
    demo_url: str, real_xray: Path, real_ecg_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    exe = tmp_path / "setup.exe"
    exe.write_bytes(b"MZ" + b"\0" * 1022)
    big = tmp_path / "huge.png"
    big.write_bytes(b"\0" * int(1.5 * 1024 * 1024))  # over the app's 1 MB, under Gradio's 2 MB
    requests = [
        LoadRequest("x-ray + ECG", "/analyze", (real_xray, list(real_ecg_pair))),
        LoadRequest("search", "/search", ("ECGs with atrial fibrillation", "ECG")),
        LoadRequest("exe", "/analyze", (exe, None), expect_error="is not accepted"),
        LoadRequest("too big", "/analyze", (big, None), expect_error="over the limit of 1 MB"),
    ]
    with RssSampler(os.getpid(), interval_s=0.5) as rss:
        result: Any = run_load(
            demo_url, requests, clients=CLIENTS, duration_s=DURATION_S, rss=rss, settle_s=0.5
        )
    assert result.errors == 0, result.problems()
    assert result.requests >= CLIENTS  # every client got through at least one counted request
    assert set(result.names()) == {r.name for r in requests}
    median, p95, n = result.latency_ms()
    assert n == result.requests and 0 < median <= p95
    assert result.rss_baseline_mb > 0 and result.rss_final_mb > 0
    assert result.rss_peak_mb >= result.rss_baseline_mb
    assert result.rss_growth_mb < MAX_GROWTH_MB, (result.rss_baseline_mb, result.rss_peak_mb)
