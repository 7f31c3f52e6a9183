"""Hidden fully connected layers (VGG's and AlexNet's classifiers, MLP heads) lose hidden units like
convolutions lose filters; the network's output layer never does."""

from __future__ import annotations

import torch
from torch import nn

from prune_core import ChannelGraph, TrainingOptions, analyze_compression, compress_network
from tests.support.equivalence import check_surgery


def vgg_like() -> nn.Sequential:
    """Convolutions, a flatten, then a classifier with two hidden fully connected layers."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 24),
        nn.ReLU(),
        nn.Dropout(),
        nn.Linear(24, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, 3),
    )


def test_hidden_units_are_units_and_the_output_layer_is_kept():
    graph = ChannelGraph.build(vgg_like(), torch.zeros(2, 1, 8, 8))
    removable = {unit.producers for unit in graph.removable_units()}
    assert removable == {("0",), ("4",), ("7",)}
    report = analyze_compression(vgg_like(), torch.zeros(2, 1, 8, 8), verbose=False)
    layers = report.layers.set_index("layer")
    assert layers.loc["4", "prunable_filters"] == 24 and layers.loc["7", "prunable_filters"] == 16
    assert layers.loc["10", "prunable_filters"] == 0 and layers.loc["10", "reason"] == "reaches the network output"


def test_removing_hidden_units_equals_zeroing_them_at_their_consumers():
    result = check_surgery(vgg_like(), torch.randn(4, 1, 8, 8), fraction=0.4)
    pruned = result["pruned"]
    assert result["effect"] > 1e-6 and result["max_error"] <= 1e-5 * max(1.0, result["scale"])
    assert result["params"] == result["predicted_params"]
    assert pruned[4].out_features == pruned[7].in_features < 24
    assert pruned[7].out_features == pruned[8].num_features == pruned[10].in_features < 16
    assert pruned[10].out_features == 3


def test_compress_network_prunes_a_classifier_made_of_fully_connected_layers_only():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
    x, y = torch.randn(256, 10), torch.randint(0, 3, (256,))
    options = TrainingOptions("adam", max_epochs=1, mini_batch_size=64, seed=0)
    pruned, info = compress_network(mlp, x, y, "crossentropy", options, goal=0.5, increment=0.25, verbosity="off")
    assert info.pruned_layers == ["0", "2", "4"]  # both hidden layers' units and the inputs they feed
    assert pruned[0].out_features < 32 and pruned[2].out_features < 32 and pruned[4].out_features == 3
    assert info.reduction >= 0.5
    assert mlp[0].out_features == 32, "the caller's network is left as it was"
