"""Model builders used by the jobs.

>>> import torch
>>> reference_cnn1d()(torch.zeros(2, 1, 40)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from torch import nn


def reference_cnn1d(in_channels: int = 1, classes: int = 10, width: int = 32, kernel_size: int = 5) -> nn.Sequential:
    """The reference example's kind of network: two Conv1d+BatchNorm+ReLU blocks, global
    average pooling and a fully connected classifier."""
    pad = kernel_size // 2
    return nn.Sequential(
        nn.Conv1d(in_channels, width, kernel_size, padding=pad), nn.BatchNorm1d(width), nn.ReLU(),
        nn.Conv1d(width, 2 * width, kernel_size, padding=pad), nn.BatchNorm1d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(2 * width, classes),
    )
