"""``round_to``: every layer pruning shrinks keeps a multiple of N channels, residual stages included."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import prune_core as pc
from prune_core import TaylorPrunableNetwork, TrainingOptions, compress_network


def widths(model: nn.Module) -> dict[str, int]:
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 20, 3, padding=1),
        nn.BatchNorm2d(20),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 36, 3, padding=1),
        nn.BatchNorm2d(36),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(36, 3),
    )


@pytest.mark.parametrize("allocation", ["global", "uniform"])
def test_every_shrunk_convolution_of_a_residual_network_keeps_a_multiple(allocation):
    model = torchvision.models.resnet18(num_classes=10).eval()
    before = widths(model)
    prunable = TaylorPrunableNetwork(model, torch.zeros(1, 3, 64, 64), criterion="random", round_to=8)
    for _ in range(3):
        prunable.remove(prunable.choose(learnables=prunable.graph.total_learnables // 10))
    after = widths(prunable.model)
    shrunk = {name: width for name, width in after.items() if width != before[name]}
    assert len(shrunk) >= 10, "most convolutions lost channels"
    assert all(width % 8 == 0 and width >= 8 for width in shrunk.values()), shrunk
    assert prunable.model(torch.zeros(2, 3, 64, 64)).shape == (2, 10)


def test_compress_network_rounds_every_step_and_still_reaches_its_macs_goal():
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (96,), generator=generator)
    x = torch.randn(96, 1, 12, 12, generator=generator) + y[:, None, None, None]
    options = TrainingOptions("adam", max_epochs=1, mini_batch_size=32, seed=0)
    pruned, info = compress_network(
        small_cnn(),
        x,
        y,
        "crossentropy",
        options,
        goal=0.6,
        increment=0.1,
        budget="macs",
        round_to=4,
        verbosity="off",
    )
    assert info.stop_reason == pc.StopReason.MACS_GOAL
    assert all(width % 4 == 0 for width in widths(pruned).values()), widths(pruned)
    assert len(info.pruning_history) >= 3, "several steps, every one rounded"
    with pytest.raises(ValueError, match="round_to must be a positive integer, got 0"):
        pc.PruningOptions(round_to=0)
    with pytest.raises(ValueError, match="round_to must be a positive integer, got 2.5"):
        TaylorPrunableNetwork(small_cnn(), torch.zeros(1, 1, 12, 12), round_to=2.5)
