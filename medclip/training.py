"""Lightning module for tri-modal contrastive pre-training.

:class:`ContrastiveModule` wraps a :class:`~medclip.model.MedclipModel` and the masked loss of
:mod:`medclip.losses`:

* AdamW with separate learning-rate / weight-decay groups for towers, heads (with the logit
  scale, never decayed) and LoRA adapters; biases and norm parameters are not decayed;
* per-step cosine schedule with linear warm-up, spanning ``max_epochs`` (``max_steps`` and
  ``max_time`` only stop early, so a resumed run follows the same schedule);
* gradient accumulation ``plain`` (Lightning's ``accumulate_grad_batches``: averaged gradients,
  no extra negatives) or ``feature_cache`` (after open_clip's ``--accum-freq``: a no-grad pass
  caches the embeddings of k micro-batches, then each micro-batch is re-encoded with gradients
  against the cache, so the loss sees k x the negatives and the gradient is the exact gradient
  of the big-batch loss; manual optimisation);
* validation: loss, retrieval Recall@1/5/10 (text->X-ray, text->ECG, X-ray->ECG) and zero-shot
  AUROC per modality from positive/negative prompt pairs.

Known approximations: in ``feature_cache`` mode BatchNorm running statistics are updated in both
passes and dropout differs between them (as in open_clip); micro-batches buffered when a run is
interrupted are dropped on resume.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Timer
from torch import nn

from datamodules.types import Batch
from medclip.config import ConfigError, MedclipConfig, OptimConfig, from_dict
from medclip.distributed import gather_no_grad
from medclip.losses import ContrastiveLoss, LossOutput
from medclip.model import Embeddings, MedclipModel

log = logging.getLogger(__name__)

RECALL_KS: tuple[int, ...] = (1, 5, 10)
#: ``(metric name, query key, gallery key)``; ``text`` resolves to ``text_xray``/``text_ecg``.
RETRIEVAL_TASKS: tuple[tuple[str, str, str], ...] = (
    ("text2xray", "text", "xray"),
    ("text2ecg", "text", "ecg"),
    ("xray2ecg", "xray", "ecg"),
)


# ---------------------------------------------------------------------------- optimiser
def is_lora_param(name: str) -> bool:
    """True for peft LoRA tensors (``lora_A``, ``lora_B``, ``lora_embedding_*``, magnitudes)."""
    return "lora_" in name


def build_param_groups(model: MedclipModel, cfg: OptimConfig) -> list[dict[str, Any]]:
    """AdamW parameter groups; only parameters with ``requires_grad`` are included.

    Groups (empty ones dropped), each with a ``name`` key:

    * ``towers`` / ``towers_no_decay``: tower weights (``lr_towers``, ``wd_towers``) and tower
      biases / norm gains / 1-D tensors (no decay);
    * ``lora``: LoRA adapter tensors (``lr_lora``, ``wd_lora``);
    * ``heads`` / ``heads_no_decay``: projection heads (``lr_heads``, ``wd_heads`` for matrices);
    * ``logit_scale``: the temperature (``lr_heads``, weight decay 0).
    """
    buckets: dict[str, list[nn.Parameter]] = {
        k: [] for k in ("towers", "towers_no_decay", "lora", "heads", "heads_no_decay")
    }
    for name, p in model.named_parameters():
        if not p.requires_grad or name == "logit_scale":
            continue
        if is_lora_param(name):
            buckets["lora"].append(p)
        elif name.startswith("heads."):
            buckets["heads" if p.ndim >= 2 else "heads_no_decay"].append(p)
        else:
            buckets["towers" if p.ndim >= 2 else "towers_no_decay"].append(p)
    spec = {
        "towers": (cfg.lr_towers, cfg.wd_towers),
        "towers_no_decay": (cfg.lr_towers, 0.0),
        "lora": (cfg.lr_lora, cfg.wd_lora),
        "heads": (cfg.lr_heads, cfg.wd_heads),
        "heads_no_decay": (cfg.lr_heads, 0.0),
    }
    groups = [
        {"name": k, "params": ps, "lr": spec[k][0], "weight_decay": spec[k][1]}
        for k, ps in buckets.items()
        if ps
    ]
    if model.logit_scale.requires_grad:
        groups.append(
            {
                "name": "logit_scale",
                "params": [model.logit_scale],
                "lr": cfg.lr_heads,
                "weight_decay": 0.0,
            }
        )
    return groups


class WarmupCosine:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine to ``min_ratio``.

    A plain callable object so its attributes (plain numbers) go into the scheduler's
    state dict and a resumed run keeps the original schedule. ``total=0`` means "not known
    yet" (set before the first step). With ``budget_s > 0`` the cosine follows time instead
    of steps: progress is ``elapsed_s / budget_s``, and the training module updates
    ``elapsed_s`` before every step.
    """

    def __init__(self, warmup: int, total: int, min_ratio: float, budget_s: float = 0.0) -> None:
        self.warmup = int(max(0, warmup))
        self.total = int(max(0, total))
        self.min_ratio = float(min_ratio)
        self.budget_s = float(max(0.0, budget_s))
        self.elapsed_s = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.budget_s > 0:
            progress = min(1.0, max(0.0, self.elapsed_s / self.budget_s))
        else:
            span = max(1, self.total - self.warmup)
            progress = min(1.0, (step - self.warmup) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class _ValStore:
    emb: dict[str, list[torch.Tensor]]
    masks: dict[str, list[torch.Tensor]]
    labels: list[torch.Tensor]


# ---------------------------------------------------------------------------- module
class ContrastiveModule(L.LightningModule):
    """Contrastive pre-training of a :class:`MedclipModel` (see the module docstring).

    Args:
        config: the experiment config (a :class:`MedclipConfig` or its ``to_dict()``).
        label_names: names of the columns of ``Batch.labels`` (zero-shot validation); the
            datamodule's ``label_names`` take precedence when it has them.
        model: an already built model (default: built from ``config.model``).
    """

    def __init__(
        self,
        config: MedclipConfig | Mapping[str, Any],
        label_names: Sequence[str] | None = None,
        model: MedclipModel | None = None,
    ) -> None:
        super().__init__()
        cfg = config if isinstance(config, MedclipConfig) else from_dict(MedclipConfig, config)
        cfg = with_text_max_length(cfg)
        self.cfg = cfg
        self.label_names = list(label_names or [])
        # plain containers only: the checkpoint must load with torch.load(weights_only=True)
        self.save_hyperparameters({"config": cfg.to_dict(), "label_names": list(self.label_names)})
        self.model = model if model is not None else MedclipModel(cfg.model)
        self.loss_fn = ContrastiveLoss(cfg.loss)
        self.val_loss_fn = ContrastiveLoss(dataclasses.replace(cfg.loss, gather_with_grad=False))
        self.accum_k = int(cfg.trainer.accumulate_grad_batches)
        self.feature_cache = cfg.trainer.accum_mode == "feature_cache" and self.accum_k > 1
        self.automatic_optimization = not self.feature_cache
        if cfg.trainer.gradient_checkpointing:
            self.model.set_grad_checkpointing(True)
        self._accum: list[Batch] = []
        self._val: _ValStore | None = None
        self.last_train_loss: torch.Tensor | None = None
        self.param_summary: dict[str, float] = {}

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        """AdamW over :func:`build_param_groups` with a per-step :class:`WarmupCosine`."""
        o = self.cfg.optim
        opt = torch.optim.AdamW(
            build_param_groups(self.model, o), lr=o.lr_heads, betas=o.betas, eps=o.eps
        )
        # the length is set in on_train_start: counting the training batches here would build the
        # train loader before Lightning restores its mid-epoch position on resume
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, WarmupCosine(o.warmup_steps, 0, o.min_lr_ratio)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _schedules(self) -> list[WarmupCosine]:
        return [
            fn
            for sched_cfg in self.trainer.lr_scheduler_configs
            for fn in getattr(sched_cfg.scheduler, "lr_lambdas", [])
            if isinstance(fn, WarmupCosine)
        ]

    def _timer(self) -> Timer:
        """Lightning's time-limit callback (it also times the schedule)."""
        for cb in self.trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(cb, Timer):
                return cb
        raise ConfigError("optim.schedule=time needs a time budget: set trainer.max_time_s")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Time-based schedule: tell it the training time so far (resumed runs included)."""
        if self.cfg.optim.schedule == "time":
            elapsed = self._timer().time_elapsed("train")
            for fn in self._schedules():
                fn.elapsed_s = elapsed

    def on_train_start(self) -> None:
        """Span the cosine schedule over the run (a resumed run keeps its checkpoint's)."""
        pending = [fn for fn in self._schedules() if fn.total == 0]
        if not pending:
            return
        if self.cfg.optim.schedule == "time":
            timer = self._timer()
            budget = timer.time_elapsed("train") + (timer.time_remaining("train") or 0.0)
            for fn in pending:
                fn.total, fn.budget_s = 1, budget
            log.info(
                "LR schedule: %d warm-up steps, cosine over the %.0f s time budget",
                self.cfg.optim.warmup_steps,
                budget,
            )
            return
        total = self._schedule_steps()
        for fn in pending:
            fn.total = total
        log.info(
            "LR schedule: %d warm-up steps, cosine over %d optimizer steps",
            self.cfg.optim.warmup_steps,
            total,
        )

    def _schedule_steps(self) -> int:
        """Optimizer steps over ``max_epochs`` (``max_steps`` if epochs are unbounded)."""
        trainer = self.trainer
        max_epochs = trainer.max_epochs
        if max_epochs is None or max_epochs < 0:
            return max(1, trainer.max_steps) if trainer.max_steps > 0 else 10_000
        if trainer.train_dataloader is None:
            trainer.fit_loop.setup_data()
        n_batches = trainer.num_training_batches
        if not math.isfinite(n_batches):
            return max(1, trainer.max_steps) if trainer.max_steps > 0 else 10_000
        k = self.accum_k if self.feature_cache else trainer.accumulate_grad_batches
        return max(1, math.ceil(int(n_batches) / k) * max(1, max_epochs))

    def _loss(self, emb: Embeddings, batch: Batch, scale: torch.Tensor) -> LossOutput:
        labels = batch.labels if self.cfg.loss.soft_targets else None
        return self.loss_fn(emb.emb, emb.masks, scale, labels)

    def _log_train(self, out: LossOutput, batch_size: int) -> None:
        self.last_train_loss = out.loss.detach()  # read by medclip.resume.StepLossLog
        self.log("train/loss", out.loss.detach(), prog_bar=True, batch_size=batch_size)
        for name, value in out.terms.items():
            self.log(f"train/loss_{name}", value, batch_size=batch_size)
        scale = self.model.scale().detach()
        self.log("train/logit_scale", scale.exp(), prog_bar=True, batch_size=batch_size)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        """One step (automatic) or one micro-batch of a feature-cache accumulation (manual)."""
        if self.feature_cache:
            self._feature_cache_step(batch)
            return None
        emb = self.model(batch)
        out = self._loss(emb, batch, self.model.scale())
        self._log_train(out, len(batch))
        return out.loss

    def _feature_cache_step(self, batch: Batch) -> None:
        self._accum.append(batch)
        if len(self._accum) < self.accum_k and not self.trainer.is_last_batch:
            return
        batches, self._accum = self._accum, []
        opt = self.optimizers()
        sched = self.lr_schedulers()
        opt.zero_grad()  # type: ignore[union-attr]
        out = feature_cache_backward(
            self.model, self.loss_fn, batches, self.manual_backward, self.cfg.loss.soft_targets
        )
        clip = self.cfg.optim.grad_clip_norm
        if clip:
            self.clip_gradients(
                opt,  # type: ignore[arg-type]
                gradient_clip_val=clip,
                gradient_clip_algorithm="norm",
            )
        opt.step()  # type: ignore[union-attr]
        sched.step()  # type: ignore[union-attr]
        self.model.clamp_logit_scale_()
        self._log_train(out, sum(len(b) for b in batches))

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Step, then keep ``logit_scale`` within ``[0, ln(logit_scale_max)]``.

        Clamped here rather than in ``on_train_batch_end``: checkpoint callbacks run before the
        module's ``on_train_batch_end``, so a checkpoint would hold the unclamped value and a run
        resumed from it would differ from an uninterrupted one.
        """
        super().optimizer_step(*args, **kwargs)
        self.model.clamp_logit_scale_()

    # ------------------------------------------------------------------ fit start
    def setup(self, stage: str) -> None:
        """Adopt the datamodule's label vocabulary (saved in checkpoints and bundles)."""
        dm = getattr(self.trainer, "datamodule", None)
        names = getattr(dm, "label_names", None)
        if names and list(names) != self.label_names:
            self.label_names = list(names)
            self.hparams["label_names"] = list(names)

    def on_fit_start(self) -> None:
        """Log parameter counts and the LoRA share of the text tower."""
        self.param_summary = parameter_summary(self.model)
        s = self.param_summary
        log.info(
            "parameters: %s total, %s trainable (%.2f%%); text tower LoRA: %s of %s (%.3f%%)",
            f"{int(s['total']):,}",
            f"{int(s['trainable']):,}",
            100.0 * s["trainable"] / max(1.0, s["total"]),
            f"{int(s['text_lora']):,}",
            f"{int(s['text_total']):,}",
            100.0 * s["text_lora_share"],
        )
        if s["text_lora"] > 0 and s["text_lora_share"] > 0.01:
            log.warning("LoRA holds %.2f%% of the text tower (> 1%%)", 100 * s["text_lora_share"])
        if self.logger is not None:
            self.logger.log_metrics({f"params/{k}": float(v) for k, v in s.items()}, step=0)

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        """Reset the embedding store."""
        self._val = _ValStore(emb={}, masks={}, labels=[])

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Validation loss; keeps embeddings for retrieval and zero-shot metrics."""
        emb = self.model(batch)
        # local loss: ranks may hold different numbers of validation batches (no collectives)
        out = self.val_loss_fn(emb.emb, emb.masks, self.model.scale(), None)
        n = len(batch)
        self.log("val/loss", out.loss, prog_bar=True, batch_size=n, sync_dist=True)
        if self._val is None:
            self.on_validation_epoch_start()
        assert self._val is not None
        for k, v in emb.emb.items():
            self._val.emb.setdefault(k, []).append(v.detach().float())
            self._val.masks.setdefault(k, []).append(emb.masks[k].detach())
        self._val.labels.append(batch.labels.detach().float())

    def on_validation_epoch_end(self) -> None:
        """Retrieval R@K and zero-shot AUROC on everything validated this epoch."""
        store, self._val = self._val, None
        if self.trainer.sanity_checking:
            return
        emb, masks, labels = self._gather_val(store)
        if labels.shape[0] == 0:
            return
        metrics = retrieval_metrics(emb, masks)
        names = self.label_names
        if names and labels.shape[1] == len(names):
            try:
                metrics.update(self._zeroshot_metrics(emb, masks, labels, names))
            except Exception as exc:  # metrics must never kill a training run
                log.warning("zero-shot validation skipped: %s", exc)
        for k, v in metrics.items():
            self.log(k, v, prog_bar=k in ("val/R@1_text2xray", "val/zs_auroc"))

    def _gather_val(
        self, store: _ValStore | None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """Validation embeddings of every rank (a rank without batches contributes nothing)."""
        device = self.model.logit_scale.device
        e = self.cfg.model.embed_dim
        keys = self.model.embedding_keys()
        store = store or _ValStore(emb={}, masks={}, labels=[])
        n_labels = store.labels[0].shape[1] if store.labels else len(self.label_names)

        def cat(parts: list[torch.Tensor], empty: torch.Tensor) -> torch.Tensor:
            return gather_no_grad(torch.cat(parts) if parts else empty)

        emb = {k: cat(store.emb.get(k, []), torch.zeros(0, e, device=device)) for k in keys}
        masks = {
            k: cat(store.masks.get(k, []), torch.zeros(0, dtype=torch.bool, device=device))
            for k in keys
        }
        labels = cat(store.labels, torch.zeros(0, n_labels, device=device))
        return emb, masks, labels

    @torch.no_grad()
    def _zeroshot_metrics(
        self,
        emb: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        labels: torch.Tensor,
        names: Sequence[str],
    ) -> dict[str, float]:
        from medclip import prompts as default_prompts
        from medclip.metrics import auroc
        from medclip.zeroshot import ZeroShotClassifier

        zs = self.cfg.zeroshot
        out: dict[str, float] = {}
        all_aucs: list[float] = []
        for modality in ("xray", "ecg"):
            cols = [
                j
                for j, lab in enumerate(names)
                if modality
                in (
                    zs.label_modalities.get(lab)
                    or default_prompts.DEFAULT_LABEL_MODALITIES.get(lab, ("xray", "ecg"))
                )
            ]
            if not cols or modality not in emb:
                continue
            rows = masks[modality].bool().cpu()
            if int(rows.sum()) < 2:
                continue

            def encode(texts: list[str], target: str = modality) -> torch.Tensor:
                return self.model.encode_text(texts, target, normalize=False)  # type: ignore[arg-type]

            clf = ZeroShotClassifier.from_encoder(
                encode,
                [names[j] for j in cols],
                zs,
                logit_scale=float(self.model.scale().detach().exp()),
            )
            probs = clf.predict_proba(emb[modality][rows].to(clf.pos.device)).cpu().numpy()
            y = labels[rows][:, cols].cpu().numpy()
            n_pos = np.nansum(y, axis=0)
            n_known = (~np.isnan(y)).sum(axis=0)
            both = (n_pos > 0) & (n_pos < n_known)  # labels with both classes in this split
            if not both.any():
                continue
            result = auroc(
                y[:, both], probs[:, both], [names[j] for j, ok in zip(cols, both) if ok]
            )
            aucs = [float(v) for v in result.per_label if np.isfinite(v)]
            if aucs:
                out[f"val/zs_auroc_{modality}"] = float(np.mean(aucs))
                all_aucs.extend(aucs)
        if all_aucs:
            out["val/zs_auroc"] = float(np.mean(all_aucs))
        return out


def feature_cache_backward(
    model: MedclipModel,
    loss_fn: ContrastiveLoss,
    batches: Sequence[Batch],
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    soft_targets: bool = False,
) -> LossOutput:
    """Accumulate into ``.grad`` the gradient of the loss over all ``batches`` as one batch.

    After open_clip's ``--accum-freq``: one no-grad pass caches every micro-batch's embeddings;
    then micro-batch j is re-encoded with gradients and the loss is computed on the cache with
    rows j replaced, and back-propagated. Summed over j this is exactly the gradient of the
    big-batch loss (given the same dropout draws), with only one micro-batch's activations in
    memory. ``d loss / d logit_scale`` is taken once (pass 0).

    Args:
        model: the model (its train/eval mode is used as is).
        loss_fn: the contrastive loss.
        batches: the k micro-batches.
        backward: how to back-propagate (Lightning's ``manual_backward`` in training).
        soft_targets: pass the batches' labels to the loss.

    Returns:
        The big-batch loss of the last pass (detached values; same for every pass).
    """
    with torch.no_grad():
        cached = [model(b) for b in batches]
    labels = torch.cat([b.labels for b in batches]) if soft_targets else None
    last: LossOutput | None = None
    for j, b in enumerate(batches):
        live = model(b)
        scale = model.scale()
        emb = {
            k: torch.cat([live.emb[k] if i == j else c.emb[k] for i, c in enumerate(cached)])
            for k in live.emb
        }
        masks = {
            k: torch.cat([live.masks[k] if i == j else c.masks[k] for i, c in enumerate(cached)])
            for k in live.masks
        }
        # later passes keep the scale in the graph with zero gradient, so every DDP rank runs the
        # same collectives in backward
        s = scale if j == 0 else scale.detach() + scale * 0.0
        last = loss_fn(emb, masks, s, labels)
        backward(last.loss)
    assert last is not None
    return last


def retrieval_metrics(
    emb: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
) -> dict[str, float]:
    """``val/R@K_<task>`` for :data:`RETRIEVAL_TASKS` over rows holding both modalities."""
    from medclip.metrics import retrieval_metrics as rank_metrics

    out: dict[str, float] = {}
    for task, q_key, g_key in RETRIEVAL_TASKS:
        if q_key == "text" and "text" not in emb:
            q_key = f"text_{g_key}"
        if q_key not in emb or g_key not in emb:
            continue
        both = masks[q_key].bool() & masks[g_key].bool()
        if int(both.sum()) < 2:
            continue
        q = emb[q_key][both].float().cpu().numpy()
        g = emb[g_key][both].float().cpu().numpy()
        for k, r in rank_metrics(q, g, ks=RECALL_KS).recall.items():
            out[f"val/R@{k}_{task}"] = r
    return out


def with_text_max_length(cfg: MedclipConfig) -> MedclipConfig:
    """Give the text tower ``max_length = data.max_text_tokens`` unless its kwargs set one."""
    from encoders.registry import get_config_class

    text = cfg.model.text
    if "max_length" in text.kwargs:
        return cfg
    try:
        fields = {f.name for f in dataclasses.fields(get_config_class(text.name))}
    except (KeyError, TypeError):
        return cfg
    if "max_length" not in fields:
        return cfg
    kwargs = {**text.kwargs, "max_length": cfg.data.max_text_tokens}
    tower = dataclasses.replace(text, kwargs=kwargs)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, text=tower))


def parameter_summary(model: MedclipModel) -> dict[str, float]:
    """Total / trainable parameters and the LoRA share of the text tower(s)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    text_total = 0
    text_lora = 0
    for key, tower in model.towers.items():
        if not key.startswith("text"):
            continue
        for name, p in tower.named_parameters():
            text_total += p.numel()
            if is_lora_param(name):
                text_lora += p.numel()
    return {
        "total": float(total),
        "trainable": float(trainable),
        "text_total": float(text_total),
        "text_lora": float(text_lora),
        "text_lora_share": text_lora / text_total if text_total else 0.0,
    }


def load_contrastive_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> ContrastiveModule:
    """Rebuild a :class:`ContrastiveModule` from a Lightning checkpoint without pickle code.

    Raises:
        medclip.errors.UnsafeCheckpointError: the file needs pickle objects.
        medclip.errors.BundleError: the file lacks a medclip config or state dict.
    """
    from medclip.errors import BundleError
    from medclip.safe_load import safe_torch_load

    ckpt = safe_torch_load(path, map_location=map_location)
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, Mapping) else None
    if not isinstance(hp, Mapping) or "config" not in hp or "state_dict" not in ckpt:
        raise BundleError(f"{path}: not a medclip contrastive checkpoint (no config/state_dict)")
    module = ContrastiveModule(hp["config"], label_names=hp.get("label_names"))
    module.load_state_dict(ckpt["state_dict"], strict=True)
    return module
