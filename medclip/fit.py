"""Programmatic contrastive pre-training: ``fit(cfg) -> FitResult``.

Builds the model, the data (generating the synthetic dataset when asked for and absent), a
Lightning ``Trainer`` with CSV + TensorBoard loggers, progress bars and atomic checkpoints, and
runs it. Preprocessing follows the model: the ECG rate/length and the CXR size/normalisation
given to the datamodule come from the towers' ``input_spec``.

Output folder layout::

    OUT/config.yaml            the resolved config
    OUT/synthetic-data/        generated data (synthetic dataset without data.root)
    OUT/checkpoints/last.ckpt  written when training stops (also mid-epoch), resumable
    OUT/checkpoints/best.ckpt  lowest val/loss
    OUT/logs/version_N/metrics.csv   CSV logger (one version per run or resume)
    OUT/logs/steps.csv         step,epoch,loss,start_step per optimizer step (all runs, flushed)
    OUT/tb/version_N/          TensorBoard events
    OUT/metrics.json           final metrics and parameter counts
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint

from medclip.bundle import preprocessing_configs
from medclip.callbacks import DataWaitMonitor
from medclip.config import MedclipConfig
from medclip.errors import MedclipError, OutputWriteError
from medclip.model import MedclipModel
from medclip.resume import RngState, StepLossLog
from medclip.safe_load import atomic_torch_save, safe_torch_load
from medclip.training import ContrastiveModule

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What :func:`fit` produced.

    Attributes:
        out_dir: the run folder.
        last_checkpoint: resumable checkpoint of the final state.
        best_checkpoint: lowest-val/loss checkpoint, if validation ran.
        global_step: optimizer steps taken (including those before a resume).
        metrics: final logged metrics (floats).
        params: parameter counts (total, trainable, text LoRA share).
        data_wait: share of the training loop spent between batches (fetching data), from
            :class:`~medclip.callbacks.DataWaitMonitor`.
    """

    out_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    global_step: int
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, float] = field(default_factory=dict)
    data_wait: dict[str, float] = field(default_factory=dict)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temp file in the same folder, then ``os.replace``d; loaded with
    ``torch.load(weights_only=True)`` only (unsafe files raise ``UnsafeCheckpointError``)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Atomic ``torch.save``."""
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Weights-only load whatever the caller asked for."""
        ckpt: dict[str, Any] = safe_torch_load(
            path, map_location=map_location if map_location is not None else "cpu"
        )
        return ckpt


class LastCheckpoint(Checkpoint):
    """Keeps ``last.ckpt`` resumable: written every ``every_n_steps`` optimizer steps, at each
    epoch end, and on the batch where training stops (``max_steps``, ``max_time``, early stop),
    so a mid-epoch stop resumes mid-epoch with the same step, optimizer and schedule state.

    A :class:`Checkpoint` subclass, so Lightning runs it after the timer callback and adds no
    default checkpoint callback of its own.
    """

    def __init__(self, path: Path, every_n_steps: int = 0) -> None:
        self.path = path
        self.every_n_steps = int(every_n_steps)
        self._saved_step = -1

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        step = trainer.global_step
        if step == self._saved_step or trainer.sanity_checking:
            return
        stopping = trainer.should_stop or 0 < trainer.max_steps <= step
        periodic = self.every_n_steps > 0 and step % self.every_n_steps == 0
        if stopping or periodic:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a stop by max_steps also ends the epoch; keep the mid-epoch state saved above
        if trainer.global_step != self._saved_step:
            self._save(trainer)


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """Map ``auto`` / bf16 requests onto what the hardware supports.

    ``auto``: ``bf16-mixed`` on a CUDA GPU with bf16, ``16-mixed`` on other GPUs, ``32-true`` on
    CPU. An explicit ``bf16-*`` on a GPU without bf16 falls back to ``16-mixed`` with a warning.
    """
    gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    bf16_ok = gpu and torch.cuda.is_bf16_supported()
    if precision == "auto":
        return "bf16-mixed" if bf16_ok else "16-mixed" if gpu else "32-true"
    if precision.startswith("bf16") and gpu and not bf16_ok:
        log.warning("precision %s: this GPU has no bf16; using 16-mixed", precision)
        return "16-mixed"
    return precision


