"""Projection heads: the BatchNorm folding used at inference gives the unfolded output."""

from __future__ import annotations

import copy

import pytest
import torch

from medclip.heads import ProjectionHead


def _trained_head(seed: int = 0) -> ProjectionHead:
    """An ``mlp_bn`` head with non-trivial running statistics and affine parameters."""
    torch.manual_seed(seed)
    head = ProjectionHead(24, 8, "mlp_bn", hidden_dim=16)
    with torch.no_grad():
        for bn in (head.net[1], head.net[4]):
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
    head.train()
    for _ in range(5):  # running statistics from batches that are not centred
        head(3.0 * torch.randn(32, 24) + 1.5)
    return head.eval()


def _unfolded(head: ProjectionHead, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = head.net(x)
    return out


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_folded_eval_output_equals_the_batchnorm_path(context: type) -> None:
    head = _trained_head()
    x = torch.randn(7, 24)
    with context():
        got = head(x)
    torch.testing.assert_close(got, _unfolded(head, x), rtol=1e-5, atol=1e-5)
    # it really took the folded path: the cache holds two (W, b) pairs
    (w1, b1), (w2, b2) = head.__dict__["_fold_cache"][1]
    assert w1.shape == (16, 24) and b1.shape == (16,) and w2.shape == (8, 16)


def test_in_place_weight_updates_refresh_the_folded_weights() -> None:
    head = _trained_head()
    x = torch.randn(3, 24)
    with torch.no_grad():
        before = head(x)
        head.net[0].weight.mul_(2.0)  # e.g. an EMA or optimizer step, in place
        head.net[4].running_mean.add_(0.5)
        after = head(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, _unfolded(head, x), rtol=1e-5, atol=1e-5)


def test_state_dict_loads_and_mode_switches_refresh_the_folded_weights() -> None:
    head, other = _trained_head(0), _trained_head(1)
    x = torch.randn(3, 24)
    with torch.no_grad():
        head(x)  # fill the cache
        head.load_state_dict(other.state_dict(), assign=True)  # replaces the tensors
        torch.testing.assert_close(head(x), _unfolded(other, x), rtol=1e-5, atol=1e-5)
    clone = copy.deepcopy(head)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), head(x))
        clone.double()  # _apply replaces parameter data
        assert clone(x.double()).dtype == torch.float64


def test_training_and_autograd_use_the_batchnorm_layers() -> None:
    head = _trained_head()
    x = torch.randn(6, 24)
    out = head(x)  # eval mode, autograd on: gradients must reach the BatchNorm parameters
    out.sum().backward()
    assert head.net[1].weight.grad is not None and head.net[0].weight.grad is not None
    assert "_fold_cache" not in head.__dict__
    head.train()
    stats = head.net[1].running_mean.clone()
    with torch.no_grad():
        head(x)
    assert not torch.equal(stats, head.net[1].running_mean)  # batch statistics were used


@pytest.mark.parametrize("kind", ["mlp_ln", "linear"])
def test_other_head_kinds_are_not_folded(kind: str) -> None:
    head = ProjectionHead(24, 8, kind, hidden_dim=16).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        torch.testing.assert_close(head(torch.ones(2, 24)), head.net(torch.ones(2, 24)))
    assert "_fold_cache" not in head.__dict__
