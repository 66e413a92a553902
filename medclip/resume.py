"""Exact resume after a crash: random-number state in checkpoints and a per-step loss log.

:class:`RngState` stores the torch (CPU and CUDA), NumPy and :mod:`random` generator states in
every checkpoint and puts them back when training resumes, so dropout / DropKey draws and random
augmentations after a resume are those of an uninterrupted run. Together with the resumable
training loaders of :mod:`datamodules.resumable` and the restored optimizer and schedule, a run
killed at any step and resumed from its last checkpoint repeats the uninterrupted run's losses
exactly in deterministic mode (same hardware and thread count).

:class:`StepLossLog` appends one CSV line per optimizer step (``step,epoch,loss,start_step``)
to ``OUT/logs/steps.csv``, flushed at once so it survives a ``SIGKILL``; ``start_step`` is the
step the process started from (0, or the checkpoint's step after a resume), so the lines a
resumed process re-did are told apart from the killed process's.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import IO, Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

STEP_LOG_HEADER = "step,epoch,loss,start_step"


def collect_rng_states() -> dict[str, Any]:
    """Current generator states as tensors and plain containers (``weights_only``-loadable)."""
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)  # legacy=True: ("MT19937", keys, pos, has_gauss, gauss)
    keys, pos, has_gauss, gauss = np_state[1:]
    py_version, py_state, py_gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(gauss),
        },
        "python": {"version": int(py_version), "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Put back states from :func:`collect_rng_states` (missing entries are left alone)."""
    if "torch" in states:
        torch.set_rng_state(states["torch"].cpu())
    cuda = states.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    npy = states.get("numpy")
    if npy:
        keys = npy["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state(
            ("MT19937", keys, int(npy["pos"]), int(npy["has_gauss"]), float(npy["cached_gaussian"]))
        )
    py = states.get("python")
    if py:
        random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss"]))


class RngState(Callback):
    """Saves the generator states in each checkpoint; restores them when training (re)starts.

    The states are those at the moment the checkpoint is written (the end of an optimizer
    step); they are put back in ``on_train_start``, after model set-up and the sanity check,
    right before the first batch of the resumed run is fetched.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        """Generator states now (called while a checkpoint is being written)."""
        return {"rng": collect_rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the states until training starts."""
        self._pending = state_dict.get("rng")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Restore the checkpoint's generator states (a resume only)."""
        if self._pending:
            set_rng_states(self._pending)
            log.info("restored the random generator states of the checkpoint")
        self._pending = None


def _drop_partial_line(path: Path) -> None:
    """Cut a last line without its newline (a process killed while writing it)."""
    if not path.is_file():
        return
    with path.open("r+b") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)


class StepLossLog(Callback):
    """Appends ``step,epoch,loss,start_step`` after every optimizer step (rank 0 only).

    Each line is flushed to the operating system at once (it survives the process being
    killed) and the file is fsynced whenever a checkpoint is written. The loss is the value
    the module returned (or stored as ``last_train_loss``), written with full float precision.

    Args:
        path: the CSV file; created with a header, appended to on resume.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh: IO[str] | None = None
        self._last_step = -1
        self._start_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Open the file for appending; note the step this process starts from."""
        self._start_step = self._last_step = int(trainer.global_step)
        if not trainer.is_global_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_partial_line(self.path)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self._fh = self.path.open("a", encoding="utf-8")
        if new:
            self._fh.write(STEP_LOG_HEADER + "\n")
            self._fh.flush()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        """One line per optimizer step (micro-batches of an accumulation write none)."""
        step = int(trainer.global_step)
        if self._fh is None or step == self._last_step:
            return
        self._last_step = step
        loss = getattr(pl_module, "last_train_loss", None)
        if loss is None and isinstance(outputs, dict):
            loss = outputs.get("loss")
        elif loss is None and isinstance(outputs, torch.Tensor):
            loss = outputs
        value = (
            float(loss.detach().float().cpu()) if isinstance(loss, torch.Tensor) else float("nan")
        )
        self._fh.write(f"{step},{trainer.current_epoch},{value!r},{self._start_step}\n")
        self._fh.flush()

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Make the log durable up to the checkpoint being written."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Close the file."""
        self._close()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Close the file."""
        self._close()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Close the file."""
        self._close()