def ensure_synthetic(root: Path, n: int, seed: int) -> Path:
    """Generate the synthetic dataset under ``root`` unless ``root/synthetic.json`` exists.

    An existing dataset is reused as is (a warning says so when its size or seed differ).
    """
    manifest = root / "synthetic.json"
    if manifest.is_file():
        try:
            info = json.loads(manifest.read_text(encoding="utf-8"))
        except ValueError:
            info = {}
        if info.get("n") != n or info.get("seed") != seed:
            log.warning(
                "reusing the synthetic dataset in %s (n=%s, seed=%s; the config asks n=%d, "
                "seed=%d); delete the folder to regenerate",
                root,
                info.get("n"),
                info.get("seed"),
                n,
                seed,
            )
        return root
    try:
        from datamodules.synthetic import generate
    except ImportError as exc:  # pragma: no cover - the generator ships with datamodules
        raise MedclipError(f"cannot generate synthetic data: {exc}") from exc
    log.info("generating a synthetic dataset (%d studies, seed %d) in %s", n, seed, root)
    generate(root, n=n, seed=seed)
    return root


def build_datamodule(
    cfg: MedclipConfig,
    model: MedclipModel,
    data_root: str | Path | None = None,
    out_dir: str | Path | None = None,
) -> Any:
    """A :class:`datamodules.datamodule.ContrastiveDataModule` whose preprocessing follows
    ``model``'s input specs (data-config values fill what a tower does not specify).

    Synthetic data without a root goes to ``<out_dir>/synthetic-data`` (generated once).
    """
    from datamodules.datamodule import ContrastiveDataModule

    d = cfg.data
    root_text = data_root or d.root
    if not root_text:
        if d.dataset != "synthetic":
            raise MedclipError(f"data.root: required for dataset {d.dataset!r} (or --data-root)")
        root_text = str(Path(out_dir or cfg.trainer.out_dir) / "synthetic-data")
    root = Path(root_text).expanduser()
    if d.dataset == "synthetic":
        ensure_synthetic(root, d.synth_n, d.synth_seed)
    elif not root.exists():
        raise MedclipError(f"{root}: data folder not found")
    ecg_cfg, cxr_cfg = preprocessing_configs(model, cfg.data)
    load_kwargs: dict[str, Any] = {}
    if d.dataset in ("synthetic", "mimic"):
        load_kwargs = {
            "pair_window_days": d.pair_window_days,
            "pairing": d.pairing,
            "uncertainty_policy": d.uncertainty_policy,
        }
        if d.ecg_root:
            load_kwargs["ecg_root"] = d.ecg_root
    elif d.dataset == "chexpert":
        load_kwargs = {"uncertainty_policy": d.uncertainty_policy}
    return ContrastiveDataModule(
        dataset=d.dataset,
        root=root,
        load_kwargs=load_kwargs,
        ecg_cfg=ecg_cfg,
        cxr_cfg=cxr_cfg,
        batch_size=d.batch_size,
        num_workers=d.num_workers,
        seed=cfg.trainer.seed,
        cache_dir=d.cache_dir,
        skip_bad=d.skip_bad_records,
    )


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        error = OutputWriteError.from_exception(path, exc)
        if error is not None:
            raise error from exc
        raise


def _strategy(name: str) -> str:
    # absent modalities leave a tower unused on some ranks: DDP must tolerate that
    return "ddp_find_unused_parameters_true" if name == "ddp" else name


