"""The three extension points, used from outside the package: a criterion, an allocation and an op rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import prune_core as pc
from prune_core import (
    PruningOptions,
    TrainingOptions,
    analyze_compression,
    channelwise,
    compress_network,
    register_allocation,
    register_criterion,
    register_module_rule,
)
from prune_core.channels import ChannelGraph, Family, load_pruned, remove_units, save_pruned, unregister_module_rule
from tests.support.architectures import wave_cnn, wave_task


def fine_tuning(**kw) -> TrainingOptions:
    return TrainingOptions(**{"solver": "adam", "max_epochs": 1, "mini_batch_size": 32, "seed": 0, **kw})


class LargestFirst(pc.Criterion):
    """The opposite of L1: the filters with the *largest* summed absolute weights go first."""

    calls = 0

    def scores(self, model):
        LargestFirst.calls += 1
        return -self.graph_scores(model, lambda filters: filters.abs().flatten(1).sum(1))


def test_a_criterion_registered_from_outside_drives_compress_network(registered):
    x, y = wave_task()
    net = wave_cnn()
    norms = net[0].weight.detach().abs().flatten(1).sum(1)
    LargestFirst.calls = 0
    frozen = fine_tuning(solver="sgdm", initial_learn_rate=1e-12, momentum=0.0, l2_regularization=0.0)
    pruned, info = compress_network(
        net,
        x,
        y,
        "crossentropy",
        frozen,
        goal=0.1,
        increment=0.1,
        criterion="largest-first",
        verbosity="off",
        layer_names=["0"],
    )
    assert LargestFirst.calls >= 1 and info.seconds["scoring"] == 0.0, "no gradients needed: no scoring passes"
    kept = pruned[0].out_channels
    assert kept < 8
    # the filters left are the smallest ones: the largest went first
    left = sorted(pruned[0].weight.detach().abs().flatten(1).sum(1).tolist())
    np.testing.assert_allclose(left, sorted(norms.tolist())[:kept], rtol=1e-6)
    with pytest.raises(
        ValueError, match="criterion 'largest' is not supported; use one of .*'largest-first'.*register_criterion"
    ):
        PruningOptions(criterion="largest")
    with pytest.raises(TypeError, match="must be a subclass of prune_core.Criterion"):
        register_criterion("not-a-class", lambda graph, rng: None)


def only_the_first_layer(graph, scores, *, learnables, max_units, per_learnable, floors):
    """An allocation that takes the lowest-scoring filters of layer "0" only."""
    first = np.where([unit.producers == ("0",) for unit in graph.units], scores, np.inf)
    return pc.ALLOCATIONS.get("global")(
        graph, first, learnables=learnables, max_units=max_units, per_learnable=per_learnable, floors=floors
    )


@pytest.fixture
def registered():
    """The criterion "largest-first" and the allocation "first-layer", for one test."""
    register_criterion("largest-first", LargestFirst)
    register_allocation("first-layer", only_the_first_layer)
    yield
    pc.CRITERIA.unregister("largest-first")
    pc.ALLOCATIONS.unregister("first-layer")


def test_an_allocation_registered_from_outside_drives_compress_network(registered):
    x, y = wave_task()
    pruned, info = compress_network(
        wave_cnn(),
        x,
        y,
        "crossentropy",
        fine_tuning(),
        goal=0.9,
        increment=0.1,
        allocation="first-layer",
        verbosity="off",
    )
    assert pruned[0].out_channels == 1 and pruned[3].out_channels == 16, "only layer 0 lost filters"
    assert info.stop_reason == "Maximum compression reached."
    with pytest.raises(ValueError, match="allocation 'first' is not supported; use one of"):
        compress_network(wave_cnn(), x, y, "crossentropy", fine_tuning(), allocation="first")


class ChannelScale(nn.Module):
    """A learned scale per channel, written with einsum: the analysis does not understand einsum."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, channels))

    def forward(self, x):
        return torch.einsum("nct,c->nct", x, self.scale)


