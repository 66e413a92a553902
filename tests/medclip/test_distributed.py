"""Gather-with-grad: 2 gloo ranks on CPU give the 1-process loss and gradients (within 1e-5)."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from medclip.config import LossConfig
from medclip.distributed import gather_no_grad, gather_with_grad, rank_and_world
from medclip.losses import ContrastiveLoss

SPLIT = (4, 3)  # uneven shards: rank 0 holds 4 rows, rank 1 holds 3
CONFIGS = {
    "hard": LossConfig(xray_text=1.0, ecg_text=0.5, xray_ecg=2.0),
    "soft": LossConfig(
        soft_targets=True, soft_target_identity_mix=0.3, soft_target_temperature=0.5
    ),
    "local_only": LossConfig(gather_with_grad=False),  # control: without the gather it differs
}


class TinyTowers(nn.Module):
    """Three linear 'towers' and a learnable logit scale."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.towers = nn.ModuleDict({k: nn.Linear(5, 6) for k in ("xray", "ecg", "text")})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: F.normalize(self.towers[k](x[k]), dim=1) for k in self.towers}


def _data() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    n = sum(SPLIT)
    x = {k: torch.randn(n, 5, generator=g) for k in ("xray", "ecg", "text")}
    present = torch.ones(n, 3, dtype=torch.bool)
    present[4:, 0] = False  # rank 1 has no X-ray at all: zero local rows for two pairs
    present[1, 1] = False
    present[5, 2] = False
    labels = (torch.rand(n, 4, generator=g) > 0.5).float()
    labels[2] = float("nan")  # a label-free study
    return x, present, labels


def _run(
    model: TinyTowers,
    cfg: LossConfig,
    x: dict[str, torch.Tensor],
    present: torch.Tensor,
    labels: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    emb = model(x)
    masks = {"xray": present[:, 0], "ecg": present[:, 1], "text": present[:, 2]}
    out = ContrastiveLoss(cfg)(emb, masks, model.logit_scale, labels)
    out.loss.backward()
    grads = {
        n: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
        for n, p in model.named_parameters()
    }
    return out.loss.detach(), grads


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=len(SPLIT)
    )
    try:
        torch.set_num_threads(1)
        x, present, labels = _data()
        lo = sum(SPLIT[:rank])
        sl = slice(lo, lo + SPLIT[rank])
        results: dict[str, object] = {"rank_world": torch.tensor(rank_and_world())}
        for name, cfg in CONFIGS.items():
            loss, grads = _run(
                TinyTowers(), cfg, {k: v[sl] for k, v in x.items()}, present[sl], labels[sl]
            )
            # what DDP does: average gradients (and, for logging, losses) over ranks
            dist.all_reduce(loss)
            for g in grads.values():
                dist.all_reduce(g)
            results[name] = (loss / 2, {k: g / 2 for k, g in grads.items()})
        # uneven gather with autograd: d/dx of sum(gathered * weights) is this rank's weights
        local = torch.full((SPLIT[rank], 2), float(rank + 1), requires_grad=True)
        gathered = gather_with_grad(local)
        (gathered * torch.arange(gathered.numel()).view_as(gathered)).sum().backward()
        results["gather"] = (gathered.detach(), local.grad)
        results["mask"] = gather_no_grad(present[sl][:, 0])
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    if not dist.is_gloo_available():
        pytest.skip("gloo backend not available")
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(
        _worker, args=(_free_port(), str(out)), nprocs=len(SPLIT), start_method="fork"
    )
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(len(SPLIT))]


@pytest.mark.parametrize("name", ["hard", "soft"])
def test_two_ranks_match_one_process_on_the_concatenated_batch(
    ranks: list[dict], name: str
) -> None:
    x, present, labels = _data()
    ref_loss, ref_grads = _run(TinyTowers(), CONFIGS[name], x, present, labels)
    assert ref_loss.item() > 0
    for r in ranks:
        loss, grads = r[name]
        assert torch.allclose(loss, ref_loss, atol=1e-5), (loss, ref_loss)
        assert set(grads) == set(ref_grads)
        for k, g in grads.items():
            assert torch.allclose(g, ref_grads[k], atol=1e-5), k
        assert grads["logit_scale"].abs().item() > 0


def test_without_gather_the_loss_differs(ranks: list[dict]) -> None:
    x, present, labels = _data()
    ref_loss, _ = _run(TinyTowers(), CONFIGS["local_only"], x, present, labels)
    assert not torch.allclose(ranks[0]["local_only"][0], ref_loss, atol=1e-3)


def test_uneven_gather_with_grad_routes_gradients_to_their_rank(ranks: list[dict]) -> None:
    n = sum(SPLIT)
    expected = torch.cat([torch.full((s, 2), float(i + 1)) for i, s in enumerate(SPLIT)])
    weights = torch.arange(n * 2, dtype=torch.float32).view(n, 2)
    for rank, r in enumerate(ranks):
        assert torch.equal(r["rank_world"], torch.tensor([rank, 2]))
        gathered, grad = r["gather"]
        assert torch.equal(gathered, expected)
        lo = sum(SPLIT[:rank])
        # both ranks back-propagate the same weights, summed -> 2x
        assert torch.allclose(grad, 2 * weights[lo : lo + SPLIT[rank]])
        assert r["mask"].dtype == torch.bool
        assert torch.equal(r["mask"], _data()[1][:, 0])


def test_helpers_are_identity_outside_a_process_group() -> None:
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x
    assert gather_no_grad(x) is x
    assert rank_and_world() == (0, 1)