def fit(
    cfg: MedclipConfig,
    *,
    datamodule: L.LightningDataModule | None = None,
    data_root: str | Path | None = None,
    out_dir: str | Path | None = None,
    max_time_s: float | None = None,
    resume: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    model: MedclipModel | None = None,
    enable_progress_bar: bool = True,
    checkpoint_every_n_steps: int = 500,
) -> FitResult:
    """Train a tri-modal contrastive model.

    Args:
        cfg: the experiment config.
        datamodule: a ready datamodule yielding :class:`~datamodules.types.Batch` (default: built
            from ``cfg.data``; synthetic data is generated when absent).
        data_root: overrides ``cfg.data.root``.
        out_dir: run folder (default ``cfg.trainer.out_dir``).
        max_time_s: wall-clock limit (overrides ``cfg.trainer.max_time_s``).
        resume: checkpoint to continue from (``"last"``: ``OUT/checkpoints/last.ckpt``); loaded
            weights-only. Mid-epoch checkpoints resume at the next batch with the random states
            of the checkpoint (:mod:`medclip.resume`), so deterministic runs continue exactly.
        callbacks: extra Lightning callbacks.
        model: an already built model (default: from ``cfg.model``).
        enable_progress_bar: tqdm progress bars.
        checkpoint_every_n_steps: also refresh ``last.ckpt`` every N optimizer steps (0: only
            at epoch ends and when training stops).

    Returns:
        :class:`FitResult`.
    """
    t = cfg.trainer
    out = Path(out_dir or t.out_dir).expanduser()
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(t.seed, workers=True, verbose=False)
    module = ContrastiveModule(cfg, model=model)
    dm = datamodule
    if dm is None:
        dm = build_datamodule(cfg, module.model, data_root, out)
    _write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    has_val = t.val_check_interval != 0
    best_cb = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val/loss",
        mode="min",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    last_path = ckpt_dir / "last.ckpt"
    wait_monitor = DataWaitMonitor()
    all_callbacks: list[Callback] = [
        LastCheckpoint(last_path, checkpoint_every_n_steps),
        RngState(),
        StepLossLog(out / "logs" / "steps.csv"),
        wait_monitor,
        *callbacks,
    ]
    if has_val:
        all_callbacks.insert(0, best_cb)
    limit = max_time_s if max_time_s is not None else t.max_time_s
    kwargs: dict[str, Any] = {}
    from datamodules.datamodule import ContrastiveDataModule

    if isinstance(dm, ContrastiveDataModule):
        kwargs["use_distributed_sampler"] = False  # its batch sampler shards by rank itself
    trainer = L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=_strategy(t.strategy),
        precision=resolve_precision(t.precision, t.accelerator),  # type: ignore[arg-type]
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        max_time=dt.timedelta(seconds=float(limit)) if limit else None,
        accumulate_grad_batches=1 if module.feature_cache else t.accumulate_grad_batches,
        gradient_clip_val=None if module.feature_cache else cfg.optim.grad_clip_norm,
        log_every_n_steps=t.log_every_n_steps,
        val_check_interval=t.val_check_interval if has_val else None,
        limit_val_batches=None if has_val else 0,
        deterministic=t.deterministic,
        default_root_dir=str(out),
        logger=[
            CSVLogger(str(out), name="logs"),
            TensorBoardLogger(str(out), name="tb", default_hp_metric=False),
        ],
        callbacks=all_callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
        **kwargs,
    )
    ckpt_path = None
    if resume is not None:
        ckpt_path = str(last_path if str(resume) == "last" else Path(resume).expanduser())
        if not Path(ckpt_path).is_file():
            raise MedclipError(f"{ckpt_path}: checkpoint to resume from not found")
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    metrics = {
        k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1
    }
    best = Path(best_cb.best_model_path) if has_val and best_cb.best_model_path else None
    result = FitResult(
        out_dir=out,
        last_checkpoint=last_path,
        best_checkpoint=best,
        global_step=int(trainer.global_step),
        metrics=metrics,
        params=dict(module.param_summary),
        data_wait=wait_monitor.summary(),
    )
    if wait_monitor.steps:
        log.info(
            "data wait: %.1f%% of the training loop (%d steps, %.0f ms/step)",
            100 * wait_monitor.fraction,
            wait_monitor.steps,
            wait_monitor.summary()["step_ms"],
        )
    if trainer.is_global_zero:
        summary = {
            "global_step": result.global_step,
            "metrics": metrics,
            "params": result.params,
            "data_wait": result.data_wait,
            "last_checkpoint": str(last_path),
            "best_checkpoint": str(best) if best else None,
        }
        _write_text_atomic(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    return result
