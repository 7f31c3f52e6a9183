"""The Taylor criterion against a direct computation, the baselines, and TaylorPrunableNetwork in a custom loop."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prune_core import CRITERIA, ChannelGraph, Criterion, TaylorPrunableNetwork, register_criterion
from tests.support.architectures import ARCHITECTURES


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(2, 6, 3, padding=1),
        nn.BatchNorm1d(6),
        nn.ReLU(),
        nn.Conv1d(6, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 10, 3),
    )


def direct_taylor(net: nn.Module, consumer: int, x: torch.Tensor, y: torch.Tensor, per_channel: int) -> np.ndarray:
    """|sum over a channel's entries of input x gradient| at a consuming layer, per example, summed over a batch."""
    inputs = []
    handle = net[consumer].register_forward_pre_hook(lambda m, a: inputs.append(a[0]))
    loss = F.cross_entropy(net(x), y)
    handle.remove()
    (grad,) = torch.autograd.grad(loss, inputs[0])
    products = (inputs[0] * grad).reshape(len(x), -1, per_channel) if inputs[0].ndim == 2 else inputs[0] * grad
    return products.sum(2).abs().sum(0).detach().numpy()


def test_taylor_scores_match_direct_computation_over_several_batches():
    net = small_net().eval()
    graph = ChannelGraph.build(net, torch.zeros(1, 2, 12))
    taylor = CRITERIA.get("taylor")(graph, np.random.default_rng(0))
    batches = [(torch.randn(n, 2, 12), torch.randint(0, 3, (n,))) for n in (5, 7)]
    for x, y in batches:
        with taylor.recording(net) as live:
            loss = F.cross_entropy(net(x), y)
            torch.autograd.grad(loss, live)
    scores = taylor.scores(net)
    # conv 0's filters are consumed by conv 3; conv 3's by the linear layer after flatten (10 features each)
    for producer, consumer, per_channel in (("0", 3, None), ("3", 6, 10)):
        expected = sum(direct_taylor(net, consumer, x, y, per_channel) for x, y in batches) / 12
        np.testing.assert_allclose(scores[graph.producer_units[producer]], expected, rtol=1e-5)
    assert taylor.examples == 12
    assert all(not m._forward_pre_hooks for m in net.modules()), "hooks must be removed afterwards"


def test_taylor_estimates_the_loss_change_of_a_removal():
    """A unit's score tracks the loss change of actually zeroing it (first order, per example)."""
    net = small_net().eval()
    graph = ChannelGraph.build(net, torch.zeros(1, 2, 12))
    x, y = torch.randn(1, 2, 12), torch.tensor([1])
    taylor = CRITERIA.get("taylor")(graph, np.random.default_rng(0))
    with taylor.recording(net) as live:
        torch.autograd.grad(F.cross_entropy(net(x), y), live)
    scores, base = taylor.scores(net), F.cross_entropy(net(x), y).item()
    changes = []
    for channel, uid in enumerate(graph.producer_units["3"]):
        handle = net[4].register_forward_hook(lambda m, a, out, c=channel: out.index_fill(1, torch.tensor([c]), 0.0))
        changes.append(abs(F.cross_entropy(net(x), y).item() - base))
        handle.remove()
        assert scores[uid] >= 0
    ranks = np.argsort(np.argsort(changes)), np.argsort(np.argsort(scores[graph.producer_units["3"]]))
    assert np.corrcoef(*ranks)[0, 1] > 0.5


class Counting(Criterion):
    """Unit k scores k + 1: raw scores whose normalisation is easy to check."""

    def scores(self, model):
        return np.arange(1, len(self.graph.units) + 1, dtype=float)


@pytest.fixture
def counting():
    register_criterion("counting", Counting)
    yield
    CRITERIA.unregister("counting")


def test_normalize_per_group_and_coupled_units(counting):
    model, example = ARCHITECTURES["residual"]()
    prunable = TaylorPrunableNetwork(model, example, criterion="counting")
    graph = prunable.graph
    raw = np.arange(1, len(graph.units) + 1, dtype=float)
    scores = prunable.scores()
    groups = {}
    for unit in graph.removable_units():
        groups.setdefault(unit.producers, []).append(unit.id)
    assert any(len(producers) > 1 for producers in groups), "the residual stream couples several producers"
    for ids in groups.values():
        np.testing.assert_allclose(scores[ids], raw[ids] / raw[ids].mean())
    assert np.isinf(scores[[u.id for u in graph.units if not u.removable]]).all()
    l2 = TaylorPrunableNetwork(model, example, criterion="counting", normalization="l2").scores()
    for ids in groups.values():
        np.testing.assert_allclose(l2[ids], raw[ids] / np.linalg.norm(raw[ids]))
    unnormalized = TaylorPrunableNetwork(model, example, criterion="counting", normalization="none").scores()
    np.testing.assert_allclose(unnormalized[np.isfinite(scores)], raw[np.isfinite(scores)])
    with pytest.raises(ValueError, match="normalization 'max' is not supported"):
        TaylorPrunableNetwork(model, example, normalization="max")


