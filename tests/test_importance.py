"""The Taylor criterion against a direct computation, the baselines, and TaylorPrunableNetwork in a custom loop."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prune_core import ChannelGraph, TaylorPrunableNetwork
from prune_core.importance import TaylorAccumulator, filter_l1, random_unit_scores, unit_scores
from tests.architectures import ARCHITECTURES


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(2, 6, 3, padding=1), nn.BatchNorm1d(6), nn.ReLU(),
                         nn.Conv1d(6, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10, 3))


def direct_taylor(net: nn.Module, layer: int, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """|mean over positions of activation x gradient| per example, averaged over examples, by hand."""
    acts = []
    handle = net[layer].register_forward_hook(lambda m, a, out: acts.append(out))
    loss = F.cross_entropy(net(x), y)
    handle.remove()
    (grad,) = torch.autograd.grad(loss, acts[0])
    return (acts[0] * grad).mean(2).abs().mean(0).detach().numpy()


def test_taylor_scores_match_direct_computation_over_several_batches():
    net = small_net().eval()
    graph = ChannelGraph.build(net, torch.zeros(1, 2, 12))
    taylor = TaylorAccumulator(graph)
    batches = [(torch.randn(n, 2, 12), torch.randint(0, 3, (n,))) for n in (5, 7)]
    for x, y in batches:
        with taylor.hooks(net) as live:
            loss = F.cross_entropy(net(x), y)
            torch.autograd.grad(loss, live)
    expected = sum(direct_taylor(net, 0, x, y) * len(x) for x, y in batches) / 12
    np.testing.assert_allclose(taylor.channel_scores()["0"], expected, rtol=1e-5)
    assert taylor.examples == 12
    assert all(not m._forward_hooks for m in net.modules()), "hooks must be removed afterwards"


def test_unit_scores_normalise_per_layer_and_sum_coupled_producers():
    model, example = ARCHITECTURES["residual"]()
    graph = ChannelGraph.build(model, example)
    channels = {fqn: np.arange(1, units.size + 1, dtype=float) for fqn, units in graph.producer_units.items()}
    scores = unit_scores(graph, channels, "l2")
    for unit in graph.removable_units():
        expected = sum((channels[fqn] / np.linalg.norm(channels[fqn]))[graph.producer_units[fqn] == unit.id].sum()
                       for fqn in unit.producers)
        assert scores[unit.id] == pytest.approx(expected)
    assert np.isinf(scores[[u.id for u in graph.units if not u.removable]]).all()
    raw = unit_scores(graph, channels, "none")
    assert not np.allclose(raw[np.isfinite(raw)], scores[np.isfinite(scores)])


def test_l1_and_random_baselines():
    net = small_net()
    graph = ChannelGraph.build(net, torch.zeros(1, 2, 12))
    l1 = filter_l1(net, graph)
    np.testing.assert_allclose(l1["0"], net[0].weight.detach().abs().sum((1, 2)).numpy(), rtol=1e-6)
    a = random_unit_scores(graph, np.random.default_rng(1))
    b = random_unit_scores(graph, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)


def test_custom_loop_with_taylor_prunable_network():
    torch.manual_seed(0)
    net = small_net()
    prunable = TaylorPrunableNetwork(net, torch.zeros(1, 2, 12))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    x, y = torch.randn(64, 2, 12), torch.randint(0, 3, (64,))
    start = prunable.num_prunables
    assert start == (6 - 1) + (4 - 1)
    for _ in range(3):
        for xb, yb in zip(x.split(16), y.split(16)):
            with prunable.scoring():           # a training step that also accumulates scores
                optimizer.zero_grad()
                F.cross_entropy(prunable.model(xb), yb).backward()
                optimizer.step()
        assert prunable.prune(max_to_prune=2) == 2
        optimizer = torch.optim.SGD(prunable.model.parameters(), lr=0.05)  # rebuilt after surgery
    assert prunable.num_prunables == start - 6
    assert type(prunable.model) is nn.Sequential
    assert prunable.model(x).shape == (64, 3)
    assert sum(p.numel() for p in prunable.model.parameters()) == prunable.graph.total_learnables


def test_prune_removes_the_lowest_scoring_filter():
    net = small_net()
    prunable = TaylorPrunableNetwork(net, torch.zeros(1, 2, 12))
    prunable.update_score(torch.randn(32, 2, 12), torch.randint(0, 3, (32,)), "crossentropy")
    weakest = int(np.argmin(prunable.scores()))
    (fqn,) = [f for f, units in prunable.graph.producer_units.items() if weakest in units]
    layer = int(fqn)
    keep = prunable.graph.producer_units[fqn] != weakest
    expected = net[layer].weight.detach()[torch.as_tensor(keep)].clone()
    assert prunable.prune(max_to_prune=1) == 1
    torch.testing.assert_close(prunable.model[layer].weight.detach(), expected)


def test_update_score_leaves_weight_gradients_untouched():
    net = small_net()
    prunable = TaylorPrunableNetwork(net, torch.zeros(1, 2, 12))
    loss = prunable.update_score(torch.randn(8, 2, 12), torch.randint(0, 3, (8,)))
    assert loss > 0 and all(p.grad is None for p in net.parameters())


def test_prune_before_scoring_is_refused():
    prunable = TaylorPrunableNetwork(small_net(), torch.zeros(1, 2, 12))
    with pytest.raises(RuntimeError, match="no scores yet"):
        prunable.prune()
    with pytest.raises(ValueError, match="max_to_prune must be a positive integer, got 0"):
        prunable.prune(0)
    with pytest.raises(ValueError, match="criterion 'taylor2' is not supported"):
        TaylorPrunableNetwork(small_net(), torch.zeros(1, 2, 12), criterion="taylor2")
