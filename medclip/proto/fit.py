"""Programmatic runner of the ProtoECGNet stages, resumable after an interruption.

Units, in order (one per branch unless noted):

1. ``pretrain/<branch>``: optional init from a contrastive ECG tower's weights, then BCE
   pre-training of the backbone (``epochs_pretrain``; 0 skips it);
2. ``joint/<branch>``: joint training with the classifier frozen;
3. ``push/<branch>``: prototype projection onto training ECGs;
4. ``last/fusion``: branch last layers and the fusion layer on frozen similarity scores.

Then the test fold is evaluated (macro AUROC per branch and fused, bootstrap CI), per-label
thresholds are tuned on the validation fold, and a bundle is written to ``OUT/bundle``.

Timing: wall-clock seconds of data loading, of every unit, of the evaluation and of the export are
in ``ProtoFitResult.timing_s`` and ``metrics["timing_s"]`` (a unit finished by an earlier call
keeps the seconds it took then; they are stored in ``state.json``).

The splits live in memory as arrays, so the training loaders read them in the main process
(``num_workers=0``): worker processes would only add a fork and a teardown per epoch and loader
(two per epoch, about 150 epochs per ``small`` run) and take CPU from the training step.

Resume: after each unit the whole model is saved to ``OUT/work/`` as safetensors and the unit is
appended to ``OUT/work/state.json`` (both atomically, weights first). Inside a unit, Lightning
writes ``last.ckpt`` at each epoch end (atomically, loaded with ``weights_only=True``). A rerun
with the same config skips finished units and continues an unfinished one from its checkpoint.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader, Dataset, TensorDataset

from medclip.config import MedclipConfig
from medclip.errors import MedclipError
from medclip.metrics import auroc, bootstrap_auroc, fit_thresholds
from medclip.proto.bundle import export_proto_bundle
from medclip.proto.data import (
    ProtoData,
    data_summary,
    load_proto_data,
)
from medclip.proto.losses import ProtoLossWeights, jaccard_matrix, pos_weight_from_labels
from medclip.proto.model import ProtoBranch, ProtoECGNet, build_proto_model, load_backbone_weights
from medclip.proto.module import BranchJointModule, BranchPretrainModule, FusionModule
from medclip.proto.push import PrototypeSource, push_branch
from medclip.safe_load import write_json_atomic

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("pretrain", "joint", "push", "last")
STATE_VERSION = 1


class ProtoFitError(MedclipError):
    """The run cannot start or continue (e.g. the output folder holds another config's run)."""


@dataclass
class ProtoFitResult:
    """What :func:`fit_proto` did.

    Attributes:
        out_dir: the run folder.
        bundle_dir: the exported bundle.
        metrics: test (and validation) metrics.
        units_run: units trained in this call.
        units_skipped: units found finished from an earlier call.
        timing_s: wall-clock seconds per step: ``load_data``, each unit (``pretrain/rhythm``,
            ..., ``last/fusion``; from the earlier call for skipped units), ``evaluate`` (test
            and validation scoring, thresholds) and ``export``.
    """

    out_dir: Path
    bundle_dir: Path
    metrics: dict[str, Any]
    units_run: list[str] = field(default_factory=list)
    units_skipped: list[str] = field(default_factory=list)
    timing_s: dict[str, float] = field(default_factory=dict)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes via temp file + ``os.replace`` and loads tensors only."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp")
        torch.save(checkpoint, tmp)
        os.replace(tmp, p)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = torch.load(
            path, map_location=map_location or "cpu", weights_only=True
        )
        return out


