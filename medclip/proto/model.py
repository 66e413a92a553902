"""ProtoECGNet branches and fusion (arXiv 2504.08713, ANCHORS.md §2).

Three branches score an ECG against learned prototypes:

* ``rhythm``: 1D backbone, features globally average-pooled, global prototypes (plain cosine);
* ``morphology``: 2D lead-spanning backbone, time-localised prototypes of ``partial_length``
  feature steps (scaled cosine, pooled over windows);
* ``global``: 2D backbone, prototypes as long as the whole feature map (scaled cosine).

Each branch has a class-connection layer ``Linear(P -> C, bias=False)`` initialised to
``+1 / -0.5``. The fusion layer is ``Linear(sum P -> sum C, bias=True)`` over the concatenated
similarity scores ``[rhythm | morphology | global]``; its label order is
:attr:`datamodules.proto_groups.ProtoGroups.all_labels`.

Deviation from the reference code: the fusion layer sees each similarity standardised with
training statistics, ``z = (s - mean) / std`` (buffers saved with the weights). The 2D
similarities are tiny (about +-0.03 after the ``sqrt(D*L)`` scaling) and share large offsets, so
on raw scores a linear layer learns slowly and "weight x similarity" is dominated by offsets
that the bias cancels. On ``z`` the layer is well conditioned and a contribution
``weight x z`` says how much more (or less) similar than an average training ECG the input is to
that prototype, weighted by its importance for the label.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from datamodules.proto_groups import GROUP_NAMES, ProtoGroups
from encoders.prototypes import (
    AddOnActivation,
    AddOnLayers,
    PrototypeLayer,
    WindowPool,
    init_last_layer,
)
from encoders.registry import create_encoder, get_config_class
from encoders.weights import LoadReport, load_pretrained
from medclip.proto.config import ProtoConfig

log = logging.getLogger(__name__)

BranchKind = Literal["1d", "2d"]


@dataclass
class BranchOutput:
    """One branch's forward pass.

    Attributes:
        logits: ``(B, C)`` class logits of the branch classifier.
        similarity: ``(B, P)`` pooled prototype similarities.
        windows: ``(B, W, P)`` per-window similarities.
    """

    logits: torch.Tensor
    similarity: torch.Tensor
    windows: torch.Tensor


@dataclass
class ProtoOutput:
    """Full model forward pass.

    Attributes:
        branches: per-branch outputs.
        similarity: ``(B, sum P)`` concatenated similarities in branch order.
        logits: ``(B, sum C)`` fused logits in :attr:`ProtoGroups.all_labels` order.
    """

    branches: dict[str, BranchOutput]
    similarity: torch.Tensor
    logits: torch.Tensor


class ProtoBranch(nn.Module):
    """Backbone -> add-on layers -> prototype layer -> class-connection layer.

    Args:
        name: branch name.
        backbone: module with ``forward_features(x (B, 12, T))`` returning ``(B, C, T')``
            (1D) or ``(B, C, 1, T')`` (2D).
        classes: class names of this branch.
        per_class: prototypes per class.
        kind: ``1d`` pools the features over time (global prototypes of length 1).
        partial_length: prototype length in feature steps for a 2D branch; None = global
            (the whole feature map).
        input_length: ECG samples T the branch is built for (used to probe the backbone).
        proto_dim: add-on output channels (None: the backbone's channels).
        scaled: divide cosine by ``sqrt(D*L)``.
        pool: window pooling (``mean`` / ``topk`` / ``max``).
        topk: k of ``topk`` pooling.
        add_on_activation: final activation of the add-on layers (``sigmoid``: paper).
    """

    def __init__(
        self,
        name: str,
        backbone: nn.Module,
        classes: tuple[str, ...],
        per_class: int,
        *,
        kind: BranchKind,
        partial_length: int | None,
        input_length: int,
        proto_dim: int | None = None,
        scaled: bool = True,
        pool: WindowPool = "mean",
        topk: int = 5,
        add_on_activation: AddOnActivation = "sigmoid",
    ) -> None:
        super().__init__()
        if not classes:
            raise ValueError(f"branch {name!r}: no classes")
        self.name = name
        self.kind = kind
        self.classes = tuple(classes)
        self.input_length = int(input_length)
        self.backbone = backbone
        channels, steps = self._probe(backbone, input_length)
        self.backbone_channels = channels
        #: feature steps T' produced by the backbone for ``input_length`` samples.
        self.backbone_steps = steps
        self.pool_time = kind == "1d"
        feat_steps = 1 if self.pool_time else steps
        if self.pool_time:
            length = 1
        elif partial_length is None:
            length = steps
        else:
            if partial_length > steps:
                raise ValueError(
                    f"branch {name!r}: partial_length {partial_length} exceeds the {steps} "
                    "feature steps of the backbone"
                )
            length = partial_length
        self.is_partial = not self.pool_time and length < steps
        dim = proto_dim or channels
        self.add_on = AddOnLayers(channels, dim, add_on_activation)
        self.prototype_layer = PrototypeLayer(
            len(classes), per_class, dim, length, scaled=scaled, pool=pool, topk=topk
        )
        self.feature_steps = feat_steps
        self.classifier = nn.Linear(self.prototype_layer.n_prototypes, len(classes), bias=False)
        init_last_layer(self.classifier, self.prototype_layer.class_identity)  # type: ignore[arg-type]

    @staticmethod
    def _probe(backbone: nn.Module, input_length: int) -> tuple[int, int]:
        was_training = backbone.training
        backbone.eval()
        with torch.no_grad():
            feats = _backbone_features(backbone, torch.zeros(2, 12, input_length))
        backbone.train(was_training)
        return int(feats.shape[1]), int(feats.shape[2])

    @property
    def n_prototypes(self) -> int:
        """Number of prototypes P."""
        return self.prototype_layer.n_prototypes

    @property
    def identity(self) -> torch.Tensor:
        """``(P, C)`` one-hot prototype-to-class map."""
        ident: torch.Tensor = self.prototype_layer.class_identity  # type: ignore[assignment]
        return ident

    @property
    def step_samples(self) -> float:
        """Input samples per feature step (``T / T'``, e.g. 31.25 for 1000 samples and 32 steps)."""
        return self.input_length / self.backbone_steps

    def backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 12, T)`` -> backbone features ``(B, C, T')`` (not pooled)."""
        return _backbone_features(self.backbone, x)

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 12, T)`` -> add-on features ``(B, D, T_f)`` (``T_f = 1`` for the 1D branch)."""
        f = self.backbone_features(x)
        if self.pool_time:
            f = f.mean(dim=-1, keepdim=True)
        out: torch.Tensor = self.add_on(f)
        return out

    def forward(self, x: torch.Tensor) -> BranchOutput:
        """Score ``(B, 12, T)`` ECGs."""
        scores = self.prototype_layer(self.latent(x))
        return BranchOutput(self.classifier(scores.similarity), scores.similarity, scores.windows)

    def window_samples(self, window: int) -> tuple[int, int]:
        """Input sample span ``[start, end)`` covered by feature window ``window``."""
        if self.pool_time or not self.is_partial:
            return 0, self.input_length
        length = self.prototype_layer.length
        start = round(window * self.step_samples)
        seg = round(length * self.step_samples)
        start = max(0, min(start, self.input_length - seg))
        return start, start + seg

    def window_seconds(self, window: int, fs_hz: float) -> tuple[float, float]:
        """Time span ``[start_s, end_s]`` of feature window ``window``.

        ``start_s = window * T / T' / fs`` (0.3125 s per step for 1000 samples, 32 steps, 100 Hz);
        global prototypes span the whole input.
        """
        if self.pool_time or not self.is_partial:
            return 0.0, self.input_length / fs_hz
        length = self.prototype_layer.length
        start = window * self.step_samples / fs_hz
        end = min(self.input_length, (window + length) * self.step_samples) / fs_hz
        return start, end

    def segment_samples(self) -> int:
        """Length in samples of one prototype's source segment."""
        start, end = self.window_samples(0)
        return end - start


def _backbone_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    feats: torch.Tensor = backbone.forward_features(x)  # type: ignore[operator]
    if feats.dim() == 4:
        if feats.shape[2] != 1:
            feats = feats.mean(dim=2)
        else:
            feats = feats.squeeze(2)
    if feats.dim() != 3:
        raise ValueError(
            f"backbone {type(backbone).__name__}.forward_features returned shape "
            f"{tuple(feats.shape)}; expected (B, C, T') or (B, C, 1, T')"
        )
    return feats


class ProtoECGNet(nn.Module):
    """Branches plus the fusion layer.

    Args:
        branches: the branches by name (any non-empty subset of rhythm/morphology/global).
        groups: the label groups (fusion label order = ``groups.all_labels`` of present branches).
    """

    def __init__(self, branches: dict[str, ProtoBranch], groups: ProtoGroups) -> None:
        super().__init__()
        order = [n for n in GROUP_NAMES if n in branches]
        if not order:
            raise ValueError("ProtoECGNet: no branch")
        self.groups = groups
        self.branch_names: tuple[str, ...] = tuple(order)
        self.branches = nn.ModuleDict({n: branches[n] for n in order})
        self.labels: tuple[str, ...] = tuple(c for n in order for c in branches[n].classes)
        n_protos = sum(branches[n].n_prototypes for n in order)
        self.fusion = nn.Linear(n_protos, len(self.labels), bias=True)
        self.register_buffer("sim_mean", torch.zeros(n_protos))
        self.register_buffer("sim_std", torch.ones(n_protos))
        self._init_fusion()

    def branch(self, name: str) -> ProtoBranch:
        """The branch called ``name``."""
        b = self.branches[name]
        assert isinstance(b, ProtoBranch)
        return b

    def prototype_slices(self) -> dict[str, slice]:
        """Column slice of each branch in the concatenated similarity vector."""
        out: dict[str, slice] = {}
        start = 0
        for n in self.branch_names:
            p = self.branch(n).n_prototypes
            out[n] = slice(start, start + p)
            start += p
        return out

    def label_slices(self) -> dict[str, slice]:
        """Column slice of each branch's classes in the fused label vector."""
        out: dict[str, slice] = {}
        start = 0
        for n in self.branch_names:
            c = len(self.branch(n).classes)
            out[n] = slice(start, start + c)
            start += c
        return out

    def _init_fusion(self) -> None:
        """Block-diagonal start: each branch's ``+1/-0.5`` block, zeros across branches."""
        with torch.no_grad():
            self.fusion.weight.zero_()
            self.fusion.bias.zero_()
            ps, ls = self.prototype_slices(), self.label_slices()
            for n in self.branch_names:
                self.fusion.weight[ls[n], ps[n]] = self.branch(n).classifier.weight

    @torch.no_grad()
    def set_similarity_stats(
        self, mean: torch.Tensor, std: torch.Tensor, keep_function: bool = True
    ) -> None:
        """Store the training mean/std ``(sum P,)`` of the similarities (std floored at 1e-6).

        With ``keep_function`` the fusion weights and bias are rescaled so that the fused logits
        of any input stay the same (e.g. the block-diagonal ``+1/-0.5`` start of stage 4 keeps
        meaning "each branch's classifier on raw similarities").
        """
        old_mean: torch.Tensor = self.sim_mean.clone()  # type: ignore[operator]
        old_std: torch.Tensor = self.sim_std.clone()  # type: ignore[operator]
        new_mean = mean.reshape(-1).to(old_mean)
        new_std = std.reshape(-1).to(old_std).clamp(min=1e-6)
        if keep_function:
            w = self.fusion.weight
            self.fusion.bias.add_(w @ ((new_mean - old_mean) / old_std))
            w.mul_((new_std / old_std)[None, :])
        self.sim_mean.copy_(new_mean)  # type: ignore[operator]
        self.sim_std.copy_(new_std)  # type: ignore[operator]

    def fusion_input(self, sim: torch.Tensor) -> torch.Tensor:
        """Standardised similarities ``(sim - mean) / std``, ``(B, sum P)``."""
        mean: torch.Tensor = self.sim_mean  # type: ignore[assignment]
        std: torch.Tensor = self.sim_std  # type: ignore[assignment]
        return (sim - mean) / std

    def fuse(self, sim: torch.Tensor) -> torch.Tensor:
        """``(B, sum P)`` raw similarities -> ``(B, sum C)`` fused logits."""
        out: torch.Tensor = self.fusion(self.fusion_input(sim))
        return out

    def similarities(self, x: torch.Tensor) -> tuple[dict[str, BranchOutput], torch.Tensor]:
        """Branch outputs and the ``(B, sum P)`` concatenated similarity."""
        outs = {n: self.branch(n)(x) for n in self.branch_names}
        return outs, torch.cat([outs[n].similarity for n in self.branch_names], dim=1)

    def forward(self, x: torch.Tensor) -> ProtoOutput:
        """Score ``(B, 12, T)`` ECGs with every branch and fuse."""
        outs, sim = self.similarities(x)
        return ProtoOutput(outs, sim, self.fuse(sim))


def build_branch(
    name: str, cfg: ProtoConfig, classes: tuple[str, ...], input_length: int
) -> ProtoBranch:
    """Create ``name``'s backbone from the registry and wrap it in a :class:`ProtoBranch`."""
    enc = cfg.backbone_name(name)
    kwargs = cfg.encoder_kwargs()
    fields = {f.name for f in dataclasses.fields(get_config_class(enc))}
    if "length" in fields:
        kwargs.setdefault("length", input_length)
    backbone = create_encoder(enc, **kwargs)
    kind: BranchKind = "1d" if name == "rhythm" else "2d"
    return ProtoBranch(
        name,
        backbone,
        classes,
        cfg.per_class(name),
        kind=kind,
        partial_length=cfg.partial_length if name == "morphology" else None,
        input_length=input_length,
        proto_dim=cfg.proto_dim,
        scaled=cfg.scaled_similarity_1d if kind == "1d" else True,
        pool=cfg.window_pool,
        topk=cfg.pool_topk,
        add_on_activation=cfg.add_on_activation,
    )


def build_proto_model(cfg: ProtoConfig, groups: ProtoGroups, input_length: int) -> ProtoECGNet:
    """Build every branch whose label group is non-empty, plus the fusion layer."""
    branches = {n: build_branch(n, cfg, groups[n], input_length) for n in groups.active}
    model = ProtoECGNet(branches, groups)
    log.info(
        "ProtoECGNet: %s",
        ", ".join(
            f"{n} {len(b.classes)} classes / {b.n_prototypes} prototypes"
            for n, b in ((n, model.branch(n)) for n in model.branch_names)
        ),
    )
    return model


def _strip_prefix_to(own: set[str]) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """State-dict transform dropping the key prefix (``ecg_tower.``, ...) best matching ``own``."""

    def transform(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        counts: Counter[str] = Counter()
        for k in state:
            cands = [""] + [k[: i + 1] for i, ch in enumerate(k) if ch == "."]
            for pre in cands:
                if k[len(pre) :] in own:
                    counts[pre] += 1
        if not counts:
            return state
        prefix = counts.most_common(1)[0][0]
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    return transform


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> LoadReport:
    """Initialise a branch backbone from a contrastive ECG tower's weights (local file).

    Accepts a safetensors file or a ``torch.load(weights_only=True)`` state dict of the tower
    alone or of a whole model (the key prefix, e.g. ``ecg_tower.``, is found automatically).
    Matching tensors are loaded; the rest are reported.

    Raises:
        encoders.weights.WeightsError: unreadable/remote file, or no tensor matches.
    """
    own = set(backbone.state_dict())
    return load_pretrained(backbone, path, strict=False, transform=_strip_prefix_to(own))
