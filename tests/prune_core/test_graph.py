"""Channel groups: what is coupled with what, and what is never pruned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prune_core import ChannelGraph, TrainingOptions, compress_network, remove_units
from tests.support.architectures import ARCHITECTURES
from tests.support.zoos import torchvision_model


def build(name):
    model, example = ARCHITECTURES[name]()
    return model, ChannelGraph.build(model, example)


def producers(graph):
    return {u.producers for u in graph.removable_units()}


def test_conv_bn_units_hold_the_filter_its_norm_and_the_consumer_input():
    _, g = build("reference_cnn1d")
    unit = g.removable_units()[0]
    assert unit.producers == ("conv1",)
    assert set(unit.counts) == {
        ("conv1.weight", 0),
        ("conv1.bias", 0),
        ("bn1.weight", 0),
        ("bn1.bias", 0),
        ("bn1.running_mean", 0),
        ("bn1.running_var", 0),
        ("bn1.num_features", 0),
        ("conv2.weight", 1),
    }
    assert not any("fc" in p for u in g.units for p in u.producers if u.removable)


def test_flatten_maps_each_channel_to_its_block_of_linear_features():
    _, g = build("flatten_groupnorm")
    conv2_units = [u for u in g.removable_units() if u.producers == ("conv2",)]
    assert len(conv2_units) == 6
    for k, unit in enumerate(conv2_units):
        idx = g.removal_plan([unit.id])[("fc.weight", 1)]
        assert idx.tolist() == list(range(4 * k, 4 * k + 4))


def test_groupnorm_removes_whole_norm_groups():
    _, g = build("flatten_groupnorm")
    conv1_units = [u for u in g.removable_units() if u.producers == ("conv1",)]
    assert len(conv1_units) == 4 and all(u.counts[("conv1.weight", 0)] == 2 for u in conv1_units)


def test_residual_add_couples_every_branch_including_downsample():
    _, g = build("residual")
    stage2 = [u for u in g.removable_units() if "stage2.0.downsample.0" in u.producers]
    assert len(stage2) == 16
    assert stage2[0].producers == ("stage2.0.body.1", "stage2.0.downsample.0", "stage2.1.body.1")
    assert ("head.weight", 1) in stage2[0].counts and ("stage2.1.body.0.0.weight", 1) in stage2[0].counts


def test_concat_maps_offsets_into_the_consumer():
    _, g = build("concat")
    b_units = [u for u in g.removable_units() if u.producers == ("b",)]
    assert [g.removal_plan([u.id])[("c.weight", 1)].tolist() for u in b_units] == [[4 + k] for k in range(6)]
    assert [g.removal_plan([u.id])[("d.weight", 1)].tolist() for u in b_units] == [[4 + k] for k in range(6)]
    c_units = [u for u in g.removable_units() if u.producers == ("c",)]
    assert [g.removal_plan([u.id])[("d.weight", 1)].tolist() for u in c_units] == [[10 + k] for k in range(5)]


def test_depthwise_follows_its_input_and_grouped_conv_removes_whole_groups():
    _, g = build("depthwise_grouped")
    expand = [u for u in g.removable_units() if u.producers == ("expand",)]
    # grouped conv (16 -> 12, groups=4): input group k holds dw2 outputs 4k..4k+3 = expand channels 2k, 2k+1
    assert len(expand) == 4
    assert all(u.counts[("dw2.weight", 0)] == 4 and u.counts[("grouped.weight", 0)] == 3 for u in expand)
    assert g.grouped_convs == {"dw": 1, "dw2": 2, "grouped": 3}


def test_squeeze_excitation_ties_the_excitation_filters_to_the_scaled_channels():
    _, g = build("squeeze_excitation")
    assert ("block.1.fc2", "conv.0") in producers(g)
    assert ("block.1.fc1",) in producers(g)


def test_nested_modules_and_functional_ops_use_dotted_names():
    _, g = build("nested_functional")
    coupled = {p for u in g.removable_units() for p in u.producers}
    assert {"stem", "levels.0.0.inner.conv", "levels.1.extra.gate", "reduce"} <= coupled
    reduce_unit = next(u for u in g.removable_units() if u.producers == ("reduce",))
    assert reduce_unit.counts[("fc.weight", 1)] == 16


def test_outputs_are_never_pruned_and_several_inputs_outputs_work():
    _, g = build("multi_input_output")
    blocked = [u for u in g.units if not u.removable]
    assert any("reaches the network output" in r for u in blocked for r in u.reasons)
    assert all("head_b" not in u.producers for u in g.removable_units())
    assert any("mix" in u.producers for u in g.removable_units())
    # the 1-D branch is summed over channels (s.sum(1)): its channels feed an unsupported reduction
    assert all("signal.0" not in u.producers for u in g.removable_units())


def test_channel_shuffle_ties_positions_so_the_split_stays_valid():
    _, g = build("shuffle")
    assert g.removable_units()
    assert all(u.counts.get(("stem.weight", 0), 0) % 2 == 0 for u in g.removable_units() if "stem" in u.producers)


def test_unsupported_operation_is_left_unpruned_with_the_reason():
    class Sorts(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = torch.sort(self.a(x), dim=1).values
            return self.b(y).mean((2, 3))

    g = ChannelGraph.build(Sorts(), torch.randn(1, 3, 4, 4))
    a_units = [u for u in g.units if u.producers == ("a",)]
    assert a_units and not any(u.removable for u in a_units)
    assert any("unsupported operation `torch.sort`" in r for r in a_units[0].reasons)


def test_constant_view_sizes_block_the_channels_they_would_break():
    class HardCoded(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 1), nn.Linear(4 * 9, 2)

        def forward(self, x):
            return self.fc(F.relu(self.conv(x)).view(-1, 36))

    g = ChannelGraph.build(HardCoded(), torch.randn(2, 3, 3, 3))
    assert not g.removable_units()


def test_layer_names_restrict_to_the_named_layers_and_what_they_affect():
    model, example = ARCHITECTURES["residual"]()
    g = ChannelGraph.build(model, example, layer_names=["stage1.0.body.0.1"])  # a BatchNorm
    assert {u.producers for u in g.removable_units()} == {("stage1.0.body.0.0",)}
    g = ChannelGraph.build(model, example, layer_names=["stage2/0/downsample"])
    assert {u.producers for u in g.removable_units()} == {
        ("stage2.0.body.1", "stage2.0.downsample.0", "stage2.1.body.1")
    }


def test_analysis_leaves_the_model_untouched():
    model, example = ARCHITECTURES["residual"]()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    ChannelGraph.build(model, example)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def test_functional_norms_follow_their_channels_and_owning_modules():
    model, g = build("functional_norms")
    assert producers(g) == {("conv1",), ("conv2",), ("conv3",)}
    sites = set(g.sites)
    assert {
        ("bn.running_mean", 0),
        ("bn.num_features", 0),
        ("gn.weight", 0),
        ("gn.num_channels", 0),
        ("inorm.weight", 0),
        ("inorm.num_features", 0),
    } <= sites
    assert g.norm_groups == {"gn": 2}  # F.group_norm: whole groups of 8 / 4 channels


def test_a_shape_branch_is_traced_on_the_example_input():
    model, example = ARCHITECTURES["shape_branch"]()
    try:
        torch.fx.symbolic_trace(model)
        raise AssertionError("symbolic tracing was expected to refuse the shape branch")
    except torch.fx.proxy.TraceError:
        pass
    g = ChannelGraph.build(model, example)
    assert producers(g) == {("down.0",), ("skip",), ("up",)}


class ChannelSlice(nn.Module):
    """DPN-style: a constant slice along channels."""

    def __init__(self):
        super().__init__()
        self.conv, self.head, self.other = nn.Conv2d(3, 8, 1), nn.Conv2d(4, 2, 1), nn.Conv2d(3, 6, 1)

    def forward(self, x):
        return self.head(self.conv(x)[:, :4]) + self.other(x)[:, 2:4]


def test_a_constant_slice_along_channels_blocks_them():
    g = ChannelGraph.build(ChannelSlice(), torch.randn(1, 3, 4, 4))
    assert not g.removable_units()
    assert any("unsupported operation `_operator.getitem`" in r for u in g.units for r in u.reasons)


def canonical(g: ChannelGraph) -> tuple:
    """The graph up to unit numbering: every site's entries relabelled by first appearance, and each unit."""
    order: dict[int, int] = {}
    entries = {}
    for key in sorted(g.site_units):
        entries[key] = [-1 if uid < 0 else order.setdefault(int(uid), len(order)) for uid in g.site_units[key]]
    units = {
        order[u.id]: (sorted(u.counts.items()), u.producers, u.members, u.reasons) for u in g.units if u.id in order
    }
    return entries, units, g.param_shapes