def scaled_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(1, 8, 3, padding=1),
        ChannelScale(8),
        nn.ReLU(),
        nn.Conv1d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


@pytest.fixture
def scale_rule():
    """ChannelScale's rule, registered for one test."""
    register_module_rule(ChannelScale, channelwise("scale", count="channels"))
    yield
    unregister_module_rule(ChannelScale)


def test_without_a_rule_the_module_blocks_its_filters():
    blocked = analyze_compression(scaled_net(), wave_task()[0][:2]).layers.set_index("layer")
    assert blocked.loc["0", "prunable_filters"] == 0 and "einsum" in blocked.loc["0", "reason"]


def test_a_module_that_blocks_today_prunes_with_a_user_rule(scale_rule):
    x, y = wave_task()
    report = analyze_compression(scaled_net(), x[:2]).layers.set_index("layer")
    assert report.loc["0", "prunable_filters"] == 8
    net = scaled_net()
    pruned, info = compress_network(
        net, x, y, "crossentropy", fine_tuning(), goal=0.3, increment=0.1, verbosity="off"
    )  # every surgery is checked against the zeroed original
    assert pruned[0].out_channels < 8
    assert pruned[1].scale.shape == (pruned[0].out_channels,) and pruned[1].channels == pruned[0].out_channels
    assert net[1].scale.shape == (8,), "the caller's model is left as it was"
    with pytest.raises(ValueError, match="rule .elementwize. is not a family; use one of"):
        register_module_rule(ChannelScale, "elementwize", replace=True)
    with pytest.raises(ValueError, match="ChannelScale has a rule already"):
        register_module_rule(ChannelScale, "elementwise")


def test_a_checkpoint_records_the_channel_count_a_registered_family_names(scale_rule, tmp_path):
    x = wave_task()[0][:4]
    net = scaled_net().eval()
    graph = ChannelGraph.build(net, x)
    remove_units(net, graph, [u.id for u in graph.units if u.producers == ("0",)][:3])
    assert net[1].channels == 5
    save_pruned(net, tmp_path / "pruned.pt")
    loaded = load_pruned(tmp_path / "pruned.pt", scaled_net).eval()
    assert loaded[1].channels == 5, "the family's attribute came back from the checkpoint"
    torch.testing.assert_close(loaded(x), net(x))


class GroupedScale(nn.Module):
    """A scale per channel that views its input as (batch, width, -1) with a width it holds: after a surgery
    ``width`` must follow, which no label rule can see (it is no size of a tensor)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.width = channels
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, channels))

    def forward(self, x):
        return torch.einsum("nct,c->nct", x.reshape(x.shape[0], self.width, -1), self.scale)


def _width_from_scale(name: str, module: nn.Module, graph) -> None:
    module.width = module.scale.shape[0]


def test_a_registered_family_teaches_the_surgery_what_follows_a_removal(tmp_path):
    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv1d(1, 6, 3, padding=1), GroupedScale(6), nn.ReLU(), nn.Conv1d(6, 2, 3))

    x = wave_task()[0][:4]
    scale_only = channelwise("scale").rule
    register_module_rule(GroupedScale, scale_only)
    try:
        blind = net()
        graph = ChannelGraph.build(blind, x)
        with pytest.raises(pc.SurgeryMismatch):  # the view still asks for 6 channels: the check catches it
            remove_units(blind, graph, [0, 1])
        assert blind[1].width == 6 and blind[1].scale.shape == (6,), "put back as it was"
        register_module_rule(
            GroupedScale, Family("grouped-scale", scale_only, ("width",), after_surgery=_width_from_scale), replace=True
        )
        taught = net().eval()
        expected = taught(x)
        remove_units(taught, ChannelGraph.build(taught, x), [0, 1])
        assert taught[1].width == 4 and taught[0].out_channels == 4
        save_pruned(taught, tmp_path / "pruned.pt")
        assert load_pruned(tmp_path / "pruned.pt", net)[1].width == 4
        assert taught(x).shape == expected.shape
    finally:
        unregister_module_rule(GroupedScale)