def test_l1_and_random_baselines():
    net = small_net()
    graph = ChannelGraph.build(net, torch.zeros(1, 2, 12))
    l1 = CRITERIA.get("l1")(graph, np.random.default_rng(0)).scores(net)
    np.testing.assert_allclose(
        l1[graph.producer_units["0"]], net[0].weight.detach().abs().sum((1, 2)).numpy(), rtol=1e-6
    )
    a = CRITERIA.get("random")(graph, np.random.default_rng(1)).scores(net)
    b = CRITERIA.get("random")(graph, np.random.default_rng(1)).scores(net)
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
            with prunable.scoring():  # a training step that also accumulates scores
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


def test_prune_on_a_network_with_nothing_prunable_says_why():
    net = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Flatten())  # its filters reach the output
    prunable = TaylorPrunableNetwork(net, torch.zeros(1, 2, 8))
    with pytest.raises(ValueError, match="model has nothing to prune: its only filters are the network's outputs"):
        prunable.prune()


class RankInGroup(Criterion):
    """Within every group the same spread of scores, 1/n .. n/n: equally important layers of any width."""

    def scores(self, model):
        out = np.zeros(len(self.graph.units))
        groups = {}
        for unit in self.graph.units:
            groups.setdefault(unit.producers, []).append(unit.id)
        for ids in groups.values():
            out[ids] = np.arange(1, len(ids) + 1) / len(ids)
        return out


def test_mean_normalisation_does_not_favour_narrow_layers():
    """The collapse at 90% fewer MACs: under "l2" a global ranking thins the widest layer first (a unit of a
    group of n scores ~1/sqrt(n)); over the mean, equally important layers lose the same share."""
    register_criterion("rank-in-group", RankInGroup)
    try:
        net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 64, 3), nn.ReLU(), nn.Conv2d(64, 4, 1))
        shares = {}
        for normalization in ("mean", "l2"):
            prunable = TaylorPrunableNetwork(
                net, torch.zeros(1, 1, 9, 9), criterion="rank-in-group", normalization=normalization
            )
            chosen = prunable.choose(max_units=18)  # a quarter of the 72 filters
            producers = [prunable.graph.units[uid].producers[0] for uid in chosen]
            shares[normalization] = (producers.count("0") / 8, producers.count("2") / 64)
        narrow, wide = shares["mean"]
        assert abs(narrow - 0.25) <= 1 / 8 and abs(wide - 0.25) <= 1 / 64
        narrow, wide = shares["l2"]
        assert narrow == 0 and wide == 18 / 64
    finally:
        CRITERIA.unregister("rank-in-group")


def test_weight_taylor_scores_match_a_direct_computation_over_every_coupled_parameter():
    net = small_net().eval()
    prunable = TaylorPrunableNetwork(net, torch.zeros(1, 2, 12), criterion="taylor-weight", normalization="none")
    generator = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(5, 2, 12, generator=generator), torch.randint(0, 3, (5,), generator=generator)) for _ in "ab"
    ]
    for x, y in batches:
        prunable.update_score(x, y)
    summed = [torch.zeros_like(p) for p in net.parameters()]
    for x, y in batches:
        for total, g in zip(summed, torch.autograd.grad(F.cross_entropy(net(x), y), list(net.parameters()))):
            total += g
    w_g = {name: (p * g).abs().detach() for (name, p), g in zip(net.named_parameters(), summed)}
    first = sum(w_g[f"0.{part}"].reshape(6, -1).sum(1) for part in ("weight", "bias"))  # the filters
    first = first + sum(w_g[f"1.{part}"] for part in ("weight", "bias"))  # their BatchNorm
    first = first + w_g["3.weight"].sum((0, 2))  # the next convolution's input channels
    second = w_g["3.weight"].reshape(4, -1).sum(1) + w_g["3.bias"] + w_g["6.weight"].reshape(3, 4, 10).sum((0, 2))
    scores = prunable.scores()
    for layer, expected in (("0", first), ("3", second)):
        ids = [u.id for u in prunable.graph.units if u.producers == (layer,)]
        np.testing.assert_allclose(scores[ids], expected.double().numpy(), rtol=1e-5)
    assert all(p.grad is None for p in net.parameters()), "the weights' gradients are left alone"


def test_bn_scale_sums_the_batchnorm_scales_of_a_unit_and_falls_back_to_l1_without_one():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Conv1d(4, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2)
    )
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([0.5, -2.0, 1.0, -0.25]))
    graph = ChannelGraph.build(net, torch.randn(2, 1, 8))
    scores = CRITERIA.get("bn-scale")(graph, np.random.default_rng(0)).scores(net)
    first = [u.id for u in graph.units if u.producers == ("0",)]
    second = [u.id for u in graph.units if u.producers == ("3",)]
    np.testing.assert_allclose(scores[first], [0.5, 2.0, 1.0, 0.25])  # |γ| of each filter's BatchNorm channel
    np.testing.assert_allclose(scores[second], net[3].weight.detach().abs().flatten(1).sum(1).double().numpy())
