"""Prototype projection ("push", ProtoECGNet stage 3).

Each prototype is replaced by the training latent patch most similar to it among the training ECGs
positive for the prototype's class: the whole (pooled) latent for global prototypes, the best
window of ``L`` feature steps for partial prototypes (window scores pooled by max). The source
``ecg_id``, the window in seconds and the 12-lead source segment are recorded so an explanation can
show *which training ECG* a prototype is.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from encoders.prototypes import window_cosine
from medclip.proto.model import ProtoBranch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrototypeSource:
    """Where a projected prototype comes from.

    Attributes:
        branch: branch name.
        index: prototype index within the branch.
        class_name: the prototype's class (SCP code).
        ecg_id: source record id (None when no training ECG was positive for the class).
        window: feature-window index in the source latent.
        start_s / end_s: source time window in seconds.
        similarity: cosine similarity (unscaled) between the prototype and its source patch.
    """

    branch: str
    index: int
    class_name: str
    ecg_id: int | None
    window: int
    start_s: float
    end_s: float
    similarity: float

    def as_dict(self) -> dict[str, object]:
        """JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> PrototypeSource:
        """Inverse of :meth:`as_dict`."""
        eid = d.get("ecg_id")
        return cls(
            branch=str(d["branch"]),
            index=int(d["index"]),  # type: ignore[call-overload]
            class_name=str(d["class_name"]),
            ecg_id=None if eid is None else int(eid),  # type: ignore[call-overload]
            window=int(d["window"]),  # type: ignore[call-overload]
            start_s=float(d["start_s"]),  # type: ignore[arg-type]
            end_s=float(d["end_s"]),  # type: ignore[arg-type]
            similarity=float(d["similarity"]),  # type: ignore[arg-type]
        )


@dataclass
class PushResult:
    """Outcome of projecting one branch.

    Attributes:
        sources: one :class:`PrototypeSource` per prototype.
        segments: ``(P, 12, S)`` float32 source segments in mV (zeros when not projected).
    """

    sources: list[PrototypeSource]
    segments: np.ndarray


@torch.no_grad()
def push_branch(
    branch: ProtoBranch,
    x_mv: np.ndarray,
    targets: np.ndarray,
    ecg_ids: np.ndarray,
    fs_hz: float,
    mean: float = 0.0,
    std: float = 1.0,
    batch_size: int = 64,
    progress: bool = True,
) -> PushResult:
    """Project every prototype of ``branch`` onto its nearest positive training patch.

    Args:
        branch: the branch; its prototypes are overwritten in place.
        x_mv: ``(N, 12, T)`` training records in mV (after the high-pass filter).
        targets: ``(N, C)`` the branch's labels.
        ecg_ids: ``(N,)`` record ids.
        fs_hz: sampling rate of the input.
        mean / std: the global standardisation that turns ``x_mv`` into model input.
    """
    layer = branch.prototype_layer
    protos = layer.prototypes
    device = protos.device
    identity = branch.identity.to(device)
    P, _, Lp = protos.shape
    was_training = branch.training
    branch.eval()
    best_sim = torch.full((P,), float("-inf"), device=device)
    best_vec = protos.detach().clone()
    best_rec = torch.full((P,), -1, dtype=torch.long, device=device)
    best_win = torch.zeros(P, dtype=torch.long, device=device)
    n = x_mv.shape[0]
    starts = range(0, n, batch_size)
    for s in tqdm(starts, desc=f"push {branch.name}", disable=not progress, leave=False):
        xb = (torch.as_tensor(x_mv[s : s + batch_size], device=device) - mean) / std
        yb = torch.as_tensor(targets[s : s + batch_size], device=device, dtype=torch.float32)
        z = branch.latent(xb)  # (B, D, T)
        win = window_cosine(z, protos, scaled=False)  # (B, W, P)
        wmax, warg = win.max(dim=1)  # (B, P)
        pos = (yb @ identity.t()) > 0
        wmax = wmax.masked_fill(~pos, float("-inf"))
        bmax, barg = wmax.max(dim=0)  # (P,)
        better = bmax > best_sim
        if better.any():
            idx = better.nonzero().flatten()
            rows = barg[idx]
            wins = warg[rows, idx]
            for p, r, w in zip(idx.tolist(), rows.tolist(), wins.tolist()):
                best_vec[p] = z[r, :, w : w + Lp]
            best_sim[idx] = bmax[idx]
            best_rec[idx] = rows + s
            best_win[idx] = wins
    projected = best_rec >= 0
    with torch.no_grad():
        protos[projected] = best_vec[projected]
    branch.train(was_training)

    seg_len = branch.segment_samples()
    segments = np.zeros((P, 12, seg_len), dtype=np.float32)
    sources: list[PrototypeSource] = []
    classes = layer.prototype_class.tolist()
    for p in range(P):
        rec = int(best_rec[p])
        w = int(best_win[p])
        a, b = branch.window_samples(w)
        start_s, end_s = branch.window_seconds(w, fs_hz)
        if rec >= 0:
            segments[p] = x_mv[rec, :, a:b]
        sources.append(
            PrototypeSource(
                branch=branch.name,
                index=p,
                class_name=branch.classes[classes[p]],
                ecg_id=int(ecg_ids[rec]) if rec >= 0 else None,
                window=w,
                start_s=start_s,
                end_s=end_s,
                similarity=float(best_sim[p]) if rec >= 0 else float("nan"),
            )
        )
    n_missing = int((~projected).sum())
    if n_missing:
        log.warning(
            "push %s: %d prototype(s) kept unprojected (no positive training ECG for their class)",
            branch.name,
            n_missing,
        )
    return PushResult(sources, segments)