@pytest.mark.parametrize(
    "name",
    [
        *ARCHITECTURES,
        *(pytest.param(n, marks=pytest.mark.slow) for n in ("resnet18", "densenet121", "shufflenet_v2_x0_5")),
    ],
)
def test_the_graph_updated_after_a_surgery_equals_a_fresh_analysis(name):
    model, example = ARCHITECTURES[name]() if name in ARCHITECTURES else torchvision_model(name)
    model.eval()
    graph = ChannelGraph.build(model, example)
    rng, updates = np.random.default_rng(0), 0
    for _ in range(3):
        chosen = graph.greedy_removal([u.id for u in graph.removable_units() if rng.random() < 0.3])
        remove_units(model, graph, chosen)
        updated = graph.after_removal(chosen, model)
        graph = ChannelGraph.build(model, example)
        if updated is not None:  # None: a layer is down to its last unit, and a fresh analysis is needed
            assert canonical(updated) == canonical(graph)
            updates += 1
    assert updates or name in ARCHITECTURES  # the tiny networks soon have layers down to their last unit


class StandardisedConv(nn.Conv2d):
    """A convolution whose weight is standardised per filter in forward (as NF-ResNets do)."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias)


def test_a_weight_computed_in_forward_keeps_its_channels_and_says_why():
    net = nn.Sequential(StandardisedConv(3, 8, 3), nn.ReLU(), StandardisedConv(8, 4, 3))
    graph = ChannelGraph.build(net, torch.randn(2, 3, 12, 12))
    assert graph.removable_units() == []
    said = [what for what in graph.unsupported if what.startswith("torch.conv2d")]
    assert said and "with a weight computed in forward, not a parameter" in said[0], graph.unsupported


def test_padding_modules_and_same_padding_convolutions_are_pruned_and_checked():
    model, graph = build("same_padding")
    assert graph.unsupported == ()
    assert producers(graph) >= {("stem.0",), ("reflect.1",), ("pointwise",)}
    chosen = [u.id for u in graph.removable_units()][::3]
    remove_units(model, graph, chosen)  # the surgery check passes
    assert model.stem[0].out_channels == model.stem[0].weight.shape[0] < 8
    assert model.depthwise.groups == model.depthwise.out_channels == model.reflect[1].out_channels < 12


class CoordinatesConv2d(nn.Conv2d):
    """A convolution that appends a coordinate channel to its input first (CoordConv)."""

    def forward(self, x):
        row = torch.linspace(-1, 1, x.shape[2]).view(1, 1, -1, 1).expand(x.shape[0], 1, x.shape[2], x.shape[3])
        return F.conv2d(torch.cat([row, x], 1), self.weight, self.bias, padding=1)


def test_a_convolution_that_changes_its_input_first_is_pruned_but_not_scored_by_taylor():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 6, 3), nn.ReLU(), CoordinatesConv2d(7, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    x, y = torch.randn(16, 2, 8, 8), torch.randint(0, 2, (16,))
    model(x)
    options = TrainingOptions(max_epochs=1, mini_batch_size=8)
    pruned, _ = compress_network(model, x, y, "crossentropy", options, goal=0.2, criterion="l1", verbosity="off")
    assert pruned[0].out_channels == pruned[2].in_channels - 1 < 6  # a surgery the check accepted
    with pytest.raises(ValueError, match=r"input of `2` has 6 channels where its weight takes 7.*leaf_modules=\['2'\]"):
        compress_network(model, x, y, "crossentropy", options, goal=0.2, verbosity="off")


class ByTransposedWeight(nn.Linear):
    """A linear layer that multiplies by its transposed weight and adds its bias after (Falcon's ``FalconLinear``)."""

    def forward(self, x):
        return x @ self.weight.T + self.bias


class ByFunction(nn.Linear):
    """A linear layer that scales its input, then calls ``F.linear`` with its own weight and bias."""

    def forward(self, x):
        return F.linear(x * 0.5, self.weight, self.bias)


class TransposedHidden(nn.Module):
    """An MLP whose hidden activation is transposed and back (``.T`` and ``.t()``) on its way through, beside a
    transposed weight that is added, not multiplied: not a linear layer, and not understood."""

    def __init__(self):
        super().__init__()
        self.up, self.mid, self.down = ByTransposedWeight(4, 8), ByFunction(8, 6), nn.Linear(6, 2)
        self.table = nn.Parameter(torch.randn(3, 3))

    def forward(self, x):  # x: 3 examples
        hidden = self.mid(self.up(x).relu().T.t())
        return self.down(hidden) + (x[:, :3] + self.table.T).sum()


def test_linear_layers_called_by_product_or_by_function_and_transposes_are_pruned_and_checked():
    torch.manual_seed(0)
    model = TransposedHidden().eval()
    graph = ChannelGraph.build(model, torch.randn(3, 4))
    assert {("up",), ("mid",)} <= producers(graph)
    assert graph.unsupported == ("_operator.add",), "the table's transpose, added, is not understood"
    chosen = [u.id for u in graph.removable_units() if u.producers in {("up",), ("mid",)}][::2]
    remove_units(model, graph, chosen)  # the surgery check passes
    assert model.up.out_features == model.up.weight.shape[0] == model.mid.in_features < 8
    assert model.mid.out_features == model.down.in_features < 6
