"""analyze_compression: groups, learnables and the maximum possible reduction."""

from __future__ import annotations

import copy

import torch

from prune_core import ChannelGraph, analyze_compression, remove_units
from tests.support.architectures import ReferenceCNN1d, TinyResNet


def test_reference_network_report(capsys):
    model = ReferenceCNN1d(width=16)
    report = analyze_compression(model, torch.zeros(2, 1, 40))
    printed = capsys.readouterr().out
    assert "maximum possible learnables reduction" in printed and "conv1" in printed
    groups = report.groups.set_index("layers")
    assert groups.loc["conv1", "channels"] == 16 and groups.loc["conv2", "channels"] == 32
    # conv1 filter: 1*5 weights + bias, BN weight+bias, conv2 input: 32*5
    assert groups.loc["conv1", "learnables_per_channel"] == 6 + 2 + 32 * 5
    assert report.total_learnables == sum(p.numel() for p in model.parameters())
    layers = report.layers.set_index("layer")
    assert layers.loc["fc", "reason"] == "reaches the network output"  # the classifier; a hidden one is pruned


def test_max_reduction_is_what_surgery_achieves():
    model = TinyResNet()
    example = torch.zeros(1, 3, 8, 8)
    report = analyze_compression(model, example, verbose=False)
    pruned = copy.deepcopy(model)
    graph = ChannelGraph.build(pruned, example)
    remove_units(pruned, graph, graph.max_removal())
    left = sum(p.numel() for p in pruned.parameters())
    assert report.total_learnables - left == report.max_removable_learnables
    assert all(m.out_channels == 1 for m in pruned.modules() if isinstance(m, torch.nn.Conv2d))
    assert 0.9 < report.max_reduction < 1.0


def test_group_removable_learnables_keep_one_channel():
    report = analyze_compression(ReferenceCNN1d(width=16), torch.zeros(2, 1, 40), verbose=False)
    row = report.groups.set_index("layers").loc["conv1"]
    assert row["removable_learnables"] == 15 * row["learnables_per_channel"]


def test_layer_names_limit_the_report():
    report = analyze_compression(ReferenceCNN1d(), torch.zeros(2, 1, 40), layer_names="bn2", verbose=False)
    prunable = report.groups[report.groups["prunable"]]
    assert prunable["layers"].tolist() == ["conv2"]
