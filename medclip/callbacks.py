"""Training callbacks that measure the run itself (not the model)."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class DataWaitMonitor(Callback):
    """How much of the training loop's time goes to waiting for the next batch.

    Between the end of one training batch and the start of the next, Lightning's loop fetches
    the next batch from the DataLoader (and runs the loop's own bookkeeping: logging, step
    callbacks). That gap, summed over steps and divided by the whole time from the first
    counted batch end to the last, is an upper bound on the share of time spent waiting on
    data. The first ``warmup_steps`` gaps (worker start-up, first cache page-ins) and the gaps
    that contain a validation run are left out and reported separately.

    Args:
        warmup_steps: batches at the start of each epoch not counted.
        log_every_n_steps: also log ``perf/data_wait_frac`` every N counted steps (0: never).
    """

    def __init__(self, warmup_steps: int = 2, log_every_n_steps: int = 0) -> None:
        super().__init__()
        self.warmup_steps = int(warmup_steps)
        self.log_every_n_steps = int(log_every_n_steps)
        self.wait_s = 0.0
        self.total_s = 0.0
        self.steps = 0
        self.skipped = 0
        self._last_end: float | None = None
        self._gap: float | None = None
        self._in_epoch = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_end = None
        self._in_epoch = 0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_end = None  # a validation run is not a data wait

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        self._gap = None if self._last_end is None else now - self._last_end
        self._in_epoch += 1

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.perf_counter()
        if (
            self._gap is not None
            and self._last_end is not None
            and self._in_epoch > (self.warmup_steps)
        ):
            self.wait_s += self._gap
            self.total_s += now - self._last_end
            self.steps += 1
            if self.log_every_n_steps and self.steps % self.log_every_n_steps == 0:
                pl_module.log("perf/data_wait_frac", self.fraction, on_step=True, on_epoch=False)
        else:
            self.skipped += 1
        self._last_end = now

    @property
    def fraction(self) -> float:
        """Waiting time / loop time over the counted steps (0.0 before any)."""
        return self.wait_s / self.total_s if self.total_s > 0 else 0.0

    def summary(self) -> dict[str, float]:
        """Counted steps, wait and loop seconds, the fraction and the mean step time."""
        return {
            "steps": float(self.steps),
            "skipped_steps": float(self.skipped),
            "wait_s": self.wait_s,
            "loop_s": self.total_s,
            "fraction": self.fraction,
            "step_ms": 1000.0 * self.total_s / self.steps if self.steps else 0.0,
        }
