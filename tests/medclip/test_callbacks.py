"""DataWaitMonitor accounting, driven by a fake clock (no timing in the test)."""

from __future__ import annotations

import itertools

import pytest

from medclip import callbacks
from medclip.callbacks import DataWaitMonitor


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run_epoch(mon: DataWaitMonitor, clock: FakeClock, waits: list[float], step_s: float) -> None:
    mon.on_train_epoch_start(None, None)  # type: ignore[arg-type]
    for i, wait in enumerate(waits):
        clock.now += wait
        mon.on_train_batch_start(None, None, None, i)  # type: ignore[arg-type]
        clock.now += step_s
        mon.on_train_batch_end(None, None, None, None, i)  # type: ignore[arg-type]


def test_fraction_counts_gaps_between_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    mon = DataWaitMonitor(warmup_steps=2)
    # first batch (no previous end) and the next warm-up gap are not counted
    _run_epoch(mon, clock, [5.0, 4.0, 0.1, 0.1, 0.3], step_s=0.9)
    s = mon.summary()
    assert s["steps"] == 3 and s["skipped_steps"] == 2
    assert s["wait_s"] == pytest.approx(0.5)
    assert s["loop_s"] == pytest.approx(0.5 + 3 * 0.9)
    assert mon.fraction == pytest.approx(0.5 / 3.2)
    assert s["step_ms"] == pytest.approx(3.2 / 3 * 1000)


def test_validation_and_new_epoch_gaps_are_not_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    mon = DataWaitMonitor(warmup_steps=0)
    _run_epoch(mon, clock, [0.0, 0.2, 0.2], step_s=1.0)
    mon.on_validation_start(None, None)  # type: ignore[arg-type]
    clock.now += 100.0  # a long validation run
    _run_epoch(mon, clock, [0.2, 0.2], step_s=1.0)
    # epoch 1: 2 counted gaps; epoch 2: the first batch has no previous end, 1 counted gap
    assert mon.steps == 3
    assert mon.wait_s == pytest.approx(0.6)
    assert mon.fraction == pytest.approx(0.6 / 3.6)


def test_empty_monitor_reports_zero() -> None:
    mon = DataWaitMonitor()
    assert mon.fraction == 0.0
    assert mon.summary()["step_ms"] == 0.0
    assert list(itertools.islice(mon.summary(), 1)) == ["steps"]