class _EcgDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Rows of an in-memory ``(N, 12, T)`` mV array, standardised on the fly."""

    def __init__(
        self, x: np.ndarray, y: np.ndarray, rows: np.ndarray, mean: float, std: float
    ) -> None:
        self.x, self.y, self.rows = x, y, rows
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        r = int(self.rows[i])
        x = (torch.from_numpy(self.x[r]) - self.mean) / self.std
        return x, torch.from_numpy(self.y[r])


def config_fingerprint(cfg: MedclipConfig, data_root: str | Path) -> str:
    """Hash of everything that changes the result of a run (proto config, input, seed, data)."""
    import dataclasses

    payload = {
        "proto": dataclasses.asdict(cfg.proto),
        "fs": cfg.data.ecg_fs_hz,
        "length": cfg.data.ecg_length,
        "seed": cfg.trainer.seed,
        "root": str(Path(data_root).resolve()),
        "version": STATE_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def _training_data_name(root: Path, data: ProtoData) -> str:
    for cand in (root, *root.parents[:2]):
        if (cand / "synthetic.json").is_file():
            return "synthetic PTB-XL-layout data (medclip synthetic generator; not real patients)"
    return f"{data.source}, strat_fold train split"


class _Runner:
    """Holds the state of one :func:`fit_proto` call."""

    def __init__(
        self,
        cfg: MedclipConfig,
        data_root: Path,
        out: Path,
        progress: bool,
        on_unit_end: Callable[[str], None] | None,
    ) -> None:
        self.cfg = cfg
        self.pcfg = cfg.proto
        self.root = data_root
        self.out = out
        self.work = out / "work"
        self.progress = progress
        self.on_unit_end = on_unit_end
        self.fingerprint = config_fingerprint(cfg, data_root)
        self.state = self._read_state()
        self._sims: dict[str, np.ndarray] = {}

    # ----- state -------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        path = self.work / "state.json"
        if not path.is_file():
            return {"fingerprint": self.fingerprint, "done": [], "weights": None}
        try:
            state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ProtoFitError(
                f"{path}: unreadable run state ({exc}); rerun with --restart"
            ) from exc
        if state.get("fingerprint") != self.fingerprint:
            raise ProtoFitError(
                f"{self.out}: holds a run with another config or dataset; "
                "use a new --out folder or --restart"
            )
        return state

    def _commit(self, unit: str, model: ProtoECGNet, seconds: float) -> None:
        from safetensors.torch import save_file

        self.work.mkdir(parents=True, exist_ok=True)
        name = f"model_{len(self.state['done']):02d}_{unit.replace('/', '_')}.safetensors"
        tmp = self.work / f".{name}.tmp"
        save_file(
            {k: v.detach().contiguous().cpu().clone() for k, v in model.state_dict().items()},
            str(tmp),
        )
        os.replace(tmp, self.work / name)
        old = self.state.get("weights")
        self.state["done"] = [*self.state["done"], unit]
        self.state["weights"] = name
        self.state["timing_s"] = {**self.state.get("timing_s", {}), unit: round(seconds, 3)}
        write_json_atomic(self.work / "state.json", self.state)
        if old and old != name:
            (self.work / old).unlink(missing_ok=True)
        shutil.rmtree(self._ckpt_dir(unit), ignore_errors=True)

    def _device(self) -> torch.device:
        """Device for the no-grad passes (push, similarities): CUDA when the trainer may use it."""
        if self.cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")

    def _ckpt_dir(self, unit: str) -> Path:
        return self.work / "ckpt" / unit.replace("/", "_")

    # ----- Lightning ---------------------------------------------------------------------
    def _fit(
        self,
        unit: str,
        module: L.LightningModule,
        train: DataLoader[Any],
        val: DataLoader[Any],
        epochs: int,
    ) -> None:
        ckpt_dir = self._ckpt_dir(unit)
        tc = self.cfg.trainer
        ckpt = ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best",
            monitor="val_auroc",
            mode="max",
            save_top_k=1,
            save_last=True,
            enable_version_counter=False,
        )
        trainer = L.Trainer(
            max_epochs=epochs,
            accelerator=tc.accelerator,
            devices=1,
            precision=tc.precision,  # type: ignore[arg-type]
            logger=False,
            callbacks=[ckpt, EarlyStopping("val_auroc", mode="max", patience=self.pcfg.patience)],
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=self.progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            deterministic=tc.deterministic,
            default_root_dir=str(ckpt_dir),
            log_every_n_steps=max(1, min(tc.log_every_n_steps, len(train))),
        )
        last = ckpt_dir / "last.ckpt"
        resume = str(last) if last.is_file() else None
        if resume:
            log.info("%s: resuming from %s", unit, last)
        try:
            with warnings.catch_warnings():
                # in-memory arrays: num_workers=0 is deliberate (see the module docstring)
                warnings.filterwarnings("ignore", message=".*does not have many workers.*")
                trainer.fit(module, train, val, ckpt_path=resume, weights_only=True)
        except SystemExit:
            if trainer.interrupted:  # Lightning turns Ctrl+C into SystemExit
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt from None
            raise
        best = ckpt_dir / "best.ckpt"
        if best.is_file():
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)

    def _loader(self, split: str, branch: str | None, shuffle: bool) -> DataLoader[Any]:
        data = self.data
        s = data.split(split)
        y = data.group_labels(split, branch) if branch else s.labels
        rows = np.flatnonzero(y.sum(axis=1) > 0)
        pre = data.preprocessing
        ds = _EcgDataset(s.x, y, rows, pre.mean, pre.std)
        gen = torch.Generator().manual_seed(self.cfg.trainer.seed)
        return DataLoader(
            ds,
            batch_size=self.pcfg.batch_size,
            shuffle=shuffle,
            generator=gen if shuffle else None,
            num_workers=0,  # rows of an in-memory array; workers would only fork per epoch
            pin_memory=self._device().type == "cuda",
            drop_last=False,
        )

    def _train_labels(self, branch: str) -> np.ndarray:
        y = self.data.group_labels("train", branch)
        return y[y.sum(axis=1) > 0]

    # ----- units -------------------------------------------------------------------------
    def unit_pretrain(self, branch: ProtoBranch) -> None:
        path = self.pcfg.init_path(branch.name)
        if path:
            report = load_backbone_weights(branch.backbone, path)
            log.info(
                "%s backbone initialised from a contrastive tower: %s",
                branch.name,
                report.describe(),
            )
        if self.pcfg.epochs_pretrain == 0:
            return
        module = BranchPretrainModule(
            branch,
            pos_weight_from_labels(self._train_labels(branch.name)),
            lr=self.pcfg.lr,
            weight_decay=self.pcfg.weight_decay,
        )
        self._fit(
            f"pretrain/{branch.name}",
            module,
            self._loader("train", branch.name, True),
            self._loader("val", branch.name, False),
            self.pcfg.epochs_pretrain,
        )

    def unit_joint(self, branch: ProtoBranch) -> None:
        if self.pcfg.epochs_joint == 0:
            return
        y = self._train_labels(branch.name)
        p = self.pcfg
        module = BranchJointModule(
            branch,
            pos_weight_from_labels(y),
            jaccard_matrix(y),
            ProtoLossWeights(p.lambda_clst, p.lambda_sep, p.lambda_div, p.lambda_cnrst),
            lr=p.lr,
            weight_decay=p.weight_decay,
        )
        self._fit(
            f"joint/{branch.name}",
            module,
            self._loader("train", branch.name, True),
            self._loader("val", branch.name, False),
            p.epochs_joint,
        )

    def unit_push(self, branch: ProtoBranch) -> None:
        from safetensors.torch import save_file

        s = self.data.train
        pre = self.data.preprocessing
        branch.to(self._device())
        res = push_branch(
            branch,
            s.x,
            self.data.group_labels("train", branch.name),
            s.ecg_ids,
            pre.fs_hz,
            mean=pre.mean,
            std=pre.std,
            batch_size=max(self.pcfg.batch_size, 64),
            progress=self.progress,
        )
        branch.cpu()
        self.work.mkdir(parents=True, exist_ok=True)
        tmp = self.work / f".segments_{branch.name}.safetensors.tmp"
        save_file({"segments": torch.from_numpy(res.segments)}, str(tmp))
        os.replace(tmp, self.work / f"segments_{branch.name}.safetensors")
        write_json_atomic(
            self.work / f"push_{branch.name}.json", [x.as_dict() for x in res.sources]
        )

    def similarities(self, split: str) -> np.ndarray:
        """``(N, sum P)`` similarities of a split (model in eval mode)."""
        if split in self._sims:
            return self._sims[split]
        model = self.model
        model.eval()
        dev = self._device()
        model.to(dev)
        s = self.data.split(split)
        pre = self.data.preprocessing
        out = []
        bs = max(self.pcfg.batch_size, 64)
        with torch.no_grad():
            for i in range(0, len(s), bs):
                xb = (torch.from_numpy(s.x[i : i + bs]).to(dev) - pre.mean) / pre.std
                out.append(model.similarities(xb)[1].cpu().numpy())
        model.cpu()
        self._sims[split] = np.concatenate(out).astype(np.float32)
        return self._sims[split]

    def unit_last(self) -> None:
        if self.pcfg.epochs_last == 0:
            return
        self._sims.clear()
        sim_tr = self.similarities("train")
        y_tr = self.data.train.labels
        module = FusionModule(
            self.model,
            pos_weight_from_labels(y_tr),
            torch.from_numpy(sim_tr.mean(axis=0)),
            torch.from_numpy(sim_tr.std(axis=0)),
            lambda_l1=self.pcfg.lambda_l1,
            lr=self.pcfg.lr_last,
            train_branch_classifiers=self.pcfg.train_branch_last_layer,
        )
        gen = torch.Generator().manual_seed(self.cfg.trainer.seed)
        train = DataLoader(
            TensorDataset(torch.from_numpy(sim_tr), torch.from_numpy(y_tr)),
            batch_size=self.pcfg.batch_size,
            shuffle=True,
            generator=gen,
        )
        val = DataLoader(
            TensorDataset(
                torch.from_numpy(self.similarities("val")), torch.from_numpy(self.data.val.labels)
            ),
            batch_size=256,
        )
        self.model.train()  # branches are not run here; only the fusion/classifier weights train
        self._fit("last/fusion", module, train, val, self.pcfg.epochs_last)
        self.model.eval()

    # ----- evaluation and export -----------------------------------------------------------
    def evaluate(self) -> dict[str, Any]:
        """Macro AUROC over the whole val and test folds, per branch and fused.

        Test results carry a bootstrap CI (``bootstrap_samples`` resamples).
        """
        self._sims.clear()
        model = self.model
        nb = self.pcfg.bootstrap_samples
        seed = self.cfg.trainer.seed

        def score(y: np.ndarray, s: np.ndarray, names: tuple[str, ...], boot: bool) -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if boot and nb > 0:
                    return bootstrap_auroc(y, s, names, n_boot=nb, seed=seed).as_dict()
                return auroc(y, s, names).as_dict()

        out: dict[str, Any] = {}
        ps, ls = model.prototype_slices(), model.label_slices()
        for split in ("val", "test"):
            sims = torch.from_numpy(self.similarities(split))
            y = self.data.split(split).labels
            with torch.no_grad():
                fused = model.fuse(sims).numpy()
            res: dict[str, Any] = {"fused": score(y, fused, model.labels, split == "test")}
            res["fused"]["n"] = len(y)
            for n in model.branch_names:
                yb = y[:, ls[n]]
                rows = yb.sum(axis=1) > 0
                with torch.no_grad():
                    logits = model.branch(n).classifier(sims[rows][:, ps[n]]).numpy()
                res[n] = score(yb[rows], logits, model.branch(n).classes, split == "test")
                res[n]["n"] = int(rows.sum())
            out[split] = res
        return out

    def thresholds(self) -> np.ndarray:
        if self.pcfg.threshold_mode == "fixed":
            return np.full(len(self.model.labels), 0.5)
        sims = torch.from_numpy(self.similarities("val"))
        with torch.no_grad():
            prob = torch.sigmoid(self.model.fuse(sims)).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fit_thresholds(self.data.val.labels, prob, self.model.labels)

    def push_results(self) -> tuple[dict[str, list[PrototypeSource]], dict[str, np.ndarray]]:
        from safetensors.torch import load_file

        sources: dict[str, list[PrototypeSource]] = {}
        segments: dict[str, np.ndarray] = {}
        for n in self.model.branch_names:
            path = self.work / f"push_{n}.json"
            raw = json.loads(path.read_text(encoding="utf-8"))
            sources[n] = [PrototypeSource.from_dict(d) for d in raw]
            segments[n] = load_file(str(self.work / f"segments_{n}.safetensors"))[
                "segments"
            ].numpy()
        return sources, segments

    # ----- main ----------------------------------------------------------------------------
    def run(self) -> ProtoFitResult:
        timing: dict[str, float] = {}
        clock = time.perf_counter()
        L.seed_everything(self.cfg.trainer.seed, workers=True, verbose=False)
        self.data = load_proto_data(
            self.root,
            self.pcfg,
            fs_hz=self.cfg.data.ecg_fs_hz,
            length=self.cfg.data.ecg_length,
            cache_dir=self.work / "cache",
            progress=self.progress,
        )
        timing["load_data"] = time.perf_counter() - clock
        L.seed_everything(self.cfg.trainer.seed, workers=True, verbose=False)
        self.model = build_proto_model(self.pcfg, self.data.groups, self.cfg.data.ecg_length)
        if self.state.get("weights"):
            from safetensors.torch import load_file

            path = self.work / str(self.state["weights"])
            self.model.load_state_dict(load_file(str(path)), strict=True)
            log.info("resumed after %s", self.state["done"][-1])
        units: list[tuple[str, Callable[[], None]]] = []
        for stage in ("pretrain", "joint", "push"):
            fn: Callable[[ProtoBranch], None] = getattr(self, f"unit_{stage}")
            for n in self.model.branch_names:
                units.append((f"{stage}/{n}", functools.partial(fn, self.model.branch(n))))
        units.append(("last/fusion", self.unit_last))
        ran: list[str] = []
        skipped: list[str] = []
        earlier: dict[str, float] = self.state.get("timing_s", {})
        for i, (unit, step) in enumerate(units):
            if unit in self.state["done"]:
                skipped.append(unit)
                if unit in earlier:
                    timing[unit] = float(earlier[unit])
                continue
            log.info("stage %s", unit)
            clock = time.perf_counter()
            L.seed_everything(self.cfg.trainer.seed + i, workers=True, verbose=False)
            step()
            timing[unit] = time.perf_counter() - clock
            self._commit(unit, self.model, timing[unit])
            ran.append(unit)
            if self.on_unit_end is not None:
                self.on_unit_end(unit)
        self.model.eval()
        clock = time.perf_counter()
        metrics: dict[str, Any] = {"test": {}, "val": {}, "data": data_summary(self.data)}
        metrics.update(self.evaluate())
        thresholds = self.thresholds()
        timing["evaluate"] = time.perf_counter() - clock
        clock = time.perf_counter()
        sources, segments = self.push_results()
        metrics["timing_s"] = {k: round(v, 3) for k, v in timing.items()}
        write_json_atomic(self.out / "metrics.json", metrics)
        bundle = export_proto_bundle(
            self.out / "bundle",
            self.model,
            self.pcfg,
            self.data.preprocessing,
            sources,
            segments,
            thresholds,
            _training_data_name(self.root, self.data),
            metrics,
        )
        timing["export"] = time.perf_counter() - clock
        metrics["timing_s"] = {k: round(v, 3) for k, v in timing.items()}
        write_json_atomic(self.out / "metrics.json", metrics)
        return ProtoFitResult(self.out, bundle, metrics, ran, skipped, dict(timing))


def fit_proto(
    cfg: MedclipConfig,
    data_root: str | Path,
    out_dir: str | Path | None = None,
    *,
    progress: bool = True,
    restart: bool = False,
    on_unit_end: Callable[[str], None] | None = None,
) -> ProtoFitResult:
    """Run (or resume) every ProtoECGNet stage on a PTB-XL-layout folder and export a bundle.

    Args:
        cfg: the experiment config (``proto``, ``data.ecg_fs_hz``/``ecg_length``, ``trainer``).
        data_root: folder in the PTB-XL layout (or one that contains it, e.g. a synthetic OUT).
        out_dir: run folder (default ``<trainer.out_dir>/proto``).
        progress: show progress bars.
        restart: discard an earlier run in ``out_dir`` instead of resuming it.
        on_unit_end: called with the unit name after each finished unit (after its state is
            saved); an exception raised there stops the run and a rerun resumes after that unit.

    Raises:
        ProtoFitError: ``out_dir`` holds a run with another config.
        MetadataError: the data folder is not in the PTB-XL layout.
    """
    out = Path(out_dir) if out_dir is not None else Path(cfg.trainer.out_dir) / "proto"
    if restart:
        shutil.rmtree(out / "work", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    # Lightning prints device / tip banners at INFO for each of the 7 trainer runs; keep warnings
    pl_log = logging.getLogger("lightning.pytorch")
    level = pl_log.level
    if not log.isEnabledFor(logging.DEBUG):
        pl_log.setLevel(logging.WARNING)
    try:
        return _Runner(cfg, Path(data_root), out, progress, on_unit_end).run()
    finally:
        pl_log.setLevel(level)
